"""outpost against the reference Ansible playbook, measured in one run on the local VM, next to
program evaluation at 1-200 hosts × 10 services (bench/eval_scale.py).

Each tool deploys the environment of bench/Pulumi.bench.yaml (outpost) or bench/ansible/site.yml
(Ansible) to its own fresh VM (a clean overlay of the cached image: neither benefits from the
other's work), then:

    fresh      deploy to the fresh host (first login as root, as both tools need)
    no change  apply the same thing again
    tag        one service changes: hello's image tag 1 → 2 (built on the host, then a rolling
               restart), under a small bounded HTTPS load through Caddy (tests/e2e/load.py)

each with wall seconds, SSH connections and sessions (counted on the VM's sshd log the same way for
both, bench/sshd_log.py) and, for the tag change, the requests lost. outpost runs as its users run
it: the real `pulumi up` (the pinned CLI from `make engine`, a file backend, passphrase secrets), so
its wall times include the CLI's start-up, the program and the providers. Both tools use the
stack's certificate and the same secrets.

    python bench/ansible_vs_outpost.py [--clients 4] [--skip-eval] [--json FILE] [--keep DIR]
                                       [--tools outpost,ansible]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PLAYBOOK = BENCH / "ansible" / "site.yml"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import eval_scale  # noqa: E402
from bench.sshd_log import SshdLog  # noqa: E402
from tests.e2e.deployment import DEMO_SECRETS, Deployment  # noqa: E402
from tests.e2e.load import Load, https_get  # noqa: E402
from tools.vm import VM  # noqa: E402

HOST = "hello.outpost.localhost"
ADMIN = "admin"              # the admin user of bench/Pulumi.bench.yaml and bench/ansible/vars.yml
RECAP = re.compile(r"^\S+\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@dataclass
class Phase:
    name: str
    seconds: float
    connections: int
    sessions: int
    steps: str                   # what the tool ran: commands (outpost) or tasks (Ansible)
    sent: int | None = None      # requests under load (tag change only)
    lost: int | None = None


# -- the served page ----------------------------------------------------------------------------
def served(port: int, ca_file: str, tag: str, instances: set[str], timeout: float = 300) -> None:
    """Wait until the proxy answers with TAG from every one of INSTANCES (the replica ports)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            status, body = https_get(port, HOST, "/", ca_file)
            last = f"{status} {body.strip()[:200]}"
            if status == 200:
                doc = json.loads(body)
                if doc["image"].rsplit(":", 1)[1] == tag:
                    seen.add(doc["instance"])
                    if seen >= instances:
                        return
        except (OSError, ValueError, KeyError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    raise RuntimeError(f"the proxy did not serve tag {tag} from {sorted(instances)} within {timeout:.0f}s "
                       f"(seen {sorted(seen)}; last: {last})")


def under_load(vm: VM, ca_file: str, clients: int) -> Load:
    return Load(vm.https_port, HOST, "/", ca_file, clients=clients, max_seconds=900, pause=0.2)


def measure(log: SshdLog, tool: str, name: str, apply, load: Load | None = None) -> Phase:
    """Run APPLY (which returns what it ran, in words) once, timed, its SSH use counted on the
    VM's sshd log and, with LOAD, under that load. Each phase is printed (stderr) as it ends, so
    a run cut short still shows what it measured."""
    mark = log.mark()
    with load or contextlib.nullcontext():
        started = time.monotonic()
        steps = apply()
        seconds = time.monotonic() - started
    log.user = ADMIN          # both tools made the admin user; root may not log in after a deploy
    count = log.count(mark)
    phase = Phase(name, round(seconds, 1), count.connections, count.sessions, steps,
                  load.result.sent if load else None, load.result.lost if load else None)
    print(f"bench: {tool} {json.dumps(asdict(phase))}", file=sys.stderr, flush=True)
    return phase


# -- outpost --------------------------------------------------------------------------------------
def bench_outpost(vm: VM, workdir: Path, clients: int) -> tuple[list[Phase], Deployment]:
    log = SshdLog(vm, "root")
    log.enable_verbose()
    deployment = Deployment(vm, workdir, stack="bench", project_dir=BENCH)
    replicas = {str(p) for p in deployment.services["hello"]["replicas"]}

    def apply() -> str:
        steps = deployment.up()
        return f"{len(steps)} commands ({', '.join(s.name for s in steps) or 'none'})"

    phases = [measure(log, "outpost", "fresh", apply)]
    ca_file = deployment.ca_file()
    served(vm.https_port, ca_file, "1", replicas)
    phases.append(measure(log, "outpost", "no change", apply))
    deployment.services["hello"]["container"]["tag"] = "2"
    phases.append(measure(log, "outpost", "tag", apply, under_load(vm, ca_file, clients)))
    served(vm.https_port, ca_file, "2", replicas, timeout=60)
    return phases, deployment


def stack_certificate(deployment: Deployment) -> dict[str, str]:
    """The stack's certificate for HOST (chain and key) as outpost's program issued it (read from
    the stack's state), so the playbook serves the same one and one CA file verifies both proxies."""
    state = deployment.cli.resources(show_secrets=True)
    request = next(r for r in state if r["type"] == "tls:index/certRequest:CertRequest"
                   and HOST in (r["inputs"].get("dnsNames") or []))
    signed = next(r for r in state if r["type"] == "tls:index/locallySignedCert:LocallySignedCert"
                  and r["inputs"]["certRequestPem"] == request["outputs"]["certRequestPem"])
    return {"tls_cert": signed["outputs"]["certPem"] + signed["inputs"]["caCertPem"],
            "tls_key": request["inputs"]["privateKeyPem"]}


# -- Ansible --------------------------------------------------------------------------------------
class Playbook:
    """ansible-playbook site.yml against one VM: an inventory with the pinned host key, secrets in
    a 0600 extra-vars file, a fresh ControlPersist directory per run (closed after it, so no run
    reuses another's connection)."""

    def __init__(self, vm: VM, workdir: Path, secrets: dict[str, str]):
        self.vm, self.workdir, self.runs = vm, workdir, 0
        self.inventory = workdir / "inventory.yml"
        ssh_args = (f"-o UserKnownHostsFile={vm.known_hosts_path} -o GlobalKnownHostsFile=/dev/null "
                    "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o HostKeyAlgorithms=ssh-ed25519")
        self.inventory.write_text(yaml.safe_dump({"bench": {"hosts": {"vm": {
            "ansible_host": "127.0.0.1", "ansible_port": vm.ssh_port, "ansible_user": "admin",
            "ansible_ssh_private_key_file": vm.private_key_path, "ansible_ssh_common_args": ssh_args,
            "admin_ssh_keys": [vm.public_key]}}}}))
        self.secrets = workdir / "secrets.yml"
        fd = os.open(self.secrets, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            yaml.safe_dump(secrets, out)

    def run(self, *extra: str) -> dict[str, int]:
        self.runs += 1
        control = Path(tempfile.mkdtemp(prefix="ocp-"))     # short: a unix socket path lives here
        env = {**os.environ, "ANSIBLE_CONFIG": str(PLAYBOOK.parent / "ansible.cfg"),
               "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_FORCE_COLOR": "0"}
        argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(self.inventory),
                str(PLAYBOOK), "-e", f"@{self.secrets}", *extra]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=PLAYBOOK.parent,
                                    timeout=1800, stdin=subprocess.DEVNULL)
        finally:
            for socket_path in control.iterdir():
                subprocess.run(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "vm"],
                               capture_output=True, timeout=30)
            shutil.rmtree(control, ignore_errors=True)
        output = result.stdout + result.stderr
        (self.workdir / f"ansible-run-{self.runs}.log").write_text(output)
        recap = RECAP.search(result.stdout)
        if result.returncode != 0 or recap is None:
            raise RuntimeError(f"ansible-playbook {' '.join(extra)} exited {result.returncode}:\n{output[-4000:]}")
        ok, changed, _unreachable, _failed = (int(g) for g in recap.groups())
        return {"ok": ok, "changed": changed}


def bench_ansible(vm: VM, workdir: Path, clients: int, secrets: dict[str, str], ca_file: str,
                  replicas: set[str]) -> list[Phase]:
    log = SshdLog(vm, "root")
    log.enable_verbose()
    playbook = Playbook(vm, workdir, secrets)
    recaps = []

    def apply(*extra: str):
        def run() -> str:
            recap = playbook.run(*extra)
            recaps.append(recap)
            return f"{recap['ok']} tasks, {recap['changed']} changed"
        return run

    phases = [measure(log, "Ansible", "fresh", apply("-e", "ansible_user=root"))]
    served(vm.https_port, ca_file, "1", replicas)
    phases.append(measure(log, "Ansible", "no change", apply()))
    if recaps[-1]["changed"]:
        raise RuntimeError(f"the playbook is not idempotent: its second run changed something "
                           f"(see {workdir}/ansible-run-2.log)")
    phases.append(measure(log, "Ansible", "tag", apply("-e", "hello_tag=2"), under_load(vm, ca_file, clients)))
    served(vm.https_port, ca_file, "2", replicas, timeout=60)
    return phases


# -- program evaluation at scale --------------------------------------------------------------------
def eval_scale_rows(sizes: str = "1,10,50,200") -> dict:
    """bench/eval_scale.py --json: {"rows": [...], "verdict": "..."}."""
    out = subprocess.run([sys.executable, str(BENCH / "eval_scale.py"), "--json", "--sizes", sizes],
                         capture_output=True, text=True, cwd=ROOT, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"bench/eval_scale.py --json exited {out.returncode}: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


# -- the table --------------------------------------------------------------------------------------
def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None:
        return ""
    if theirs == 0:
        return "=" if ours == 0 else "n/a"
    return f"{ours / theirs:.2f}"


def _cell(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def table(outpost: list[Phase], ansible: list[Phase], accel: str, evals: dict | None) -> str:
    """The comparison (a tool left out shows "-") and the program-evaluation rows."""
    titles = {"fresh": "fresh deploy", "no change": "re-apply, no change", "tag": "image tag 1→2 under load"}
    ours_by, theirs_by = {p.name: p for p in outpost}, {p.name: p for p in ansible}
    lines = [f"outpost vs Ansible: bench/Pulumi.bench.yaml and bench/ansible/site.yml, one fresh VM "
             f"each (qemu {accel})", "",
             f"{'phase':<26} {'measure':<16} {'outpost':>9} {'Ansible':>9} {'outpost/Ansible':>16}"]
    for name, title in titles.items():
        ours, theirs = ours_by.get(name), theirs_by.get(name)
        if ours is None and theirs is None:
            continue
        measures = [("wall seconds", "seconds", "{:.1f}"), ("SSH connections", "connections", "{}"),
                    ("SSH sessions", "sessions", "{}")]
        if name == "tag":
            measures += [("requests sent", "sent", "{}"), ("requests lost", "lost", "{}")]
        for i, (label, attr, fmt) in enumerate(measures):
            a, b = getattr(ours, attr, None), getattr(theirs, attr, None)
            lines.append(f"{title if i == 0 else '':<26} {label:<16} {_cell(a, fmt):>9} {_cell(b, fmt):>9} "
                         f"{ratio(a, b):>16}")
        ran = [f"{tool} {p.steps}" for tool, p in (("outpost", ours), ("Ansible", theirs)) if p]
        lines.append(f"{'':<26} ran: {'; '.join(ran)}")
    if evals:
        lines += ["", *eval_scale.table(evals["rows"]), evals["verdict"]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="HTTPS clients during the tag change")
    parser.add_argument("--skip-eval", action="store_true", help="leave out bench/eval_scale.py")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR and keep it (ansible-playbook logs, inventories)")
    parser.add_argument("--tools", default="outpost,ansible", help="which tools to measure (default: both)")
    args = parser.parse_args()
    tools = set(args.tools.split(","))
    if not tools <= {"outpost", "ansible"}:
        parser.error(f"--tools: unknown {', '.join(sorted(tools - {'outpost', 'ansible'}))}")

    evals = None if args.skip_eval else eval_scale_rows()
    with contextlib.ExitStack() as stack:
        if args.keep:
            work = args.keep.resolve()
            work.mkdir(parents=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="outpost-bench-")))
        (work / "outpost").mkdir()
        (work / "ansible").mkdir()
        outpost = ansible = []
        deployment = None
        if "outpost" in tools:
            with VM.start(state_dir=work / "vm-outpost") as vm:
                accel = vm.info.get("accel", "")
                outpost, deployment = bench_outpost(vm, work / "outpost", args.clients)
        if "ansible" in tools:
            with VM.start(state_dir=work / "vm-ansible") as vm:
                accel = vm.info.get("accel", "")
                if deployment is None:         # only the program's certificate is needed
                    deployment = Deployment(vm, work / "outpost", stack="bench", project_dir=BENCH)
                    deployment.program()
                secrets = {"demo_token": DEMO_SECRETS["demo_token"], **stack_certificate(deployment)}
                replicas = {str(p) for p in deployment.services["hello"]["replicas"]}
                ansible = bench_ansible(vm, work / "ansible", args.clients, secrets, deployment.ca_file(), replicas)
    if args.json:                      # first: the figures outlive any fault in the table
        args.json.write_text(json.dumps({"accel": accel, "outpost": [asdict(p) for p in outpost],
                                         "ansible": [asdict(p) for p in ansible], "eval_scale": evals},
                                        indent=2) + "\n")
    print(table(outpost, ansible, accel, evals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
