"""files/proxy/outpost-proxy-reload.py, run for real against a small keep-alive server that
behaves like Caddy or nginx with outpost's config: while the drain flag exists it answers with
`Connection: close` and closes. The reload command records which client connections are still
open when it runs; none from before the flag may be. And against the real Caddy, in a private
network namespace: with --hold-new-connections, reloads under a churn of new connections reset
none of them (without it, Caddy 2.6's swap of listening sockets resets some)."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

TOOL = ROOT / "files" / "proxy" / "outpost-proxy-reload.py"
# The reload command: writes the established connections on PORT (as the tool sees them) to OUT.
RECORD = ("import importlib.util, sys; spec = importlib.util.spec_from_file_location('t', sys.argv[1]); "
          "t = importlib.util.module_from_spec(spec); spec.loader.exec_module(t); "
          "open(sys.argv[3], 'w').write('\\n'.join(sorted(t.established({int(sys.argv[2])}))))")


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    flag: Path

    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        if self.flag.exists():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def proxy(tmp_path):
    flag = tmp_path / "run" / "drain"
    handler = type("P", (Proxy,), {"flag": flag})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server.server_address[1], flag
    server.shutdown()
    server.server_close()


def tool(port: int, flag: Path, limit: float, *command: str, extra=()) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(TOOL), "--ports", str(port), "--flag", str(flag),
                             "--limit", str(limit), *extra, "--", *command],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def local_key(conn: http.client.HTTPConnection, port: int) -> str:
    """The tool's key for CONN's server side: 'local remote' in /proc/net/tcp's hex."""
    host, client_port = conn.sock.getsockname()[:2]
    def hexed(addr: str, p: int) -> str:
        return socket.inet_aton(addr)[::-1].hex().upper() + f":{p:04X}"
    return f"{hexed('127.0.0.1', port)} {hexed(host, client_port)}"


def wait_for(check, timeout: float = 10):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_no_connection_from_before_the_flag_is_open_when_the_reload_runs(proxy, tmp_path):
    port, flag = proxy
    out = tmp_path / "open-at-reload"
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    idle.request("GET", "/")
    first = idle.getresponse()
    first.read()
    assert first.getheader("Connection") is None        # kept alive, now idle
    key = local_key(idle, port)
    run = tool(port, flag, 10, sys.executable, "-c", RECORD, str(TOOL), str(port), str(out))
    wait_for(flag.exists)                                # the flag is up: the next answer closes
    time.sleep(0.2)
    assert not out.exists(), "the reload must wait for the idle connection"
    idle.request("GET", "/")
    second = idle.getresponse()
    second.read()
    assert second.getheader("Connection") == "close" and second.will_close
    idle.close()
    stdout, stderr = run.communicate(timeout=20)
    assert run.returncode == 0, stderr
    assert key not in out.read_text().splitlines()
    assert not flag.exists(), "the flag goes after the reload"


def test_a_connection_that_stays_idle_is_waited_for_at_most_the_limit(proxy, tmp_path):
    port, flag = proxy
    out = tmp_path / "open-at-reload"
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    idle.request("GET", "/")
    idle.getresponse().read()
    started = time.monotonic()
    run = tool(port, flag, 1.5, sys.executable, "-c", RECORD, str(TOOL), str(port), str(out))
    stdout, stderr = run.communicate(timeout=20)
    assert run.returncode == 0 and time.monotonic() - started >= 1.5
    assert "1 client connections still open after 1.5s; reloading anyway" in stderr
    assert local_key(idle, port) in out.read_text().splitlines()
    idle.close()


def test_a_failed_reload_fails_and_still_lowers_the_flag(proxy, tmp_path):
    port, flag = proxy
    run = tool(port, flag, 5, sys.executable, "-c", "import sys; sys.exit(3)")
    run.communicate(timeout=20)
    assert run.returncode == 3 and not flag.exists()


def test_the_flag_stays_up_until_the_old_workers_have_exited(proxy, tmp_path):
    """nginx: the reload only signals the master; its old workers finish after the command."""
    port, flag = proxy
    master = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                               "w = subprocess.Popen(['sleep', '60']); print(w.pid, flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        worker = int(master.stdout.readline())
        pidfile = tmp_path / "nginx.pid"
        pidfile.write_text(f"{master.pid}\n")
        seen = tmp_path / "flag-while-worker-ran"
        # the "reload": let the old worker exit a second later, in the background
        reload = f"sleep 1; test -e {flag} && touch {seen}; kill {worker}"
        run = tool(port, flag, 5, "sh", "-c", f"({reload}) >/dev/null 2>&1 &", extra=("--old-workers", str(pidfile)))
        stdout, stderr = run.communicate(timeout=20)
        assert run.returncode == 0, stderr
        assert seen.exists(), "the flag was up while the old worker still ran"
        state = Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state == "Z", "the old worker has exited (its fake master does not reap it)"
        assert not flag.exists()
    finally:
        master.kill()
        master.wait()


# Runs inside `unshare --net`: a real Caddy on :18080, six clients opening a new connection per
# POST, ROUNDS reloads through the tool; prints what the clients saw.
CHURN = r'''
import json, os, socket, subprocess, sys, threading, time
tool, mode, rounds, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
os.makedirs(f"{work}/run", exist_ok=True)
conf = lambda n: f"{{\n\tadmin localhost:2999\n\tauto_https off\n}}\n:18080 {{\n\trespond \"v{n}\"\n}}\n"
open(f"{work}/Caddyfile", "w").write(conf(0))
caddy = subprocess.Popen(["caddy", "run", "--config", f"{work}/Caddyfile", "--adapter", "caddyfile"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HOME": work, "XDG_DATA_HOME": work, "XDG_CONFIG_HOME": work})
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", 18080), 1).close(); break
    except OSError:
        time.sleep(0.1)
stats, lock, stop = {"ok": 0, "failed": {}}, threading.Lock(), threading.Event()
def client():
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", 18080), timeout=10) as s:
                s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
                data = b""
                while (chunk := s.recv(4096)):
                    data += chunk
                assert data.startswith(b"HTTP/1.1 200"), data[:40]
            with lock: stats["ok"] += 1
        except Exception as e:
            with lock: stats["failed"][type(e).__name__] = stats["failed"].get(type(e).__name__, 0) + 1
threads = [threading.Thread(target=client) for _ in range(6)]
[t.start() for t in threads]
started = time.monotonic()
for n in range(1, rounds + 1):
    open(f"{work}/Caddyfile", "w").write(conf(n))
    reload = ["caddy", "reload", "--config", f"{work}/Caddyfile", "--adapter", "caddyfile", "--address", "localhost:2999"]
    argv = [sys.executable, tool, "--ports", "18080", "--flag", f"{work}/run/drain", "--limit", "2",
            *(["--hold-new-connections"] if mode == "hold" else []), "--", *reload]
    r = subprocess.run(argv, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    time.sleep(0.3)
stop.set(); [t.join() for t in threads]
caddy.terminate()
print(json.dumps({**stats, "seconds": round(time.monotonic() - started, 1)}))
'''


@pytest.mark.parametrize("hold", [True, False])
def test_caddy_reloads_reset_no_new_connection_while_new_ones_are_held(tmp_path, hold):
    if os.getuid() != 0:
        pytest.fail("needs root: a private network namespace and nftables")
    for binary in ("caddy", "nft", "unshare", "ip"):
        if shutil.which(binary) is None:
            pytest.fail(f"{binary} is not installed: apt-get install -y caddy nftables util-linux iproute2")
    script = tmp_path / "churn.py"
    script.write_text(CHURN)
    done = subprocess.run(["unshare", "--net", sys.executable, str(script), str(TOOL),
                           "hold" if hold else "plain", "10", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["ok"] > 100, seen
    if hold:
        assert seen["failed"] == {}, seen
    else:   # the race the hold closes: connections queued on the listening socket Caddy closes
        assert seen["failed"].get("ConnectionResetError", 0) > 0, seen
