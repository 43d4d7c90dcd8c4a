#!/usr/bin/python3
"""outpost's demo WSGI app, socket-activated: systemd holds the listening socket, this serves it.

systemd passes the socket as fd 3 (`LISTEN_FDS=1`, `LISTEN_PID` = this process; see
sd_listen_fds(3)); several instances can share one port because each instance's socket unit
binds it with SO_REUSEPORT. Without socket activation it listens on --port (for a local try).

    /health     200 "ok"
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


def make_app(instance: str, count):
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/health":
            body, status = b"ok\n", "200 OK"
        elif path.startswith("/wsgi"):
            doc = {"instance": instance, "pid": os.getpid(), "path": path}
            total = count(instance) if count else None
            if total is not None:
                doc["requests"] = total
            body, status = (json.dumps(doc, sort_keys=True) + "\n").encode(), "200 OK"
        else:
            body, status = b"not found\n", "404 Not Found"
        start_response(status, [("Content-Type", "text/plain" if path == "/health" else "application/json"),
                                ("Content-Length", str(len(body)))])
        return [body]
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9000, help="without socket activation")
    args = parser.parse_args(argv)
    instance = os.environ.get("OUTPOST_INSTANCE") or str(os.getpid())
    server = Server(listening_socket(args.port), make_app(instance, counter(os.environ.get("STATE_DIRECTORY"))))

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
