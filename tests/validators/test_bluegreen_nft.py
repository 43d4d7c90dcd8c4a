"""Blue-green switch files (components/render/proxy.py `bluegreen_switch`) loaded by the real nft
into a private network namespace: the proxy's stable address reaches the live slot, a switch is
one atomic rule swap that can be repeated, and a connection opened before a switch stays with its
slot (conntrack) while the next one meets the new slot. Needs nft (nftables) and unshare."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from components.render import proxy
from tests.render.proxy_cases import PEERBOOK

# Runs inside the namespace: two slot servers that name themselves, then switches.
SCRIPT = textwrap.dedent('''
    import http.client, http.server, json, subprocess, sys, threading
    root, blue, green, live = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    class Slot(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            body = str(self.server.server_address[1]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass

    for port in (blue, green):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Slot)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def nft(*args):
        done = subprocess.run(["nft", *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def answer(conn):
        conn.request("GET", "/")
        return int(conn.getresponse().read())

    def fresh():
        return answer(http.client.HTTPConnection("127.0.2.1", blue, timeout=5))

    out = {}
    nft("-f", root + "/etc/outpost/proxy/bluegreen.nft")          # a proxy start before any switch
    out["before_first_switch"] = nft("list", "ruleset")
    nft("-c", "-f", root + "/switch-green.nft")                    # the agent's validate step
    nft("-f", root + "/switch-green.nft")
    out["green"] = fresh()
    kept = http.client.HTTPConnection("127.0.2.1", blue, timeout=5)
    out["kept_before"] = answer(kept)                              # a connection opened on green
    nft("-f", root + "/switch-blue.nft")
    nft("-f", root + "/switch-blue.nft")                           # loading twice changes nothing
    out["blue"] = fresh()
    out["kept_after"] = answer(kept)                               # ... stays on green
    out["rules"] = nft("list", "table", "ip", "outpost_bluegreen")
    nft("delete", "table", "ip", "outpost_bluegreen")            # the proxy stopped
    with open(live, "w") as f:                                     # the agent's live file: blue
        f.write(open(root + "/switch-blue.nft").read())
    nft("-f", root + "/etc/outpost/proxy/bluegreen.nft")          # the proxy starts: every switch file
    out["after_restart"] = fresh()
    print(json.dumps(out))
''')


def in_namespace(argv: list[str]) -> subprocess.CompletedProcess:
    for tool in ("nft", "unshare", "ip"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: apt-get install -y nftables util-linux iproute2")
    unshare = ["unshare", "--net"] + ([] if os.getuid() == 0 else ["--map-root-user"])
    return subprocess.run([*unshare, *argv], capture_output=True, text=True, timeout=120)


def test_a_switch_moves_new_connections_and_leaves_open_ones(tmp_path):
    root = str(tmp_path)
    rules = next(f for f in proxy.render_proxy(proxy.ProxySpec("nginx", "none", None, (
        proxy.Route("a.example.org", None, PEERBOOK),)), root=root) if f.path.endswith("bluegreen.nft"))
    Path(rules.path).parent.mkdir(parents=True)
    Path(rules.path).write_text(rules.content)
    Path(f"{root}{proxy.LIVE_DIR}").mkdir(parents=True)
    blue, green = PEERBOOK.ports
    for name, port in (("green", green), ("blue", blue)):
        switch = proxy.bluegreen_switch("nginx", PEERBOOK, port, root=root)
        (tmp_path / f"switch-{name}.nft").write_text(switch.content)
    live = proxy.bluegreen_switch("nginx", PEERBOOK, blue, root=root).path
    script = tmp_path / "inside.py"
    script.write_text(SCRIPT)
    done = in_namespace([sys.executable, str(script), root, str(blue), str(green), live])
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout)
    assert out["green"] == green and out["kept_before"] == green
    assert out["blue"] == blue and out["kept_after"] == green
    assert out["rules"].count("dnat to") == 1 and f"dnat to 127.0.0.1:{blue}" in out["rules"]
    assert out["after_restart"] == blue
    assert "outpost_bluegreen" not in out["before_first_switch"]  # no switch file, nothing to load


def test_a_broken_switch_file_fails_nft_check(tmp_path):
    bad = tmp_path / "bad.nft"
    bad.write_text(proxy.bluegreen_switch("caddy", PEERBOOK, PEERBOOK.ports[1]).content.replace("dnat to", "dnat too"))
    done = in_namespace(["nft", "-c", "-f", str(bad)])
    assert done.returncode != 0 and "syntax error" in done.stderr
