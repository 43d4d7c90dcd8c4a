"""The wsgi demo app's notes (the data the disaster drill backs up and restores), run for real on
a loopback port with a temporary $STATE_DIRECTORY."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import ROOT

APP = ROOT / "files" / "demo" / "wsgi_app.py"


@pytest.fixture
def app(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "STATE_DIRECTORY": str(tmp_path), "OUTPOST_INSTANCE": "1"}
    process = subprocess.Popen([sys.executable, str(APP), "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(base + "/health", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise
            time.sleep(0.1)
    yield base, tmp_path
    process.terminate()
    process.wait(timeout=10)


def request(url: str, data: bytes | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_a_note_is_kept_as_a_row_and_as_a_file(app):
    base, state = app
    assert request(base + "/wsgi/notes", b"first")[0] == 201
    status, body = request(base + "/wsgi/notes", "zweite Notiz ✓".encode())
    assert status == 201 and json.loads(body)["id"] == 2
    status, body = request(base + "/wsgi/notes")
    listing = json.loads(body)
    assert [r["text"] for r in listing["rows"]] == ["first", "zweite Notiz ✓"]
    assert listing["files"] == {"1.txt": "first", "2.txt": "zweite Notiz ✓"}
    assert (state / "files" / "2.txt").read_text(encoding="utf-8") == "zweite Notiz ✓"
    assert (state / "notes.db").exists()


def test_an_empty_or_huge_note_is_refused(app):
    base, state = app
    assert request(base + "/wsgi/notes", b"")[0] == 400
    assert request(base + "/wsgi/notes", b"x" * 4097)[0] == 400
    assert json.loads(request(base + "/wsgi/notes")[1]) == {"files": {}, "rows": []}
