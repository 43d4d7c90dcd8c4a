"""The agent's kernel drain of a replica (outpost_agent/restarts.py `drain_port`) with the real
nft, in a private network namespace: while drained, a new connection from anyone but root goes to
the sibling replica (or, for a lone replica, is refused at once), root's health checks still
reach the replica, a request already in flight finishes before the drain says the port is free,
and lifting the drain lets connections in again (the table stays, empty). The churn the drain
must survive (connections redirected a moment before it is lifted) is bench/dnat_churn.py. Needs root (to connect as another user), nft,
unshare and setpriv."""

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

    to = int(sys.argv[2]) if sys.argv[2] != "-" else None

    class Slow(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            time.sleep(float(self.path.strip("/") or 0))
            body = str(self.server.server_address[1]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass

    for port in (8100, 8101):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Slow)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def curl(path, user=None):
        argv = ["curl", "-s", "-w", " %{http_code}", f"http://127.0.0.1:8100{path}"]
        if user:
            argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
        return subprocess.run(argv, capture_output=True, text=True)

    out = {}
    inflight = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "curl", "-s",
                                 "-w", " %{http_code}", "http://127.0.0.1:8100/1.5"],
                                stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)                                    # its request is being answered
    agent = Agent(log=io.StringIO())
    started = time.monotonic()
    agent.drain_port(8100, to)
    out["drain_seconds"] = round(time.monotonic() - started, 2)
    out["inflight"] = inflight.communicate(timeout=30)[0]
    refused = curl("/", user="nobody")
    out["nobody_while_drained"] = (refused.returncode, refused.stdout)
    out["root_while_drained"] = curl("/").stdout
    agent.undrain({"kind": "port", "port": 8100, **({"to": to} if to else {})})
    out["nobody_after"] = curl("/", user="nobody").stdout
    out["table_after"] = subprocess.run(["nft", "list", "table", "inet", "outpost_drain"],
                                        capture_output=True, text=True).stdout
    out["log"] = agent.log_to.getvalue()
    print(json.dumps(out))
''')


@pytest.mark.parametrize("to", [8101, None])
def test_a_drained_port_sends_new_connections_on_but_roots_and_lets_inflight_finish(tmp_path, to):
    if os.getuid() != 0:
        pytest.fail("needs root: it connects as nobody to see the refusal")
    for tool in ("nft", "unshare", "setpriv", "curl", "ip"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: apt-get install -y nftables util-linux curl iproute2")
    script = tmp_path / "inside.py"
    script.write_text(SCRIPT)
    done = subprocess.run(["unshare", "--net", sys.executable, str(script), str(ROOT / "files" / "agent"),
                           str(to or "-")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["inflight"] == "8100 200", out           # the request in flight finished where it was
    assert out["drain_seconds"] >= 0.8, out             # it waited for it
    if to:
        assert out["nobody_while_drained"] == [0, "8101 200"], out   # the proxy's new connection: the sibling
    else:
        assert out["nobody_while_drained"] == [7, " 000"], out       # refused: curl's "could not connect"
    assert out["root_while_drained"] == "8100 200", out              # the agent's health check: the replica
    assert out["nobody_after"] == "8100 200", out
    assert "elements" not in out["table_after"] and "dnat ip to" in out["table_after"], out  # the port out, the rule kept
    how = "sent to 127.0.0.1:8101" if to else "refused"
    assert f"drained 127.0.0.1:8100: new connections {how} (0 connections left)" in out["log"], out
