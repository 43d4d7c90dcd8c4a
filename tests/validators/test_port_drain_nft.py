"""The agent's kernel drain of a replica (outpost_agent/restarts.py `drain_port`) with the real
nft, in a private network namespace: while drained, a new connection from anyone but root is
refused at once (what the proxy retries elsewhere), root's health checks still pass, a request
already in flight finishes before the drain says the port is free, and lifting the drain lets
connections in again. Needs root (to connect as another user), nft, unshare and setpriv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

SCRIPT = textwrap.dedent('''
    import http.server, io, json, subprocess, sys, threading, time
    sys.path.insert(0, sys.argv[1])
    from outpost_agent.cli import Agent
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    class Slow(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            time.sleep(float(self.path.strip("/") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"ok")
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 8100), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def curl(path, user=None):
        argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:8100{path}"]
        if user:
            argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
        return subprocess.run(argv, capture_output=True, text=True)

    out = {}
    inflight = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "curl", "-s",
                                 "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:8100/1.5"],
                                stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)                                    # its request is being answered
    agent = Agent(log=io.StringIO())
    started = time.monotonic()
    agent.drain_port(8100)
    out["drain_seconds"] = round(time.monotonic() - started, 2)
    out["inflight"] = inflight.communicate(timeout=30)[0]
    refused = curl("/", user="nobody")
    out["nobody_while_drained"] = (refused.returncode, refused.stdout)
    out["root_while_drained"] = curl("/").stdout
    agent.undrain({"kind": "port", "port": 8100})
    out["nobody_after"] = curl("/", user="nobody").stdout
    out["tables_after"] = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    out["log"] = agent.log_to.getvalue()
    print(json.dumps(out))
''')


def test_a_drained_port_refuses_new_connections_but_roots_and_lets_inflight_finish(tmp_path):
    if os.getuid() != 0:
        pytest.fail("needs root: it connects as nobody to see the refusal")
    for tool in ("nft", "unshare", "setpriv", "curl", "ip"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: apt-get install -y nftables util-linux curl iproute2")
    script = tmp_path / "inside.py"
    script.write_text(SCRIPT)
    done = subprocess.run(["unshare", "--net", sys.executable, str(script), str(ROOT / "files" / "agent")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["inflight"] == "200", out
    assert out["drain_seconds"] >= 0.8, out             # it waited for the request in flight
    assert out["nobody_while_drained"] == [7, "000"], out   # refused: curl's "could not connect"
    assert out["root_while_drained"] == "200" and out["nobody_after"] == "200", out
    assert "outpost_drain" not in out["tables_after"], out
    assert "drained 127.0.0.1:8100: new connections refused (0 connections left)" in out["log"], out
