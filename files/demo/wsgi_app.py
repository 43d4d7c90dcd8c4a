#!/usr/bin/python3
"""outpost's demo WSGI app, socket-activated: systemd holds the listening socket, this serves it.

systemd passes the socket as fd 3 (`LISTEN_FDS=1`, `LISTEN_PID` = this process; see
sd_listen_fds(3)); several instances can share one port because each instance's socket unit
binds it with SO_REUSEPORT. Without socket activation it listens on --port (for a local try).

    /health     200 "ok"
    /wsgi/notes POST: keeps the request body as a note, twice: a row in $STATE_DIRECTORY/notes.db
                (SQLite, what litestream replicates) and a file $STATE_DIRECTORY/files/<id>.txt
                (what restic backs up); GET: {"rows": [...], "files": [...]} as stored now
    /wsgi...    which instance answered (OUTPOST_INSTANCE, set from the unit's %i) and how many
                requests this host's instances served (a SQLite file in $STATE_DIRECTORY)

Python 3 standard library only (wsgiref on socketserver); SIGTERM stops it gracefully.
"""

import argparse
import json
import os
import signal
import socket
import socketserver
import sqlite3
import sys
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

SD_LISTEN_FDS_START = 3


def listening_socket(port: int) -> socket.socket:
    """The socket systemd passed us, or one bound to 127.0.0.1:port."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", "0")) >= 1:
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
        return socket.socket(fileno=SD_LISTEN_FDS_START)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    return sock


class Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def __init__(self, sock: socket.socket, app):
        super().__init__(sock.getsockname()[:2], QuietHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        host, port = sock.getsockname()[:2]
        self.server_name, self.server_port = host, port
        self.setup_environ()
        self.set_app(app)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, fmt: str, *args) -> None:
        sys.stderr.write(f"{self.address_string()} {fmt % args}\n")


def counter(state_dir: str | None):
    """Count requests in $STATE_DIRECTORY/requests.db (shared by this host's instances)."""
    if not state_dir:
        return None
    path = os.path.join(state_dir.split(":")[0], "requests.db")
    with sqlite3.connect(path, timeout=10) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS requests (instance TEXT PRIMARY KEY, count INTEGER)")

    def count(instance: str) -> int:
        with sqlite3.connect(path, timeout=10) as db:
            db.execute("INSERT INTO requests VALUES (?, 1) ON CONFLICT(instance) "
                       "DO UPDATE SET count = count + 1", (instance,))
            return db.execute("SELECT SUM(count) FROM requests").fetchone()[0]
    return count


class Notes:
    """The demo's data: notes in $STATE_DIRECTORY/notes.db and as files in $STATE_DIRECTORY/files/."""

    MAX = 4096

    def __init__(self, state_dir: str):
        self.db_path = os.path.join(state_dir, "notes.db")
        self.files = os.path.join(state_dir, "files")
        os.makedirs(self.files, exist_ok=True)
        with sqlite3.connect(self.db_path, timeout=10) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL, "
                       "at REAL NOT NULL)")

    def add(self, text: str) -> dict:
        with sqlite3.connect(self.db_path, timeout=10) as db:
            row = db.execute("INSERT INTO notes (text, at) VALUES (?, ?) RETURNING id, at", (text, time.time())).fetchone()
        temporary = os.path.join(self.files, f".{row[0]}.txt.tmp")
        with open(temporary, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, os.path.join(self.files, f"{row[0]}.txt"))
        return {"id": row[0], "at": row[1]}

    def listing(self) -> dict:
        with sqlite3.connect(self.db_path, timeout=10) as db:
            rows = [{"id": i, "text": t, "at": a} for i, t, a in db.execute("SELECT id, text, at FROM notes ORDER BY id")]
        files = {}
        for name in sorted(os.listdir(self.files)):
            if name.endswith(".txt") and not name.startswith("."):
                with open(os.path.join(self.files, name), encoding="utf-8") as f:
                    files[name] = f.read()
        return {"rows": rows, "files": files}


def notes_answer(notes: "Notes | None", environ) -> tuple[bytes, str]:
    if notes is None:
        return b"no state directory\n", "404 Not Found"
    if environ.get("REQUEST_METHOD") == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if not 0 < length <= Notes.MAX:
            return b"a note is 1 to 4096 bytes\n", "400 Bad Request"
        text = environ["wsgi.input"].read(length).decode("utf-8", errors="replace")
        return (json.dumps(notes.add(text)) + "\n").encode(), "201 Created"
    return (json.dumps(notes.listing(), sort_keys=True) + "\n").encode(), "200 OK"


def make_app(instance: str, count, notes: "Notes | None" = None):
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/health":
            body, status = b"ok\n", "200 OK"
        elif path == "/wsgi/notes":
            body, status = notes_answer(notes, environ)
        elif path.startswith("/wsgi"):
            doc = {"instance": instance, "pid": os.getpid(), "path": path}
            total = count(instance) if count else None
            if total is not None:
                doc["requests"] = total
            body, status = (json.dumps(doc, sort_keys=True) + "\n").encode(), "200 OK"
        else:
            body, status = b"not found\n", "404 Not Found"
        json_body = body.startswith((b"{", b"["))
        start_response(status, [("Content-Type", "application/json" if json_body else "text/plain"),
                                ("Content-Length", str(len(body)))])
        return [body]
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9000, help="without socket activation")
    args = parser.parse_args(argv)
    instance = os.environ.get("OUTPOST_INSTANCE") or str(os.getpid())
    state_dir = (os.environ.get("STATE_DIRECTORY") or "").split(":")[0] or None
    app = make_app(instance, counter(state_dir), Notes(state_dir) if state_dir else None)
    server = Server(listening_socket(args.port), app)

    def stop(signum, frame):  # finish the request in flight; systemd keeps the socket open
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"wsgi: instance {instance} serving {server.server_name}:{server.server_port}", flush=True)
    server.serve_forever(poll_interval=0.2)
    print(f"wsgi: instance {instance} stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
