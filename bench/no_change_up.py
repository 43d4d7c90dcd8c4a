"""A no-change `pulumi up` of a 10-host fleet against its own `pulumi preview`, on the local VM.

Issue 24's last target: with nothing to do, `pulumi up` costs no more than twice its preview.
A no-change up opens no SSH session, but it needs a state a real `up` made, so the fleet is real:
HOSTS static hosts (a group of named members, bench/synthetic.py's shape) that all are the local
VM (tools/vm.py), each running SERVICES process services (the VM has no registry for the container
kinds). The same manifests land on the one machine; the agent applies them once and finds the
others unchanged, so the first `up` stays minutes long even under TCG.

Measured, each as one sampled process tree (bench/proctree.py), in this order: the first `up`
(for the record), a `pulumi preview` of the deployed stack, then the no-change `up`, whose SSH
sessions are counted on the VM's sshd log (bench/sshd_log.py): there must be none. Printed as a
table with the ratio up/preview; `--json` for one document.

    python bench/no_change_up.py [--hosts 10] [--services 10] [--timeout 1800] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.proctree import TreeRun, run_tree  # noqa: E402
from bench.sshd_log import SshdLog  # noqa: E402
from bench.synthetic import KEY  # noqa: E402
from tools.pulumi_cli import StackCli  # noqa: E402
from tools.vm import VM  # noqa: E402

ADMIN = "admin"
TARGET_RATIO = 2.0


def fleet_on(vm: VM, hosts: int, services: int) -> dict:
    """HOSTS static members that all are VM, SERVICES process services on every one of them."""
    members = {f"vm-{i}": {} for i in range(1, hosts + 1)}
    host = {"provider": "static", "address": "127.0.0.1", "ssh_address": "127.0.0.1", "port": vm.ssh_port,
            "host_key": vm.host_key, "user": ADMIN}
    procs = {}
    for s in range(services):
        if s % 2:
            procs[f"s{s}"] = {"hosts": ["vm"], "process": {"exec": "/usr/bin/python3 /opt/app.py"},
                              "socket": {"port": 11000 + s, "instances": 2}}
        else:
            procs[f"s{s}"] = {"hosts": ["vm"], "process": {"exec": "/usr/bin/python3 -m http.server %i"},
                              "replicas": [10000 + s]}
    return {"outpost:domain": "example.org",
            "outpost:admin": {"user": ADMIN, "ssh_keys": [vm.public_key, KEY], "private_key": "deploy_key"},
            "outpost:groups": {"vm": {"host": host, "members": members}},
            "outpost:services": procs, "outpost:proxy": {"kind": "caddy", "tls": "none"},
            "outpost:secrets": {"deploy_key": None}}


def admin_exists(vm: VM) -> None:
    """The admin with the VM's key and sudo, made as the image's root: every member's first login
    (its bootstrap) then logs in as the admin, so the first member's hardened sshd (no root) does
    not lock out the others' bootstraps."""
    vm.ssh(f"id -u {ADMIN} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash {ADMIN}; "
           f"install -d -m 0700 -o {ADMIN} -g {ADMIN} /home/{ADMIN}/.ssh; "
           f"cp /root/.ssh/authorized_keys /home/{ADMIN}/.ssh/ && chown {ADMIN}: /home/{ADMIN}/.ssh/authorized_keys; "
           f"echo '{ADMIN} ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/90-bench && chmod 0440 /etc/sudoers.d/90-bench")


def timed(cli: StackCli, args: list[str], timeout: float) -> TreeRun:
    run = run_tree(cli.argv(args), env=cli.env(), cwd=cli.project, timeout=timeout)
    if run.returncode != 0:
        said = (run.stdout + run.stderr).strip().splitlines()
        raise SystemExit(f"no_change_up: `pulumi {' '.join(args)}` exited {run.returncode}: {' | '.join(said[-5:])}")
    return run


def row(name: str, run: TreeRun, sessions: int | None = None) -> dict:
    procs = run.by_name()
    return {"phase": name, "wall_s": round(run.wall_s, 2), "cpu_s": round(run.cpu_s, 2),
            "cli_mib": round((procs.get("pulumi") or {}).get("peak_mib", 0)),
            "tree_mib": round(run.tree_peak_mib), "sessions": sessions}


def measure(hosts: int, services: int, timeout: float, workdir: Path) -> dict:
    vm = VM.start(state_dir=workdir / "vm")
    try:
        admin_exists(vm)
        cli = StackCli("nochange", workdir / "pulumi")
        cli.lay(fleet_on(vm, hosts, services), {"deploy_key": Path(vm.private_key_path).read_text()})
        first = timed(cli, ["up", "--yes", "--skip-preview"], timeout)
        preview = timed(cli, ["preview"], timeout)
        log = SshdLog(vm, ADMIN)
        mark = log.mark()
        again = timed(cli, ["up", "--yes", "--skip-preview"], timeout)
        sessions = log.count(mark).connections
        resources = sum(1 for r in cli.resources() if r["type"] != "pulumi:pulumi:Stack")
    finally:
        vm.kill()
    rows = [row("first up", first), row("preview", preview), row("no-change up", again, sessions)]
    ratio = round(again.wall_s / preview.wall_s, 2)
    met = ratio <= TARGET_RATIO and sessions == 0
    return {"hosts": hosts, "services": services, "resources": resources, "rows": rows, "ratio": ratio,
            "verdict": (f"target {'MET' if met else 'NOT MET'}: a no-change pulumi up of {hosts} hosts took "
                        f"{ratio:.2f}× its preview (target ≤ {TARGET_RATIO:.0f}×) and opened {sessions} SSH "
                        "connections (target 0)")}


def table(doc: dict) -> list[str]:
    lines = [f"no-change pulumi up on the VM: {doc['hosts']} static hosts × {doc['services']} process services, "
             f"{doc['resources']} resources",
             f"{'phase':<14} {'wall s':>7} {'CPU s':>7} {'CLI MiB':>8} {'tree MiB':>9} {'SSH conns':>9}"]
    lines += [f"{r['phase']:<14} {r['wall_s']:>7.2f} {r['cpu_s']:>7.2f} {r['cli_mib']:>8} {r['tree_mib']:>9} "
              f"{'-' if r['sessions'] is None else r['sessions']:>9}" for r in doc["rows"]]
    return lines + [f"no-change up ÷ preview: {doc['ratio']:.2f}", doc["verdict"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds one pulumi run may take")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="outpost-no-change-") as tmp:
        doc = measure(args.hosts, args.services, args.timeout, Path(tmp))
    doc["seconds"] = round(time.monotonic() - started)
    print(json.dumps(doc, indent=2) if args.json else "\n".join(table(doc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
