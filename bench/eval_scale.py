"""How evaluating the program (config → render → resources under mocks) scales with stack size.

For 1, 10, 50 and 200 hosts × 10 services each, runs the whole program in a fresh subprocess and
prints wall seconds, peak memory (max RSS) and cost per host, with the ratio of per-host cost to
the 10-host size (≈1.0 means linear growth). Target: 200 × 10 under 10 s.

    python bench/eval_scale.py [--sizes 1,10,50,200] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA0I4Ww4cUKzj8bGqL1TYtDfQ1ybB0fKzmKq5gqAqZ5o bench"


def synthetic_config(hosts: int, services_per_host: int = 10) -> dict:
    """A stack of HOSTS hosts (half Hetzner, half static) each running SERVICES_PER_HOST services:
    two-replica containers, process services, socket-activated services and nightly jobs."""
    host_cfg, services, routes = {}, {}, []
    for h in range(hosts):
        name = f"h{h}"
        if h % 2:
            host_cfg[name] = {"provider": "static", "address": f"198.51.100.{h % 250 + 1}", "host_key": KEY}
        else:
            host_cfg[name] = {"provider": "hcloud", "type": "cx22", "location": "hel1", "role": "web"}
        for s in range(services_per_host):
            svc = f"s{s}-{name}"
            kind = s % 4
            if kind == 0:
                services[svc] = {"hosts": [name], "container": {"image": "ghcr.io/x/app", "tag": "1", "port": 8000},
                                 "replicas": [10000 + 2 * s, 10001 + 2 * s], "health": {"path": "/ready"},
                                 "env": {"A": "b"}, "secret_env": {"TOKEN": "token"}}
                routes.append({"host": f"{svc}.example.org", "service": svc})
            elif kind == 1:
                services[svc] = {"hosts": [name], "process": {"exec": "/usr/bin/python3 -m http.server %i"},
                                 "replicas": [10000 + 2 * s]}
            elif kind == 2:
                services[svc] = {"hosts": [name], "process": {"exec": "/usr/bin/python3 /opt/app.py"},
                                 "socket": {"port": 10000 + 2 * s, "instances": 2}}
            else:
                services[svc] = {"hosts": [name], "container": {"image": "ghcr.io/x/etl", "tag": "1"},
                                 "schedule": {"calendar": "*-*-* 04:00:00"}}
    return {
        "outpost:domain": "example.org",
        "outpost:admin": {"user": "admin", "ssh_keys": [KEY], "private_key": "deploy_key"},
        "outpost:hosts": host_cfg,
        "outpost:services": services,
        "outpost:routes": routes,
        "outpost:proxy": {"kind": "caddy", "tls": "internal"},
        "outpost:secrets": {"deploy_key": {"secure": "x"}, "token": {"secure": "x"}},
    }


def measure_one(hosts: int) -> dict:
    """Runs in the child: evaluate once, report seconds, resources and peak RSS."""
    sys.path.insert(0, str(ROOT))
    from components.program import run_program
    config = synthetic_config(hosts)
    config["outpost:secrets"] = {n: f"<secret:{n}>" for n in config["outpost:secrets"]}
    start = time.perf_counter()
    registered = run_program("bench", config)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"hosts": hosts, "services": hosts * 10, "resources": len(registered),
            "seconds": round(seconds, 3), "peak_mib": round(peak_mib, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,10,50,200")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure_one(args.child)))
        return 0
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child", str(size)], capture_output=True,
                             text=True, check=True, cwd=ROOT)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = next((r for r in rows if r["hosts"] == 10), rows[0])
    base_per_host = base["seconds"] / base["hosts"]
    for r in rows:
        r["ms_per_host"] = round(1000 * r["seconds"] / r["hosts"], 1)
        r["per_host_vs_10"] = round((r["seconds"] / r["hosts"]) / base_per_host, 2)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print("program evaluation (config → render → resources under mocks)")
    print(f"{'hosts':>6} {'services':>9} {'resources':>10} {'seconds':>8} {'peak MiB':>9} {'ms/host':>8} {'per-host vs 10':>15}")
    for r in rows:
        print(f"{r['hosts']:>6} {r['services']:>9} {r['resources']:>10} {r['seconds']:>8.2f} "
              f"{r['peak_mib']:>9.1f} {r['ms_per_host']:>8.1f} {r['per_host_vs_10']:>15.2f}")
    largest = rows[-1]
    verdict = "meets" if largest["seconds"] < 10 else "MISSES"
    print(f"{largest['hosts']} hosts × 10 services: {largest['seconds']:.2f} s ({verdict} the 10 s target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
