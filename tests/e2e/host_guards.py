"""Three guards of the last round, proven on the zero-loss suite's VM (tests/e2e/test_zero_loss.py
calls these; the restore's wait runs in the background while the proxies are tested).

(a) A rootless service whose data a `restore: auto` backup covers waits in an ExecStartPre= for
    the restore's marker. That wait counted against the container's start timeout (120 s), so a
    restore slower than two minutes failed the start. Here a restore is slowed on purpose
    (150 s) as a boot would run it, and the service must start once, without a restart.
(b) A service named like an account some hosts have (postgres, mysql) with no `user:` passes the
    config; the agent refuses one the host really has, naming `services.<name>.user`.
(c) A secret in a line a real validator rejects stays hidden although caddy prints it Go-quoted,
    and so do haproxy's, nginx's and sshd's quotes.
"""

from __future__ import annotations

import json
import shlex
import time

from components.load import parse
from components.render import render_host
from components.render.agent import AGENT_PATH as AGENT
from components.render.manifest import File, Manifest
from tests.e2e.report import record
from tests.e2e.zero_loss_stack import DOMAIN, apply_step, run_steps

GUARD_BUCKET = "zero-loss-guards"
GUARD_SECRETS = {"s3_key_id": "zl-key-id", "s3_secret": "zl-s3-secret-9q", "restic_password": "zl-restic-pw-4k"}
SLOW = 150          # seconds the restore is slowed by: more than a container's 120 s start timeout
MARKER = "/run/outpost/restore/waiter-data.done"
SLOWED = "/etc/systemd/system/outpost-restore-waiter-data.service.d/zz-slowed-on-purpose.conf"
USER_UNIT = "systemctl --user -M waiter@"


def sh(vm, command: str, timeout: float = 300, check: bool = True, input: bytes | None = None) -> str:
    done = vm.ssh(command, input=input, check=False, timeout=timeout)
    out = done.stdout.decode(errors="replace")
    if check and done.returncode != 0:
        raise AssertionError(f"`{command}` exited {done.returncode}:\n{out}\n{done.stderr.decode(errors='replace')}")
    return out


def wait_for(check, what: str, timeout: float, interval: float = 2.0):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)
    return result


def base_config(vm) -> dict:
    return {"outpost:domain": DOMAIN, "outpost:purge": True,
            "outpost:admin": {"user": "admin", "ssh_keys": [vm.public_key], "private_key": "deploy_key"},
            "outpost:hosts": {"vm": {"provider": "static", "address": "127.0.0.1", "port": vm.ssh_port,
                                     "host_key": vm.host_key}},
            "outpost:secrets": {name: None for name in ("deploy_key", *GUARD_SECRETS)}}


# --- (a) ------------------------------------------------------------------------------------------

def waiter_manifests(vm) -> dict:
    config = {**base_config(vm),
              "outpost:buckets": {GUARD_BUCKET: {"endpoint": "http://10.0.2.100:9000",
                                                 "credentials": {"access_key": "s3_key_id", "secret_key": "s3_secret"}}},
              "outpost:services": {"waiter": {"hosts": ["vm"], "container": {
                  "image": "localhost/waiter", "tag": "1", "entrypoint": "/usr/bin/sleep", "command": "infinity",
                  "build": {"host_paths": ["/usr/bin/sleep"]}, "volumes": ["/home/waiter/data:/data"]}}},
              "outpost:backups": {"waiter-data": {"host": "vm", "paths": ["/home/waiter/data"], "bucket": GUARD_BUCKET,
                                                  "tool": "restic", "password": "restic_password"}}}
    return {m.name: m for m in render_host(parse(config, "zero-loss"), "vm")}


def start_a_slowed_restore(vm) -> None:
    """Deploy the backup (nothing to restore yet) and the rootless service, then do what a boot
    does with a restore that takes SLOW seconds: the restore unit runs again, the service starts
    at the same time and waits for the marker."""
    started = time.monotonic()
    ms = waiter_manifests(vm)
    run_steps(vm, [apply_step(ms["backup-waiter-data"], GUARD_SECRETS, "backup waiter-data")], timeout=900)
    sh(vm, "install -d -o waiter -g waiter -m 0750 /home/waiter/data")   # the volume's host side
    run_steps(vm, [apply_step(ms["svc-waiter"], GUARD_SECRETS, "deploy waiter")], timeout=1200)
    assert sh(vm, f"{USER_UNIT} is-active waiter.service", check=False).strip() == "active"
    timeout = sh(vm, f"{USER_UNIT} show -P TimeoutStartUSec waiter.service").strip()
    assert timeout == "18min", timeout   # 900 s wait + 120 s to start + 60 s (components/render/restore.py)
    record("host guards: deploy a rootless service with restore: auto", time.monotonic() - started)
    sh(vm, f"{USER_UNIT} stop waiter.service && rm -f {MARKER} && install -d {shlex.quote(SLOWED.rsplit('/', 1)[0])} && "
           f"printf '[Service]\\nExecStartPre=/bin/sleep {SLOW}\\n' > {SLOWED} && systemctl daemon-reload && "
           "systemctl restart --no-block outpost-restore-waiter-data.service && "
           f"{USER_UNIT} reset-failed waiter.service && {USER_UNIT} start --no-block waiter.service")


def check_the_slowed_restore(vm) -> None:
    def props() -> dict:
        out = sh(vm, f"{USER_UNIT} show -p ActiveState -p NRestarts -p InactiveExitTimestampMonotonic "
                     "-p ExecMainStartTimestampMonotonic waiter.service")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    state = wait_for(lambda: (p := props())["ActiveState"] == "active" and p, "waiter.service is active again",
                     SLOW + 600, 5)
    waited = (int(state["ExecMainStartTimestampMonotonic"]) - int(state["InactiveExitTimestampMonotonic"])) / 1e6
    restore = sh(vm, "journalctl --no-pager -o cat -u outpost-restore-waiter-data.service")
    record("host guards: a rootless service waited for a slowed restore", waited,
           f"restarts {state['NRestarts']}, restore slowed by {SLOW} s")
    assert state["NRestarts"] == "0", state           # one start, never cut short (Restart= would hide it)
    assert waited >= SLOW - 10 > 120, state            # longer than the container's own start timeout
    assert "nothing to restore" in restore, restore
    sh(vm, f"rm -f {SLOWED} && systemctl daemon-reload")


# --- (b) ------------------------------------------------------------------------------------------

def refused_accounts(vm) -> None:
    process = {"hosts": ["vm"], "process": {"exec": "/usr/bin/sleep infinity"}}
    config = {**base_config(vm), "outpost:services": {"postgres": process, "mysql": process}}
    ms = {m.name: m for m in render_host(parse(config, "zero-loss"), "vm")}   # the config takes both
    assert sh(vm, "getent passwd postgres mysql", check=False) == ""
    sh(vm, "useradd --system --no-create-home --shell /usr/sbin/nologin --comment 'MySQL Server' mysql")

    def agent(op: str, m) -> tuple[int, str]:
        done = vm.ssh(f"python3 {AGENT} {op} {m.name} {m.digest()}", input=m.encode({}).encode() if op == "apply" else None,
                      check=False, timeout=600)
        return done.returncode, (done.stdout + done.stderr).decode(errors="replace")

    code, said = agent("apply", ms["svc-postgres"])
    assert code == 0, said
    wait_for(lambda: sh(vm, "systemctl is-active postgres.service", check=False).strip() == "active",
             "postgres.service runs as its dynamic user", 120)
    pid = sh(vm, "systemctl show -P MainPID postgres.service").strip()
    uid = int(sh(vm, f"awk '/^Uid:/ {{print $2}}' /proc/{pid}/status"))
    assert 61184 <= uid <= 65519, uid                   # a dynamic account, not a static one of that name
    code, said = agent("apply", ms["svc-mysql"])
    assert code == 1, said
    assert "user mysql already exists on this host and outpost did not create it" in said, said
    assert "set services.mysql.user to an account of its own" in said, said
    assert sh(vm, "test -e /etc/systemd/system/mysql.service && echo written || echo nothing").strip() == "nothing"
    assert agent("remove", ms["svc-postgres"])[0] == 0
    agent("remove", ms["svc-mysql"])
    sh(vm, "userdel mysql")


# --- (c) ------------------------------------------------------------------------------------------

SECRET = 'Zq"s3cr3t\\x$99'            # a quote and a backslash: JSON and Go's %q escape both
PLAIN = "Zqs3cr3tPlain77"             # sshd reads a '"' as the start of a quoted word: a plain one there
VALIDATORS = {   # what it rejects, with the secret in it; argv before the staged file
    "caddy": ("/etc/zl-guard/Caddyfile", ":8080 {\n\treverse_proxy 127.0.0.1:1 {\n\t\tlb_try_duration <secret:q>\n\t}\n}\n",
              ["caddy", "validate", "--adapter", "caddyfile", "--config"]),
    "haproxy": ("/etc/zl-guard/haproxy.cfg", "global\n\t<secret:q> on\n", ["haproxy", "-c", "-f"]),
    "nginx": ("/etc/zl-guard/nginx.conf", "events {}\nhttp { <secret:q> on; }\n", ["nginx", "-t", "-e", "stderr", "-c"]),
    "sshd": ("/etc/zl-guard/sshd.conf", "<secret:plain> yes\n", ["/usr/sbin/sshd", "-t", "-f"]),
}


def secrets_quoted_by_validators(vm) -> None:
    forms = {SECRET, json.dumps(SECRET)[1:-1], 'Zq\\"s3cr3t\\\\x$99', shlex.quote(SECRET), PLAIN, "s3cr3t"}
    for tool, (path, content, argv) in VALIDATORS.items():
        m = Manifest(name=f"guard-{tool}", files=[File(path, content, "0600")],
                     validate=[{"argv": [*argv, f"{{staged:{path}}}"]}])
        done = vm.ssh(f"python3 {AGENT} apply {m.name} {m.digest()}", input=m.encode({"q": SECRET, "plain": PLAIN}).encode(),
                      check=False, timeout=600)
        said = (done.stdout + done.stderr).decode(errors="replace")
        assert done.returncode == 1 and "validation failed" in said and "<secret hidden>" in said, (tool, said)
        leaked = [form for form in forms if form in said]
        assert not leaked, (tool, leaked, said)
        vm.ssh(f"python3 {AGENT} remove {m.name} {m.digest()}", check=False, timeout=300)
    log = sh(vm, "cat /var/lib/outpost/agent.log 2>/dev/null; true")
    assert not [form for form in forms if form in log]
