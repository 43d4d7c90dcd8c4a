"""The end-to-end suite's real-client load generator (tests/e2e/load.py `ClientLoad`), against
small servers that misbehave on purpose: it must count what a careful client would see, retry
only a GET whose reused connection closed before any byte of an answer, never a POST, and find
POSTs the app did not keep (or kept twice) afterwards."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from tests.conftest import ROOT
from tests.e2e.load import ClientLoad, Tally, Target

APP = ROOT / "files" / "demo" / "hello.py"


class RawServer:
    """HTTP/1.1 by hand. `behave(n, request)` decides what the n-th request on a connection
    (n = 1, 2, ...) gets: "answer", "close" (close without a byte), "cut" (half an answer, then
    close), "answer+close" (answer, then close the kept-alive connection, without saying so)."""

    def __init__(self, behave):
        self.behave = behave
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket):
        reader = conn.makefile("rb")
        n = 0
        with conn:
            while True:
                line = reader.readline()
                if not line:
                    return
                headers = {}
                while (h := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = h.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = reader.read(int(headers.get("content-length", 0)))
                n += 1
                what = self.behave(n, line.decode())
                answer = json.dumps({"ok": True}).encode()
                head = (f"HTTP/1.1 {201 if line.startswith(b'POST') else 200} OK\r\n"
                        f"Content-Length: {len(answer)}\r\n\r\n").encode()
                if what == "close":
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                if what == "cut":
                    conn.sendall(head[:10])
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                conn.sendall(head + answer)
                if what == "answer+close":
                    conn.shutdown(socket.SHUT_RDWR)
                    return
                del body

    def close(self):
        self.stop = True
        self.sock.close()


def run_load(port: int, seconds: float = 1.5, pause: float = 0.01, **kw) -> ClientLoad:
    load = ClientLoad(port, [Target("localhost")], None, clients=2, connections=2, pause=pause, **kw)
    with load:
        with load.phase("op"):
            time.sleep(seconds)
    return load


def test_an_idle_connection_the_server_closed_is_replaced_before_reuse_not_failed():
    server = RawServer(lambda n, req: "answer+close")
    try:   # the close reaches the client well before it reuses the connection (pause)
        tally = run_load(server.port, pause=0.1).tallies["op"]
    finally:
        server.close()
    assert tally.requests > 10 and tally.lost == 0 and tally.retried == 0
    assert tally.reconnects > 5


def test_a_get_cut_before_any_byte_on_a_reused_connection_is_retried_a_post_is_lost():
    server = RawServer(lambda n, req: "close" if n == 2 else "answer")   # the first reuse fails
    try:
        tally = run_load(server.port).tallies["op"]
    finally:
        server.close()
    kinds = set(tally.failures)
    assert tally.retried > 0, tally
    assert kinds and all(k.startswith("POST: ") and "on a reused connection before any byte" in k for k in kinds), kinds
    assert tally.lost == sum(1 for outcome in tally.post_outcomes.values() if outcome != "ok")


def test_a_cut_answer_is_lost_and_not_retried_even_for_a_get():
    server = RawServer(lambda n, req: "cut" if n == 2 else "answer")
    try:
        tally = run_load(server.port, post_every=1000).tallies["op"]
    finally:
        server.close()
    assert tally.retried == 0 and tally.lost > 0
    assert all(k.startswith("GET: ") and "before any byte" not in k for k in tally.failures), tally.failures


def test_posts_are_checked_against_the_store():
    load = ClientLoad(1, [Target("a.test")], None)
    load.run = "r1"
    tally = load.tallies.setdefault("op", Tally())
    tally.post_outcomes = {("a.test", "r1-0-1"): "ok", ("a.test", "r1-0-2"): "ok", ("a.test", "r1-0-3"): "ok",
                           ("a.test", "r1-0-4"): "HTTP 502"}
    listing = {"posts": {"r1-0-1": 1, "r1-0-3": 2, "r1-0-4": 1, "r1-9-9": 1, "other-run": 1},
               "deliveries": {"r1-0-1": 1, "r1-0-3": 2, "r1-0-4": 1, "r1-9-9": 1}}
    load.verify_posts(lambda target: listing)
    assert dict(tally.failures) == {"POST answered but not kept": 1}          # r1-0-2
    assert (tally.duplicated, tally.redelivered, tally.stored_after_failure) == (1, 1, 1)
    assert load.tallies["between"].failures == {"POST kept that no client sent": 1}   # r1-9-9
    assert tally.verified


def test_against_the_demo_app_every_request_and_post_is_accounted_for(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = subprocess.Popen([sys.executable, str(APP), "--port", str(port)], env={"POSTS_DB": str(tmp_path / "p.db")},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        load = run_load(port)
        load.verify_posts(lambda t: json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/posts", timeout=10)))
    finally:
        app.terminate()
        app.wait(timeout=30)
    tally = load.tallies["op"]
    assert tally.gets > 10 and tally.posts > 5 and tally.lost == 0 and tally.duplicated == 0
    assert tally.verified and tally.reconnects == 0 and tally.retried == 0
    assert tally.slowest > 0
