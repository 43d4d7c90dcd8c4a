"""The demo app's graceful stop (files/demo/hello.py), in process: once it decides to exit, a
request on a kept-alive connection gets a whole response or no byte of one, never a cut one.

A proxy without a drain step (Caddy, nginx) keeps idle keep-alive connections to a replica and may
send a request on one until the process is gone. A request cut after its headers cannot be retried
(the proxy has passed them on: the client sees IncompleteRead); one that got nothing can be.
"""

from __future__ import annotations

import http.client
import importlib.util
import threading
import time

import pytest

from tests.conftest import ROOT


@pytest.fixture
def hello():
    spec = importlib.util.spec_from_file_location("outpost_demo_hello", ROOT / "files/demo/hello.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)        # a fresh copy: its module state (CLOSED, ...) is ours
    server = module.http.server.ThreadingHTTPServer(("127.0.0.1", 0), module.Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    module.STOPPING.set()                  # as after SIGTERM: answers say Connection: close
    yield module, server.server_address[1]
    server.shutdown()
    server.server_close()


def kept_alive(port: int) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.connect()
    return conn


def test_a_request_after_the_exit_decision_gets_no_byte_of_a_response(hello):
    module, port = hello
    idle = kept_alive(port)                # a proxy's pooled connection, accepted before the stop
    time.sleep(0.1)                        # its handler thread now waits for a request line
    assert module.close_when_idle(time.monotonic() + 5) == 0
    assert module.CLOSED[0]
    try:
        idle.sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = idle.sock.recv(65536)
    except OSError:                        # reset: also nothing received
        data = b""
    assert data == b"", "no response may start once the server decided to exit"


def test_the_exit_decision_waits_for_a_response_in_flight(hello, monkeypatch):
    module, port = hello
    entered, release = threading.Event(), threading.Event()
    route = module.Handler.route

    def slow_route(self):
        entered.set()
        release.wait(5)
        route(self)

    monkeypatch.setattr(module.Handler, "route", slow_route)
    conn = kept_alive(port)
    answers = []
    requester = threading.Thread(target=lambda: (conn.request("GET", "/"), answers.append(conn.getresponse())))
    requester.start()
    assert entered.wait(5)
    closed = []
    closer = threading.Thread(target=lambda: closed.append(module.close_when_idle(time.monotonic() + 5)))
    closer.start()
    time.sleep(0.3)
    assert closed == [] and not module.CLOSED[0], "must not decide to exit while a response is being written"
    release.set()
    requester.join(5)
    closer.join(5)
    assert closed == [0]
    response = answers[0]
    body = response.read()                 # raises IncompleteRead if the body was cut
    assert response.status == 200 and b"hello" in body
    assert response.getheader("Connection") == "close"


def test_idle_keep_alive_connections_are_closed_at_the_exit_decision(hello):
    module, port = hello
    conns = [kept_alive(port) for _ in range(3)]
    time.sleep(0.1)
    module.close_when_idle(time.monotonic() + 5)
    for conn in conns:
        conn.sock.settimeout(5)
        try:
            assert conn.sock.recv(1) == b""    # the server's FIN, not silence
        except ConnectionResetError:
            pass
    deadline = time.monotonic() + 5
    while module.CONNECTIONS and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not module.CONNECTIONS
