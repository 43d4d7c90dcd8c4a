"""The stack and the plumbing of tests/e2e/test_zero_loss.py: the hello services behind a proxy,
certificates from a throwaway CA, and a driver that runs a list of agent steps inside the VM in
one SSH session (the operations run back to back, the agent started once per step).
"""

from __future__ import annotations

import datetime
import json
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components.load import parse
from components.render import render_host
from components.render.agent import AGENT_PATH as AGENT
from tests.conftest import ROOT
from tests.e2e.load import ClientLoad

DRIVER = "/root/zero-loss-driver.py"
DOMAIN = "outpost.localhost"
ZL, BG = f"zl.{DOMAIN}", f"bg.{DOMAIN}"

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
