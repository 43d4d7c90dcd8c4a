"""Deploys lose nothing, not even a POST: blue-green switches, route changes and rolling restarts
on Caddy, HAProxy and nginx, each under a load of real-behaving clients (tests/e2e/load.py
`ClientLoad`), on one Debian 13 VM.

The manifests come from the render layer and go to the real agent in the VM over SSH, the way
tests/e2e/test_backup_restore.py's `apply()` does it: the same code path as a deploy, minus
Pulumi. Two native services run files/demo/hello.py: `zl` (rolling, replicas 8100/8101) and `zlbg`
(blue-green, slots 8200/8201), each keeping the POSTs it gets in a database its replicas share.
For each proxy, under one load that runs through all three operations:

* switch: ROUNDS blue-green switches: every fourth a deploy of a new version (the idle slot,
  which served until the switch before, restarts, then the switch), the others
  `outpost-apply switch zlbg` (a switch back, as `make rollback` does); after each, a fresh
  connection to the proxy's stable address reaches the slot the agent says is live;
* route change: ROUNDS applies of the proxy manifest that add or drop a route, each one
  validated and reloaded on the host;
* rolling restart: ROUNDS rolling restarts of `zl`'s two replicas: every fifth the apply of a new
  version, the others `outpost-apply restart svc-zl` (the same rollout without new files, as a
  job's `after_success` runs it).

The operations run in a tight loop inside the VM (one SSH session per operation kind, the agent
started once per step). Afterwards each app's store must hold every POST a client was told was
kept, once. The table proxy x operation x {requests, lost, retried, duplicated, slowest} goes to
the session's report (build/e2e-report.md) and is printed; every cell must show 0 lost and 0
duplicated. `OUTPOST_ZERO_LOSS_ROUNDS` lowers ROUNDS for a quick local try.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components.config import parse
from components.render import render_host
from components.render.agent import AGENT_PATH as AGENT, agent_zipapp
from tests.conftest import ROOT
from tests.e2e.load import ClientLoad, Target, https_get
from tests.e2e.report import record

pytestmark = pytest.mark.e2e

DRIVER = "/root/zero-loss-driver.py"
ROUNDS = int(os.environ.get("OUTPOST_ZERO_LOSS_ROUNDS", "20"))
KINDS = ("caddy", "haproxy", "nginx")
OPERATIONS = ("switch", "route change", "rolling restart")
DOMAIN = "outpost.localhost"
ZL, BG = f"zl.{DOMAIN}", f"bg.{DOMAIN}"
TABLE: list[tuple[str, str, dict]] = []   # (proxy, operation, figures) for the printed table

# Runs in the VM: the steps (JSON on stdin) one after the other, each a run of the agent; stops
# at the first failure; prints one JSON line per step.
DRIVER_SOURCE = r'''
import json, subprocess, sys, time, urllib.request
AGENT = sys.argv[1]
for step in json.load(sys.stdin):
    started = time.monotonic()
    if step["op"] == "apply":
        argv, stdin = ["python3", AGENT, "apply", step["name"], step["token"]], step["manifest"]
    elif step["op"] == "restart":
        argv, stdin = ["python3", AGENT, "restart", step["name"]], ""
    else:
        argv, stdin = ["python3", AGENT, "switch", step["group"]], ""
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=600)
    result = {"step": step.get("label", step["op"]), "code": done.returncode,
              "seconds": round(time.monotonic() - started, 2),
              "summary": (done.stdout.strip().splitlines() or [""])[-1]}
    if done.returncode:
        result["stderr"] = done.stderr[-3000:]
    elif step.get("check") == "bluegreen":
        live = json.load(open("/var/lib/outpost/bluegreen/zlbg.json"))["port"]
        with urllib.request.urlopen("http://127.0.2.1:8200/", timeout=10) as answer:
            result["stable_address_reaches"] = json.load(answer)["port"]
        result["live"] = int(live)
    print(json.dumps(result), flush=True)
    if done.returncode or result.get("stable_address_reaches", 0) != result.get("live", 0):
        sys.exit(1)
'''


# --- certificates: a stack CA and one certificate per hostname ----------------------------------

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def certificates() -> tuple[str, dict[str, str]]:
    """(CA certificate PEM, secrets {tls:HOST.crt, tls:HOST.key}) as the resource layer fills them."""
    now = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("outpost zero-loss CA")).issuer_name(_name("outpost zero-loss CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now)
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    secrets = {}
    for serial, host in enumerate((ZL, BG), start=2):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name(host)).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(serial).not_valid_before(now)
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        secrets[f"tls:{host}.crt"] = cert.public_bytes(serialization.Encoding.PEM).decode()
        secrets[f"tls:{host}.key"] = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()).decode()
    return ca.public_bytes(serialization.Encoding.PEM).decode(), secrets


# --- the stack ------------------------------------------------------------------------------------

def hello_service(ports: list[int], deploy: str, version: int, state: str) -> dict:
    return {"hosts": ["vm"],
            "process": {"exec": "/usr/bin/python3 /opt/zl/hello.py --port %i",
                        "artifacts": {"/opt/zl/hello.py": "files/demo/hello.py"}},
            "replicas": ports, "deploy": deploy, "state_directory": state,
            "env": {"OUTPOST_IMAGE": f"{state}:{version}"},
            "health": {"path": "/ready", "interval": "1s", "timeout": "3s", "retries": 60}}


def manifests(vm, kind: str, zl: int = 1, bg: int = 1, extra_route: bool = False) -> dict:
    routes = [{"host": ZL, "service": "zl"}, {"host": BG, "service": "zlbg"}]
    if extra_route:
        routes.append({"host": ZL, "path": "/extra", "service": "zlbg"})
    config = {
        "outpost:domain": DOMAIN,
        "outpost:purge": True,
        "outpost:admin": {"user": "admin", "ssh_keys": [vm.public_key], "private_key": "deploy_key"},
        "outpost:hosts": {"vm": {"provider": "static", "address": "127.0.0.1", "port": vm.ssh_port,
                                 "host_key": vm.host_key}},
        "outpost:services": {"zl": hello_service([8100, 8101], "rolling", zl, "zl"),
                             "zlbg": hello_service([8200, 8201], "blue-green", bg, "zlbg")},
        "outpost:routes": routes,
        "outpost:proxy": {"kind": kind, "tls": "internal"},
        "outpost:secrets": {"deploy_key": None},
    }
    return {m.name: m for m in render_host(parse(config, "zero-loss"), "vm")}


def apply_step(manifest, secrets: dict, label: str, check: str | None = None) -> dict:
    step = {"op": "apply", "name": manifest.name, "token": manifest.digest(),
            "manifest": manifest.encode(secrets), "label": label}
    if check:
        step["check"] = check
    return step


def run_steps(vm, steps: list[dict], timeout: float) -> list[dict]:
    done = vm.ssh(f"python3 {DRIVER} {AGENT}", input=json.dumps(steps).encode(), check=False, timeout=timeout)
    results = [json.loads(line) for line in done.stdout.decode().splitlines() if line.startswith("{")]
    assert done.returncode == 0 and len(results) == len(steps), (
        f"exit {done.returncode}; last step: {results[-1:] if results else None}\n{done.stderr.decode()[-2000:]}")
    return results


# --- the VM ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def zvm(tmp_path_factory):
    from tools.vm import VM
    started = time.monotonic()
    machine = VM.start(state_dir=tmp_path_factory.mktemp("zero-loss-vm"), timeout=900)
    record("zero loss: boot VM to SSH", time.monotonic() - started, machine.info.get("accel", ""))
    try:
        machine.ssh(f"install -d -m 0755 {Path(AGENT).parent} && cat > {AGENT}", input=agent_zipapp())
        machine.ssh(f"cat > {DRIVER}", input=DRIVER_SOURCE.encode())
        yield machine
    finally:
        machine.stop()


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    ca, secrets = certificates()
    path = tmp_path_factory.mktemp("zero-loss-ca") / "ca.pem"
    path.write_text(ca)
    return str(path), secrets


def wait_for(check, what: str, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            result = check()
            if result:
                return result
        except OSError as error:     # the proxy is (re)starting
            last = error
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s (last error: {last})")
        time.sleep(interval)


def keep_journal(vm, kind: str, since: float, load: ClientLoad) -> None:
    """A failure's story in build/zero-loss-<kind>.log: every failure the clients saw (with the
    time) and the proxy's and services' journal since the deploy."""
    seconds = int(time.monotonic() - since) + 5
    done = vm.ssh(f"journalctl --no-pager -o short-unix --since=-{seconds}s -u {kind}.service -u 'zl@*' -u 'zlbg@*'",
                  check=False, timeout=300)
    events = [f"{t} {phase}: {method} {host} {outcome}: {detail}" for phase, tally in load.tallies.items()
              for t, method, host, outcome, detail in tally.events]
    path = ROOT / "build" / f"zero-loss-{kind}.log"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(["# failures the clients saw", *sorted(events), "", "# journal",
                                done.stdout.decode(errors="replace")]))
    print(f"failures and the journal: {path}")


def figures(tally) -> dict:
    return {"requests": tally.requests, "lost": tally.lost, "retried": tally.retried,
            "duplicated": tally.duplicated, "slowest": round(tally.slowest, 2), "gets": tally.gets,
            "posts": tally.posts, "idle closes": tally.reconnects, "redelivered": tally.redelivered,
            "failures": dict(tally.failures)}


@pytest.mark.parametrize("kind", KINDS)
def test_no_request_is_lost_through_switches_route_changes_and_rolling_restarts(zvm, tls, kind):
    ca_file, secrets = tls
    first = manifests(zvm, kind)
    started = time.monotonic()
    run_steps(zvm, [apply_step(first[name], secrets, f"deploy {name}")
                    for name in ("tls", "proxy", "svc-zl", "svc-zlbg")], timeout=1200)
    for host in (ZL, BG):
        wait_for(lambda: https_get(zvm.https_port, host, "/", ca_file, timeout=10)[0] == 200,
                 f"{host} answers through {kind}", 120)
    record(f"zero loss: deploy behind {kind}", time.monotonic() - started)

    # the operations, rendered up front: versions count up across the three proxies' runs
    base = KINDS.index(kind) * 100
    switch_steps = []
    for i in range(ROUNDS):
        if i % 4 == 0:
            m = manifests(zvm, kind, bg=base + i + 2)["svc-zlbg"]
            switch_steps.append(apply_step(m, secrets, f"deploy zlbg v{base + i + 2}", check="bluegreen"))
        else:
            switch_steps.append({"op": "switch", "group": "zlbg", "label": "switch back", "check": "bluegreen"})
    route_steps = [apply_step(manifests(zvm, kind, extra_route=i % 2 == 0)["proxy"], secrets,
                              f"{'add' if i % 2 == 0 else 'drop'} route /extra") for i in range(ROUNDS)]
    if ROUNDS % 2:   # end where it began, so the next proxy's deploy starts from the same routes
        route_steps.append(apply_step(first["proxy"], secrets, "drop route /extra"))
    rolling_steps = [apply_step(manifests(zvm, kind, zl=base + i + 2)["svc-zl"], secrets, f"deploy zl v{base + i + 2}")
                     if i % 5 == 0 else {"op": "restart", "name": "svc-zl", "label": "restart svc-zl"}
                     for i in range(ROUNDS)]
    # the live blue-green slot stays where the last step left it: the next deploy starts there
    targets = [Target(ZL), Target(BG)]
    results = {}
    with ClientLoad(zvm.https_port, targets, ca_file, clients=4, connections=2, post_every=3, pause=0.2,
                    max_seconds=1800) as load:
        wait_for(lambda: load.tallies.get("between") and load.tallies["between"].requests >= 20,
                 "the load is under way", 60)
        try:
            for operation, steps in (("switch", switch_steps), ("route change", route_steps),
                                     ("rolling restart", rolling_steps)):
                with load.phase(operation):
                    t0 = time.monotonic()
                    results[operation] = (run_steps(zvm, steps, timeout=1800), time.monotonic() - t0)
                    print(f"{kind} {operation}: " + ", ".join(f"{r['step']} {r['seconds']}s" for r in results[operation][0]))
        except BaseException:
            keep_journal(zvm, kind, started, load)
            raise
    load.verify_posts(lambda target: json.loads(https_get(zvm.https_port, target.host, "/posts", ca_file)[1]))
    if any(tally.lost for tally in load.tallies.values()):
        keep_journal(zvm, kind, started, load)

    for operation in OPERATIONS:
        steps, seconds = results[operation]
        tally = load.tallies[operation]
        row = figures(tally)
        TABLE.append((kind, operation, row))
        record(f"zero loss: {kind}, {len(steps)} x {operation} under load", seconds,
               f"{row['requests']} requests ({row['gets']} GET, {row['posts']} POST), {row['lost']} lost, "
               f"{row['retried']} retried, {row['duplicated']} duplicated, slowest {row['slowest']} s; "
               f"idle closes {row['idle closes']}, redelivered {row['redelivered']}, failures {row['failures']}")
    print_table()

    switched = [r for r in results["switch"][0]]
    assert all(r["stable_address_reaches"] == r["live"] for r in switched), switched
    assert len({r["live"] for r in switched}) == 2, "the switches moved between both slots"
    assert all("zlbg(blue-green)" in r["summary"] for r in switched if r["step"].startswith("deploy")), switched
    assert all("proxy(reload)" in r["summary"] for r in results["route change"][0]), results["route change"][0]
    assert all("zl(rolling)" in r["summary"] for r in results["rolling restart"][0]), results["rolling restart"][0]
    assert len(results["rolling restart"][0]) == ROUNDS
    for operation in OPERATIONS:
        tally = load.tallies[operation]
        assert tally.verified and tally.gets > 0 and tally.posts > 0, (operation, figures(tally))
        assert tally.lost == 0 and tally.duplicated == 0, (kind, operation, figures(tally))
    assert load.tallies["between"].lost == 0, figures(load.tallies["between"])


def print_table() -> None:
    lines = ["", "| proxy | operation | requests | lost | retried | duplicated | slowest (s) | idle closes |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {kind} | {op} | {r['requests']} | {r['lost']} | {r['retried']} | {r['duplicated']} | "
              f"{r['slowest']} | {r['idle closes']} |" for kind, op, r in TABLE]
    print("\n".join(lines))
