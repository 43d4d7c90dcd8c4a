"""The disaster drill: the local stack's host burns and a new one comes back with its data on `up`.

1. A fresh VM gets the local stack (Pulumi.local.yaml): the `wsgi` demo keeps notes twice, as rows
   in /var/lib/wsgi/notes.db (litestream `wsgi-db`, continuous) and as files in
   /var/lib/wsgi/files/ (restic `wsgi-state`), both into moto's S3 server on the host.
2. Notes are written through the proxy; a restic backup runs (what the daily timer does); more
   notes are written, one every ~0.4 s, until
3. the VM is killed (SIGKILL to qemu: no shutdown, no `pulumi destroy`).
4. A fresh VM (new disk, a new SSH host key, another address) replaces it. The operator pins the new
   key in the stack's config, as they would for a new server; the old pin is refused. Then the same
   stack (the same Pulumi state) runs `pulumi up` again.

Measured into build/e2e-report.md: RTO, seconds from the start of that `up` until the service
answers with the old notes; RPO for litestream, seconds between the last acknowledged write that came
back and the kill (with the count of acknowledged writes lost); RPO for restic, seconds between the
snapshot and the kill (everything written since is gone from the files; with the daily schedule that
is up to a day). Asserted: every note written before the snapshot is back in both forms, the rows
that came back are a prefix of those written, and both backups go on into the same repositories.

Its own S3 server and its own VMs (two boots, two deploys of the stack without its container
services): about 8 to 12 minutes under TCG.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from tests.e2e.backing import place_litestream, s3_server
from tests.e2e.deployment import DEMO_SECRETS, CommandFailed, Deployment
from tests.e2e.load import https_get
from tests.e2e.report import record
from tools.vm import VM

pytestmark = pytest.mark.e2e

HOST = "hello.outpost.localhost"
NOTES = "/wsgi/notes"
AFTER_BACKUP_WRITES = 20            # one every ~0.4 s after the snapshot, then the kill
BOOT_TIMEOUT = 900                  # TCG, maybe beside other work


def wait_for(check, what: str, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)


def listing(deployment: Deployment, ca: str) -> dict | None:
    status, body = https_get(deployment.vm.https_port, HOST, NOTES, ca, timeout=10)
    return json.loads(body) if status == 200 else None


def post(deployment: Deployment, ca: str, text: str) -> float:
    """Write one note; the time its 201 arrived."""
    status, body = https_get(deployment.vm.https_port, HOST, NOTES, ca, method="POST", body=text.encode(),
                             timeout=30)
    assert status == 201, (status, body, journal(deployment))
    return time.time()


def journal(deployment: Deployment) -> str:
    """What the app and the proxy logged lately (for a failure's message)."""
    return deployment.admin_ssh("sudo journalctl --no-pager -o short-monotonic -n 80 -u 'wsgi@*' -u caddy",
                                check=False, timeout=60).stdout


def rekey(vm: VM) -> str:
    """A new SSH host key for the new server, read over the connection that still trusts the image's
    key (an operator reads it from the provider's console); the VM's known_hosts pins it from now on."""
    vm.ssh("ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/new_host_key && "
           "mv -f /etc/ssh/new_host_key /etc/ssh/ssh_host_ed25519_key && "
           "mv -f /etc/ssh/new_host_key.pub /etc/ssh/ssh_host_ed25519_key.pub")
    key = " ".join(vm.ssh("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.decode().split()[:2])
    assert key != vm.host_key
    vm.ssh("systemctl restart ssh", check=False)   # the connection may drop with it
    vm.host_key = key
    vm.info["host_key"] = key
    vm.known_hosts_path.write_text(f"[127.0.0.1]:{vm.ssh_port} {key}\n")
    wait_for(lambda: vm.ssh("true", check=False, timeout=30).returncode == 0, "ssh with the new host key", 120, 2)
    return key


def point_at(deployment: Deployment, vm: VM) -> None:
    deployment.vm = vm
    deployment.config["outpost:hosts"]["vm"].update(address="127.0.0.1", port=vm.ssh_port, host_key=vm.host_key)


def without_containers(deployment: Deployment) -> None:
    """The local stack without its container services (`hello`, `hello-refresh`): they hold no
    data, and building their image in the VM twice would add minutes under TCG to a drill about
    data. Everything else (base setup, proxy, certificates, wsgi, both backups) stays."""
    config = deployment.config
    containers = {name for name, svc in config["outpost:services"].items() if "container" in svc}
    assert containers == {"hello", "hello-refresh"}, containers
    for name in containers:
        del config["outpost:services"][name]
    config["outpost:routes"] = [r for r in config["outpost:routes"] if r["service"] not in containers]


@pytest.fixture(scope="module")
def s3():
    with s3_server(DEMO_SECRETS["s3_key_id"], DEMO_SECRETS["s3_secret"]) as server:
        yield server


def test_a_burnt_host_comes_back_with_its_data(s3, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("drill")
    vms: list[VM] = []
    try:
        # --- 1. the host as it was --------------------------------------------------------------
        old = VM.start(state_dir=workdir / "old", guestfwd_port=s3.port, timeout=BOOT_TIMEOUT)
        vms.append(old)
        place_litestream(old)
        deployment = Deployment(old, workdir, s3_port=s3.port)
        without_containers(deployment)
        started = time.monotonic()
        deployment.up()
        record("drill: first deploy", time.monotonic() - started)
        ca = deployment.ca_file()
        # Warm up: the four socket-activated instances start on their first connections (seconds
        # each under TCG) while Caddy's active health checks run; writes begin once reads pass in a row.
        wait_for(lambda: all(listing(deployment, ca) for _ in range(8)), "the notes answer 8 times in a row", 300)

        # --- 2. data, a backup, more data ---------------------------------------------------------
        before = [f"before-backup-{i}" for i in range(5)]
        for text in before:
            post(deployment, ca, text)
        snapshot_started = time.time()
        deployment.admin_ssh("sudo systemctl start outpost-backup-wsgi-state.service", timeout=600)
        snapshot_done = time.time()
        wait_for(lambda: s3.keys("wsgi-db/"), "litestream's first upload of notes.db", 180)
        acked: list[tuple[str, float]] = []
        for i in range(AFTER_BACKUP_WRITES):
            text = f"after-backup-{i}"
            acked.append((text, post(deployment, ca, text)))
            time.sleep(0.4)

        # --- 3. the fire ---------------------------------------------------------------------------
        os.kill(old.pid, signal.SIGKILL)
        killed = time.time()
        old.kill()     # reaps qemu and removes its disk

        # --- 4. a new server, the same stack -------------------------------------------------------
        new = VM.start(state_dir=workdir / "new", guestfwd_port=s3.port, timeout=BOOT_TIMEOUT)
        vms.append(new)
        place_litestream(new)
        rekey(new)
        stale_key = old.host_key
        point_at(deployment, new)
        deployment.config["outpost:hosts"]["vm"]["host_key"] = stale_key
        with pytest.raises(CommandFailed, match="(?i)host key"):
            deployment.up()
        deployment.config["outpost:hosts"]["vm"]["host_key"] = new.host_key

        served: dict = {}

        def watch(stop: threading.Event, up_started: float) -> None:
            while not stop.is_set():
                try:
                    found = listing(deployment, ca)
                except (OSError, ValueError):
                    found = None
                if found and {r["text"] for r in found["rows"]} >= set(before):
                    served.update(found, seconds=time.monotonic() - up_started)
                    return
                stop.wait(2.0)

        stop = threading.Event()
        up_started = time.monotonic()
        watcher = threading.Thread(target=watch, args=(stop, up_started), daemon=True)
        watcher.start()
        try:
            steps = deployment.up()
            up_seconds = time.monotonic() - up_started
            watcher.join(timeout=300)
        finally:
            stop.set()
        assert served, "the new host never served the notes written before the backup"
        print("second up:", [(s.name, s.op) for s in steps])
        # The agent's output says what each restore did (the unit's journal lines, on stderr).
        restore_lines = [line.strip() for s in steps for line in s.stderr.splitlines()
                         if line.strip().startswith("outpost-restore-")]
        assert any("restored /var/lib/wsgi/files from snapshot" in line for line in restore_lines), restore_lines
        assert any("restored /var/lib/wsgi/notes.db" in line for line in restore_lines), restore_lines

        # --- what came back ----------------------------------------------------------------------------
        now = listing(deployment, ca)
        rows = [r["text"] for r in now["rows"]]
        written = before + [text for text, _ in acked]
        assert rows == written[:len(rows)], f"the rows that came back are not a prefix of those written: {rows}"
        assert set(before) <= set(rows)
        files = set(now["files"].values())
        assert set(before) <= files, f"restic's files: {sorted(files)}"
        assert not files & {text for text, _ in acked}, "files written after the snapshot can't be in it"
        lost = [(text, at) for text, at in acked if text not in rows]
        survived = [at for text, at in acked if text in rows]
        litestream_rpo = killed - (survived[-1] if survived else snapshot_done)
        restic_rpo = killed - snapshot_started
        record("drill: RTO (pulumi up → old data served)", served["seconds"],
               f"the whole up took {up_seconds:.0f}s: " + ", ".join(f"{s.name} {s.seconds:.0f}s" for s in steps))
        record("drill: what the restores said", 0, "; ".join(restore_lines))
        record("drill: RPO litestream (last write kept → kill)", litestream_rpo,
               f"{len(lost)} of {len(acked)} acknowledged writes after the snapshot lost (one every ~0.4 s)")
        record("drill: RPO restic (snapshot → kill)", restic_rpo,
               "files written after the snapshot are gone; on the daily schedule this is up to a day")

        # --- and the backups go on, into the same repositories ----------------------------------------
        snapshots_before = s3.keys("wsgi-state/snapshots/")
        assert len(snapshots_before) == 1, snapshots_before
        deployment.admin_ssh("sudo systemctl start outpost-backup-wsgi-state.service", timeout=600)
        assert len(s3.keys("wsgi-state/snapshots/")) == 2
        restarted = time.time()
        post(deployment, ca, "after-the-fire")
        wait_for(lambda: any(at >= restarted - 1 for at in s3.keys("wsgi-db/").values()),
                 "litestream uploads the new host's writes to the same replica", 180, 2)
    finally:
        for machine in vms:
            machine.kill()
