"""The demo app's posts (files/demo/hello.py): kept once per Idempotency-Key, also when the same
post reaches two replicas that share the database, so a resent post is never kept twice."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

APP = ROOT / "files" / "demo" / "hello.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: int, env: dict) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, str(APP), "--port", str(port)], env={**os.environ, **env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            if request(port, "GET", "/ready")[0] == 200:
                return process
        except OSError:
            pass
        assert time.monotonic() < deadline and process.poll() is None, "hello.py did not start"
        time.sleep(0.05)


def request(port: int, method: str, path: str, body: bytes | None = None, key: str | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Idempotency-Key": key} if key else {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.fixture
def replicas(tmp_path):
    ports = [free_port(), free_port()]
    processes = [start(port, {"STATE_DIRECTORY": str(tmp_path)}) for port in ports]
    yield ports
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


def test_a_post_sent_twice_to_two_replicas_is_kept_once(replicas):
    a, b = replicas
    status, first = request(a, "POST", "/posts", b'{"n": 1}', key="run1-0-1")
    assert status == 201 and first["replayed"] is False and first["port"] == a
    status, again = request(b, "POST", "/posts", b'{"n": 1}', key="run1-0-1")
    assert status == 200 and again["replayed"] is True
    assert (again["port"], again["at"]) == (first["port"], first["at"])   # the first answer, again
    assert request(b, "POST", "/posts", b"x", key="run1-0-2")[0] == 201
    status, listing = request(a, "GET", "/posts")
    assert listing == {"posts": {"run1-0-1": 1, "run1-0-2": 1}, "deliveries": {"run1-0-1": 2, "run1-0-2": 1}}


@pytest.mark.parametrize("body,key,status", [(b"x", None, 400), (b"x", "bad key!", 400),
                                             (b"x" * 4097, "k", 413), (b"", "k", 400)])
def test_a_post_without_a_good_key_or_size_is_refused(replicas, body, key, status):
    assert request(replicas[0], "POST", "/posts", body, key=key)[0] == status
    assert request(replicas[0], "GET", "/posts")[1] == {"posts": {}, "deliveries": {}}


def test_without_a_state_directory_posts_live_in_the_process(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY", "POSTS_DB")}
    process = subprocess.Popen([sys.executable, str(APP), "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                request(port, "GET", "/ready")
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert request(port, "POST", "/posts", b"x", key="k1")[0] == 201
        assert request(port, "POST", "/posts", b"x", key="k1")[0] == 200
        assert request(port, "GET", "/posts")[1] == {"posts": {"k1": 1}, "deliveries": {"k1": 2}}
        assert list(tmp_path.iterdir()) == []
    finally:
        process.terminate()
        process.wait(timeout=30)
