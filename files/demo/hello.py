#!/usr/bin/python3
"""outpost's demo web app: the smallest HTTP service that shows a deploy happening.

    hello.py --port 8000     serve: `/` answers GREETING, the image (version) and the port;
                             `/ready` answers 200 once the server listens (500 when broken)
    hello.py --once          print the same line once and exit 0 (the scheduled job)

A "broken image" for tests: BROKEN=1 in the environment, a file /app/BROKEN (or BROKEN_FILE)
in the image, or an image tag containing "broken" makes `/ready` answer 500.
Python 3 standard library only; stops gracefully on SIGTERM (it runs as PID 1 in a container).
"""

import argparse
import http.server
import json
import os
import signal
import socket
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
        with INFLIGHT_LOCK:
            if CLOSED[0]:
                # The process is exiting: write nothing, so that the client (the proxy) sees the
                # connection close before any byte of a response and retries the request elsewhere.
                self.close_connection = True
                return
            INFLIGHT[0] += 1
        try:
            self.route()
        finally:
            with INFLIGHT_LOCK:
                INFLIGHT[0] -= 1

    def route(self) -> None:
        if STOPPING.is_set():
            self.close_connection = True      # answer this one, then let the proxy reconnect elsewhere
        path = self.path.split("?", 1)[0]
        port = self.server.server_address[1]
        if path == "/ready":
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
