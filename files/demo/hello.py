#!/usr/bin/python3
"""outpost's demo web app: the smallest HTTP service that shows a deploy happening.

    hello.py --port 8000     serve: `/` answers GREETING, the image (version) and the port;
                             `/ready` answers 200 once the server listens (500 when broken);
                             `POST /posts` keeps a post, idempotently by its Idempotency-Key
                             (see Posts); `GET /posts` lists what is kept
    hello.py --once          print the same line once and exit 0 (the scheduled job)

A "broken image" for tests: BROKEN=1 in the environment, a file /app/BROKEN (or BROKEN_FILE)
in the image, or an image tag containing "broken" makes `/ready` answer 500.
Python 3 standard library only; stops gracefully on SIGTERM (it runs as PID 1 in a container).
"""

import argparse
import http.server
import json
import os
import re
import signal
import socket
import sqlite3
import sys
import threading
import time

STARTED = time.time()
STOPPING = threading.Event()
# Under INFLIGHT_LOCK: the responses being written right now, whether a response may still start
# (CLOSED[0] False), and the open client connections (idle keep-alive ones included).
INFLIGHT = [0]
CLOSED = [False]
CONNECTIONS: set[socket.socket] = set()
INFLIGHT_LOCK = threading.Lock()
DRAIN_SECONDS = 20


def image() -> str:
    return os.environ.get("OUTPOST_IMAGE", "unknown")


def broken() -> bool:
    return (os.environ.get("BROKEN", "") not in ("", "0")
            or os.path.exists(os.environ.get("BROKEN_FILE", "/app/BROKEN"))
            or "broken" in image().rsplit(":", 1)[-1])


class Posts:
    """Posts kept by their Idempotency-Key, so that a client or proxy that sends one twice gets the
    first answer again instead of a second post: the check and the insert run in one SQLite write
    transaction (BEGIN IMMEDIATE), so replicas sharing the database (a StateDirectory, $POSTS_DB)
    agree on it. Every arrival is also logged in `deliveries`, which shows whether anyone resent a
    post. `posts` has no unique constraint on purpose: were the check ever wrong, a key would show
    up twice there, and the load test counts exactly that as a duplicate.
    Without a database path the posts live in this process only (an in-memory database)."""

    KEY_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
    MAX = 4096

    def __init__(self, path: str | None):
        self.path = path or "file:outpost-hello-posts?mode=memory&cache=shared"
        self.uri = path is None
        self.keep = self.connect()  # an in-memory database lives as long as one connection to it
        with self.keep:
            if not self.uri:
                self.keep.execute("PRAGMA journal_mode=WAL")
            self.keep.execute("CREATE TABLE IF NOT EXISTS posts (key TEXT NOT NULL, body TEXT NOT NULL, "
                              "port INTEGER, at REAL NOT NULL)")
            self.keep.execute("CREATE INDEX IF NOT EXISTS posts_key ON posts (key)")
            self.keep.execute("CREATE TABLE IF NOT EXISTS deliveries (key TEXT NOT NULL, port INTEGER, "
                              "at REAL NOT NULL)")

    def connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, uri=self.uri, isolation_level=None,
                               check_same_thread=False)

    def put(self, key: str, body: str, port: int) -> tuple[int, dict]:
        """(201, answer) for a new key, (200, the first answer) for one already kept."""
        db = self.connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            now = time.time()
            db.execute("INSERT INTO deliveries VALUES (?, ?, ?)", (key, port, now))
            row = db.execute("SELECT port, at FROM posts WHERE key = ? ORDER BY rowid LIMIT 1", (key,)).fetchone()
            if row is None:
                db.execute("INSERT INTO posts VALUES (?, ?, ?, ?)", (key, body, port, now))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()
        if row is None:
            return 201, {"key": key, "port": port, "at": now, "replayed": False}
        return 200, {"key": key, "port": row[0], "at": row[1], "replayed": True}

    def listing(self) -> dict:
        db = self.connect()
        try:
            posts = dict(db.execute("SELECT key, COUNT(*) FROM posts GROUP BY key"))
            deliveries = dict(db.execute("SELECT key, COUNT(*) FROM deliveries GROUP BY key"))
        finally:
            db.close()
        return {"posts": posts, "deliveries": deliveries}


POSTS: Posts | None = None


def posts_path() -> str | None:
    """$POSTS_DB, else posts.db in the unit's first StateDirectory, else None (in memory)."""
    state = (os.environ.get("STATE_DIRECTORY") or "").split(":")[0]
    return os.environ.get("POSTS_DB") or (os.path.join(state, "posts.db") if state else None)


def greeting(port: int | None) -> str:
    where = f" on port {port}" if port else ""
    return f"{os.environ.get('GREETING', 'hello')} from {image()}{where}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "outpost-hello"

    def setup(self) -> None:
        super().setup()
        with INFLIGHT_LOCK:
            CONNECTIONS.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with INFLIGHT_LOCK:
                CONNECTIONS.discard(self.connection)

    def do_GET(self) -> None:
        self.handle_one(self.route)

    def do_POST(self) -> None:
        self.handle_one(self.route_post)

    def handle_one(self, route) -> None:
        with INFLIGHT_LOCK:
            if CLOSED[0]:
                # The process is exiting: write nothing, so that the client (the proxy) sees the
                # connection close before any byte of a response and retries the request elsewhere.
                self.close_connection = True
                return
            INFLIGHT[0] += 1
        try:
            if STOPPING.is_set():
                self.close_connection = True  # answer this one, then let the proxy reconnect elsewhere
            route()
        finally:
            with INFLIGHT_LOCK:
                INFLIGHT[0] -= 1

    def route_post(self) -> None:
        path = self.path.split("?", 1)[0]
        port = self.server.server_address[1]
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if not 0 < length <= Posts.MAX:
            self.close_connection = True      # the body is left unread: this connection is done
            status = 411 if length < 0 else 413 if length > Posts.MAX else 400
            self.answer(status, {"error": f"a post is 1 to {Posts.MAX} bytes with a Content-Length"})
            return
        body = self.rfile.read(length).decode("utf-8", errors="replace")
        key = self.headers.get("Idempotency-Key", "")
        if path != "/posts":
            self.answer(404, {"error": f"no page {path}"})
        elif not Posts.KEY_RE.fullmatch(key):
            self.answer(400, {"error": "a post needs an Idempotency-Key header of 1 to 128 of A-Z a-z 0-9 . _ : -"})
        else:
            self.answer(*POSTS.put(key, body, port))

    def route(self) -> None:
        path = self.path.split("?", 1)[0]
        port = self.server.server_address[1]
        if path == "/posts":
            self.answer(200, POSTS.listing())
        elif path == "/ready":
            status = 500 if broken() else 200
            self.answer(status, {"ready": status == 200, "image": image(), "port": port})
        elif path == "/":
            self.answer(200, {"message": greeting(port), "image": image(), "port": port,
                              "instance": os.environ.get("OUTPOST_INSTANCE", ""),
                              "uptime": round(time.time() - STARTED, 1)})
        else:
            self.answer(404, {"error": f"no page {path}"})

    def answer(self, status: int, doc: dict) -> None:
        body = (json.dumps(doc, sort_keys=True) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if STOPPING.is_set():
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args) -> None:
        sys.stderr.write(f"{self.address_string()} {fmt % args}\n")


def close_when_idle(deadline: float) -> int:
    """Wait (until DEADLINE) for no response to be half-written, then, in one step under the lock,
    forbid new responses and shut every open connection; return the responses still in flight.

    A proxy keeps idle keep-alive connections to this server and may send a request on one at
    any moment until the process is gone. Checking "nothing in flight" and then exiting is a
    race: a request read just after the check gets its headers written and its body cut when the
    interpreter stops the (daemon) handler thread, and a proxy cannot retry a response it has
    started to pass on. After this returns, a request either got its whole response or none."""
    while True:
        with INFLIGHT_LOCK:
            if not INFLIGHT[0] or time.monotonic() >= deadline:
                CLOSED[0] = True
                for conn in CONNECTIONS:
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return INFLIGHT[0]
        time.sleep(0.05)


def serve(port: int) -> int:
    global POSTS
    POSTS = Posts(posts_path())
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = True

    def stop(signum, frame):  # stop accepting, finish the requests in flight, then exit 0
        STOPPING.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"hello: serving {image()} on port {port}", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    # Handler threads are daemons (idle keep-alive connections must not hold the exit up), so
    # wait here until no response is half-written: exiting mid-response truncates it.
    left = close_when_idle(time.monotonic() + DRAIN_SECONDS)
    print("hello: stopped" + (f" ({left} responses cut after {DRAIN_SECONDS}s)" if left else ""), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--once", action="store_true", help="print the greeting once and exit")
    args = parser.parse_args(argv)
    if args.once:
        print(greeting(None), flush=True)
        return 0
    return serve(args.port)


if __name__ == "__main__":
    sys.exit(main())
