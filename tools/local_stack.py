"""`make up` and `make down`: the demo environment (Pulumi.local.yaml) on the local throwaway VM,
deployed by the real Pulumi CLI from .engine/bin (`make engine`).

Everything machine-specific stays under .vm/, never in the repository's files:
- the state: a file backend, .vm/pulumi-state;
- the stack config the CLI reads and writes: .vm/Pulumi.local.yaml (`--config-file`), laid anew
  from the repository's Pulumi.local.yaml on every run; only its encryption salt and the encrypted
  secrets are carried over, so a second `make up` finds nothing to change;
- the passphrase that encrypts the stack's secrets: .vm/passphrase (0600, random, made once) and
  handed to the CLI as PULUMI_CONFIG_PASSPHRASE_FILE;
- the demo's generated secrets: made once, kept encrypted in that config.
The VM's host key and the deploy key come from the VM (tools/vm.py); the key goes in on stdin only.
The demo's bucket lives in moto's S3 server, started here on the address of the bucket's `endpoint`
(127.0.0.1:9000; in memory, pid in .vm/s3.pid, log in .vm/s3.log) and stopped by `make down`; the
VM reaches it as the bucket's `host_endpoint` through qemu's guest forward.
Failures end in one paragraph on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import socket
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".vm"
STACK = "local"
ENGINE = ROOT / "tools" / "engine" / "build.py"
GENERATED_SECRETS = ("demo_token", "s3_key_id", "s3_secret", "restic_password")
DEMO_URL = ("https://hello.outpost.localhost:8443 "
            "(curl -k --resolve hello.outpost.localhost:8443:127.0.0.1 https://hello.outpost.localhost:8443/)")
VM_PORTS = ("--ssh-port", "2222", "--http-port", "8080", "--https-port", "8443")


class Failed(Exception):
    pass


def cli_env(state: Path = STATE) -> dict:
    env = {**os.environ, "PATH": f"{ROOT / '.engine' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "PULUMI_BACKEND_URL": f"file://{state / 'pulumi-state'}",
           "PULUMI_CONFIG_PASSPHRASE_FILE": str(state / "passphrase"),
           "PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true"}
    env.pop("PULUMI_CONFIG_PASSPHRASE", None)  # the file is the one source of the passphrase
    return env


def pulumi(args: list[str], state: Path = STATE, stdin: str | None = None, capture: bool = True,
           check: bool = True, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    argv = ["pulumi", *args, "--stack", STACK, "--non-interactive"]
    if args[0] in ("config", "up", "preview", "destroy", "refresh"):
        argv += ["--config-file", str(state / f"Pulumi.{STACK}.yaml")]
    result = subprocess.run(argv, cwd=cwd, env=cli_env(state), input=stdin, text=True,
                            capture_output=capture, stdin=None if stdin is not None else subprocess.DEVNULL)
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-3:] if capture else []
        raise Failed(f"`pulumi {' '.join(args)}` exited {result.returncode}" + (f": {' '.join(detail)}" if detail else ""))
    return result


def ensure_passphrase(state: Path) -> None:
    path = state / "passphrase"
    if path.exists():
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(base64.b64encode(secrets.token_bytes(24)).decode() + "\n")


def stack_file(state: Path) -> Path:
    return state / "pulumi-state" / ".pulumi" / "stacks" / "outpost" / f"{STACK}.json"


def state_salt(state: Path) -> str:
    """The passphrase salt the stack was created with, as its checkpoint records it."""
    checkpoint = json.loads(stack_file(state).read_text()).get("checkpoint") or {}
    provider = (checkpoint.get("latest") or {}).get("secrets_providers") or {}
    return (provider.get("state") or {}).get("salt", "")


def create_stack(state: Path) -> None:
    """`pulumi stack init` writes the new salt into the project's stack file; run it from a scratch
    copy of the project so the repository's Pulumi.local.yaml is never touched."""
    with tempfile.TemporaryDirectory(prefix="outpost-stack-") as scratch:
        shutil.copyfile(ROOT / "Pulumi.yaml", Path(scratch) / "Pulumi.yaml")
        pulumi(["stack", "init", "--secrets-provider", "passphrase"], state, cwd=Path(scratch))


def lay_config(state: Path) -> None:
    """.vm/Pulumi.local.yaml = the repository's file, plus the salt and the secrets made here.
    The repository's placeholder secrets are dropped: only values encrypted here can be read."""
    wanted = yaml.safe_load((ROOT / f"Pulumi.{STACK}.yaml").read_text())
    target = state / f"Pulumi.{STACK}.yaml"
    kept = (yaml.safe_load(target.read_text()) if target.exists() else None) or {}
    config = dict(wanted.get("config") or {})
    config["outpost:secrets"] = dict((kept.get("config") or {}).get("outpost:secrets") or {})
    laid = {"encryptionsalt": kept.get("encryptionsalt") or state_salt(state), "config": config}
    target.write_text("# Laid by tools/local_stack.py from Pulumi.local.yaml: edit that file, not this one.\n"
                      + yaml.safe_dump(laid, sort_keys=False))


def prepare(state: Path = STATE) -> None:
    """The file backend, the passphrase, the stack and its generated secrets (CLI only, no VM)."""
    state.mkdir(exist_ok=True)
    (state / "pulumi-state").mkdir(exist_ok=True)
    ensure_passphrase(state)
    if not stack_file(state).exists():
        create_stack(state)
    lay_config(state)
    for name in GENERATED_SECRETS:
        if pulumi(["config", "get", "--path", f"outpost:secrets.{name}"], state, check=False).returncode != 0:
            pulumi(["config", "set", "--secret", "--path", f"outpost:secrets.{name}"], state,
                   stdin=secrets.token_urlsafe(24))


def engine_complete() -> None:
    result = subprocess.run([sys.executable, str(ENGINE), "--check", "--quiet"], cwd=ROOT,
                            capture_output=True, text=True)
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "make engine failed"
        raise Failed(last.removeprefix("make engine: "))


def pin_vm(state: Path) -> None:
    info = json.loads((state / "vm.json").read_text())
    pulumi(["config", "set", "--path", "outpost:hosts.vm.host_key", info["host_key"]], state)
    pulumi(["config", "set", "--path", "outpost:admin.ssh_keys[0]", info["public_key"]], state)
    pulumi(["config", "set", "--secret", "--path", "outpost:secrets.deploy_key"], state,
           stdin=Path(info["private_key_path"]).read_text())


def s3_port() -> int:
    """The port of the local stack's bucket endpoint, which must be on 127.0.0.1."""
    buckets = yaml.safe_load((ROOT / f"Pulumi.{STACK}.yaml").read_text())["config"].get("outpost:buckets") or {}
    ports = set()
    for name, bucket in buckets.items():
        parts = urlsplit(bucket["endpoint"])
        if parts.hostname != "127.0.0.1" or not parts.port:
            raise Failed(f"Pulumi.{STACK}.yaml: outpost:buckets.{name}.endpoint must be http://127.0.0.1:PORT "
                         "(make up serves the demo's buckets there)")
        ports.add(parts.port)
    if len(ports) != 1:
        raise Failed(f"Pulumi.{STACK}.yaml: the demo's buckets need one endpoint, not {sorted(ports)}")
    return ports.pop()


def _pid_alive(pidfile: Path) -> int | None:
    """The pid in PIDFILE while that process runs (an exited one not yet reaped counts as gone)."""
    try:
        pid = int(pidfile.read_text().strip())
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None
    return None if state in ("Z", "X") else pid


def start_s3(state: Path, port: int, timeout: float = 60) -> None:
    """moto's S3 server on 127.0.0.1:PORT unless the one started before still runs."""
    pidfile = state / "s3.pid"
    if _pid_alive(pidfile):
        return
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise Failed(f"127.0.0.1:{port} is taken: the local stack's bucket endpoint needs it for its S3 "
                         "server (stop what listens there, or change the endpoint and host_endpoint's port)") from None
    moto = Path(sys.executable).parent / "moto_server"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    with open(state / "s3.log", "ab") as log:
        server = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=log, env=env, start_new_session=True)
    pidfile.write_text(f"{server.pid}\n")
    deadline = time.monotonic() + timeout
    while True:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200:
                return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            stop_s3(state)
            raise Failed(f"the demo's S3 server did not answer on 127.0.0.1:{port} (see {state / 's3.log'})")
        time.sleep(0.3)


def stop_s3(state: Path, timeout: float = 15) -> None:
    pidfile = state / "s3.pid"
    pid = _pid_alive(pidfile)
    if pid:
        os.kill(pid, 15)
        deadline = time.monotonic() + timeout
        while _pid_alive(pidfile) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _pid_alive(pidfile):
            os.kill(pid, 9)
    pidfile.unlink(missing_ok=True)


def up(state: Path = STATE) -> None:
    if not (ROOT / ".engine" / "bin" / "pulumi").exists():
        raise Failed("no Pulumi CLI in .engine/bin: run `make engine` and read what it says")
    prepare(state)
    engine_complete()
    port = s3_port()
    start_s3(state, port)
    vm = subprocess.run([sys.executable, str(ROOT / "tools" / "vm.py"), "start", "--state-dir", str(state),
                         *VM_PORTS, "--guestfwd-port", str(port)], cwd=ROOT)
    if vm.returncode != 0:
        raise Failed("the local VM did not start (tools/vm.py said why above)")
    pin_vm(state)
    pulumi(["up", "--yes", "--skip-preview"], state, capture=False)
    print(f"outpost: the demo answers on {DEMO_URL}")


def down(state: Path = STATE) -> None:
    if stack_file(state).exists():
        engine_complete()
        pulumi(["destroy", "--yes", "--skip-preview"], state, capture=False)
    subprocess.run([sys.executable, str(ROOT / "tools" / "vm.py"), "stop", "--state-dir", str(state)], cwd=ROOT)
    stop_s3(state)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="make up / make down: the demo stack on the local VM")
    parser.add_argument("action", choices=("up", "down", "prepare"))
    parser.add_argument("--state-dir", type=Path, default=STATE)
    args = parser.parse_args(argv)
    try:
        {"up": up, "down": down, "prepare": prepare}[args.action](args.state_dir.resolve())
    except Failed as error:
        print(f"make {args.action}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
