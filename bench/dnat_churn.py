"""The agent's kernel drain under a churn of new connections, in private network namespaces.

Two HTTP servers stand for two replicas on 127.0.0.1:8100 and :8101; CLIENTS threads of a
non-root client (as the proxy is) open one connection per request, half to each port, for
SECONDS. Meanwhile the port 8100 is drained and lifted again every PERIOD seconds, in one of
three ways, each in its own network namespace and measured in the same run:

- `none`: no drain at all (the baseline: what the client loses by itself);
- `agent`: the agent's own `drain_port(8100, 8101)` / `undrain` (files/agent/outpost_agent/
  restarts.py): the port goes into and out of a map of a table that stays;
- `table`: the way first built, a nat table created for each drain and deleted to lift it.
  Deleting a nat chain takes the NAT binding away from connections redirected a moment before;
  their next packets arrive untranslated and the request hangs.

Printed as a table: connections answered, failed (by kind), answers slower than 0.9 s, and the
failures per 10,000 against the baseline. Run as root (namespaces, connecting as nobody):

    python bench/dnat_churn.py [--seconds 40] [--period 1.5] [--clients 8] [--modes none,agent,table]

Measured 2026-12-07 (idle two-core machine, 40 s each, one run): none 0 failed of 106,300
connections; agent 0 of 81,615; table 29 of 67,802 (24 timeouts, 5 resets). Three earlier runs of
the map way by hand: 0 of 263,000.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs inside `unshare --net`: the servers, the drain loop, and the client as nobody.
INSIDE = r'''
import http.server, io, json, subprocess, sys, threading, time
agent_dir, mode, seconds, period, clients = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
sys.path.insert(0, agent_dir)
from outpost_agent.cli import Agent
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

class Replica(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = str(self.server.server_address[1]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer.request_queue_size = 128   # the listen backlog, read as the server binds
for port in (8100, 8101):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Replica)
    threading.Thread(target=server.serve_forever, daemon=True).start()

CLIENT = """
import json, socket, sys, threading, time
stats, lock, end = {"ok": 0, "slow": 0, "failed": {}}, threading.Lock(), time.monotonic() + float(sys.argv[1])
def run():
    n = 0
    while time.monotonic() < end:
        port, n, started = 8100 + n % 2, n + 1, time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
                while s.recv(4096):
                    pass
            with lock:
                stats["ok"] += 1
                stats["slow"] += time.monotonic() - started > 0.9
        except OSError as e:
            with lock:
                stats["failed"][type(e).__name__] = stats["failed"].get(type(e).__name__, 0) + 1
threads = [threading.Thread(target=run) for _ in range(int(sys.argv[2]))]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps(stats))
"""
client = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                           "-c", CLIENT, str(seconds), str(clients)], stdout=subprocess.PIPE, text=True)
TABLE = """table ip churn_table {
  chain output { type nat hook output priority -100; policy accept;
    meta skuid != 0 ip daddr 127.0.0.1 tcp dport 8100 dnat to 127.0.0.1:8101
  }
}
"""
agent, started, cycles = Agent(log=io.StringIO()), time.monotonic(), 0
while time.monotonic() - started < seconds - 2 * period:
    if mode == "agent":
        agent.drain_port(8100, 8101)
    elif mode == "table":
        subprocess.run(["nft", "-f", "-"], input=TABLE, text=True, check=True)
    time.sleep(period)
    if mode == "agent":
        agent.undrain({"kind": "port", "port": 8100, "to": 8101})
    elif mode == "table":
        subprocess.run(["nft", "delete", "table", "ip", "churn_table"], check=True)
    time.sleep(period)
    cycles += 1
result = json.loads(client.communicate()[0])
print(json.dumps({**result, "cycles": cycles}))
'''


def run_mode(mode: str, args) -> dict:
    done = subprocess.run(["unshare", "--net", sys.executable, "-c", INSIDE, str(ROOT / "files" / "agent"), mode,
                           str(args.seconds), str(args.period), str(args.clients)],
                          capture_output=True, text=True, timeout=args.seconds * 3 + 60)
    if done.returncode != 0:
        raise SystemExit(f"dnat_churn {mode}: {done.stderr.strip() or done.stdout.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--period", type=float, default=1.5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--modes", default="none,agent,table")
    args = parser.parse_args()
    rows = {mode: run_mode(mode, args) for mode in args.modes.split(",")}
    def per_10k(r: dict) -> float:
        failed = sum(r["failed"].values())
        return 1e4 * failed / max(1, r["ok"] + failed)

    base = rows.get("none")
    print("| drain | cycles | answered | failed | slow (> 0.9 s) | failed per 10,000 | vs none |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for mode, r in rows.items():
        rate = per_10k(r)
        versus = f"+{rate - per_10k(base):.2f}" if base else "-"
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["failed"].items())) or "0"
        print(f"| {mode} | {r['cycles']} | {r['ok']} | {kinds} | {r['slow']} | {rate:.2f} | {versus} |")


if __name__ == "__main__":
    main()
