"""The demo stack (Pulumi.local.yaml) deployed to a real Debian 13 VM by the real Pulumi engine
(`pulumi up`, `preview --diff`, `destroy`; file backend, passphrase secrets), then checked from
outside: the scenarios of a user's first day, in order.

Each test builds on the previous one (one VM, one stack), like a sequence of `pulumi up`s.
"""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from components.render.agent import AGENT_PATH
from tests.conftest import ROOT
from tests.e2e.deployment import DEMO_SECRETS, CommandFailed
from tests.e2e.load import Load, https_get
from tests.e2e.report import record

HOST = "hello.outpost.localhost"


def wait_for(check, timeout: float = 120, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception:  # noqa: BLE001 retried until the deadline
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {check.__name__}")
        time.sleep(interval)


def tag_of(body: str) -> str:
    """The image tag a hello replica runs (it reports its image as JSON)."""
    return json.loads(body)["image"].rsplit(":", 1)[1]


def get(deployment, path: str) -> tuple[int, str]:
    return https_get(deployment.vm.https_port, HOST, path, deployment.ca_file())


def user_units(deployment, user: str, *units: str) -> list[str]:
    out = deployment.admin_ssh(f"sudo systemctl --user -M {user}@ is-active {' '.join(units)}", check=False)
    return out.stdout.split()


def test_fresh_deploy_serves_both_routes(deployment):
    mark = deployment.sshd.mark()
    started = time.monotonic()
    steps = deployment.up()
    sessions = deployment.sshd.count(mark)
    record("fresh deploy (pulumi up)", time.monotonic() - started,
           f"{len(steps)} commands, {sessions.connections} SSH connections; engine: {deployment.last.changes}")
    assert sorted((s.name, s.op) for s in steps) == [("vm-bootstrap", "create"), ("vm-bundle", "create")], steps
    assert set(deployment.last.changes) == {"create"}, deployment.last.changes
    bundle = next(s for s in steps if s.name == "vm-bundle")
    assert bundle.stdout.splitlines()[-1] == f"outpost host vm: {len(applied(bundle))} applied, 0 unchanged, 0 removed"
    assert applied(bundle) == ["base", "tls", "proxy", "backup-wsgi-db", "backup-wsgi-state", "svc-hello",
                               "svc-hello-refresh", "svc-wsgi"], bundle.stdout

    status, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(get(deployment, "/")))
    assert tag_of(body) == "1" and json.loads(body)["message"].startswith("hello"), body
    status, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(get(deployment, "/wsgi/")))
    assert "wsgi" in body, body
    assert user_units(deployment, "hello", "hello@8000.service", "hello@8001.service") == ["active", "active"]


def test_base_setup_hardened_ssh(deployment, tmp_path):
    vm = deployment.vm
    assert deployment.admin_ssh("id -un").stdout.strip() == "admin"
    root = vm.ssh("true", check=False)
    assert root.returncode != 0 and b"Permission denied" in root.stderr, "root login must be refused"
    password = subprocess.run(
        ["ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "PubkeyAuthentication=no",
         "-o", "PreferredAuthentications=password,keyboard-interactive", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={vm.known_hosts_path}", "-p", str(vm.ssh_port), "admin@127.0.0.1", "true"],
        capture_output=True, text=True, timeout=60)
    assert password.returncode != 0 and "Permission denied" in password.stderr
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{vm.ssh_port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHHbYk5rB2yGWpGqGqI5Hr9M1yVqPiw6cHV9e0ZG7fUc\n")
    argv = vm.ssh_argv()
    argv[argv.index(f"UserKnownHostsFile={vm.known_hosts_path}")] = f"UserKnownHostsFile={wrong}"
    argv[-1] = "admin@127.0.0.1"
    mismatch = subprocess.run([*argv, "--", "true"], capture_output=True, text=True, timeout=60)
    assert mismatch.returncode != 0 and "Host key verification failed" in mismatch.stderr


def test_sshd_and_the_host_firewall_are_in_force(deployment):
    """The drop-in's settings are sshd's effective ones; the firewall table is loaded; a service
    user (hello) cannot reach the cloud metadata address (the rule rejects it at once)."""
    effective = deployment.admin_ssh("sudo sshd -T -C user=admin,host=h,addr=10.0.2.2").stdout.splitlines()
    for line in ("allowusers admin", "allowtcpforwarding no", "allowagentforwarding no", "permittunnel no"):
        assert line in effective, line
    table = deployment.admin_ssh("sudo nft list table inet outpost").stdout
    assert "policy drop;" in table and "10.0.2.2" in table and "tcp dport 22 accept" in table
    assert deployment.admin_ssh("systemctl is-active outpost-firewall.service").stdout.strip() == "active"
    def rejected() -> int:
        chain = deployment.admin_ssh("sudo nft list chain inet outpost output").stdout
        return int(re.search(r"counter packets (\d+)", chain).group(1))
    # The VM's user-mode network may have no route there: give it one, so that a packet is sent
    # (and meets the rule) instead of connect() failing before any packet exists.
    gateway = deployment.admin_ssh("ip -4 route show 10.0.2.0/24").stdout.split()
    route = "169.254.169.254/32 via 10.0.2.2" if gateway else ""
    if route:
        deployment.admin_ssh(f"sudo ip route replace {route}")
    try:
        before = rejected()
        metadata = deployment.admin_ssh("sudo -u hello -- curl -sS -m 5 -o /dev/null http://169.254.169.254/",
                                        check=False)
        assert metadata.returncode == 7, metadata.stderr          # could not connect: rejected at once
        assert rejected() > before, metadata.stderr
    finally:
        if route:
            deployment.admin_ssh(f"sudo ip route del {route}", check=False)


def test_a_service_user_reaches_no_proxy_control_socket(deployment):
    """Caddy's admin API is a unix socket in /run/caddy (0700, caddy's), not TCP 2019; root uses it."""
    assert deployment.admin_ssh("sudo stat -c '%a %U' /run/caddy").stdout.split() == ["700", "caddy"]
    assert deployment.admin_ssh("sudo test -S /run/caddy/admin.sock", check=False).returncode == 0
    tcp = deployment.admin_ssh("sudo -u hello -- curl -sS -m 5 http://127.0.0.1:2019/config/", check=False)
    assert tcp.returncode == 7, tcp.stderr
    unix = deployment.admin_ssh("sudo -u hello -- curl -sS -m 5 --unix-socket /run/caddy/admin.sock "
                                "http://localhost/config/", check=False)
    assert unix.returncode == 7, unix.stderr
    reload = deployment.admin_ssh("sudo systemctl reload caddy.service", check=False)
    assert reload.returncode == 0, reload.stderr


def test_second_apply_runs_nothing_and_the_agent_changes_nothing(deployment):
    mark = deployment.sshd.mark()
    started = time.monotonic()
    assert deployment.up() == [], "unchanged inputs must run no command"
    seconds = time.monotonic() - started
    assert set(deployment.last.changes) == {"same"}, deployment.last.changes
    assert deployment.sshd.count(mark).connections == 0, "a no-change pulumi up opens no SSH connection"
    # The engine runs the host's Command only when its inputs change, and then the agent applies
    # only the manifests whose token moved. Whatever applies an unchanged manifest anyway (an
    # operator, `make drift REPAIR=1`) must find nothing to do: apply each one again by hand with
    # the manifest the state holds, as the agent's per-manifest `apply` takes it.
    (bundle,) = [r for r in deployment.cli.resources(show_secrets=True) if r["urn"].endswith("::vm-bundle")]
    for entry in json.loads(bundle["inputs"]["stdin"])["manifests"]:
        out = apply_by_hand(deployment, entry)
        assert out.strip().splitlines()[-1].endswith(": 0 changed, 0 removed, restarted: none"), (entry["name"], out)
    record("re-apply, no change (pulumi up)", seconds,
           f"engine: {deployment.last.changes}, 0 SSH connections; every manifest applied by hand: 0 changed")


def applied(step) -> list[str]:
    """The manifests the agent applied in this step (not the unchanged ones), in order."""
    return [line.split(":")[0].removeprefix("outpost ") for line in step.stdout.splitlines()
            if line.startswith("outpost ") and not line.startswith("outpost host ")
            and not line.endswith(": unchanged")]


def apply_by_hand(deployment, entry: dict) -> str:
    """`outpost-apply apply NAME TOKEN` with the manifest on stdin, over SSH as the admin, host key pinned."""
    argv = deployment.vm.ssh_argv()
    argv[-1] = f"{deployment.config['outpost:admin']['user']}@127.0.0.1"
    text = json.dumps(entry["manifest"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    command = f"sudo -n python3 {AGENT_PATH} apply {entry['name']} {entry['token']}"
    result = subprocess.run([*argv, "--", command], input=text, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def changed_commands(preview: str) -> set[str]:
    """The Commands `pulumi preview --diff` shows as updated: each `~ command:remote:Command:
    (update)` block names its resource in the `[urn=...::NAME]` line below it."""
    return set(re.findall(r"~ command:remote:Command: \(update\)\n(?:\s+\[id=[^\]\n]*\]\n)?"
                          r"\s+\[urn=[^\]\n]*::([^\]\n]+)\]", preview))


def test_preview_of_a_tag_change_names_the_command_and_shows_no_secret(deployment):
    """`pulumi preview --diff`, as a reviewer sees it: the one Command that changes, by name, and
    no secret anywhere, in the preview or in the exported state."""
    hello = deployment.services["hello"]["container"]
    hello["tag"] = "2"
    try:
        deployment.cli.lay(deployment.config, deployment.secrets)
        preview = deployment.cli.preview(diff=True, timeout=600)
    finally:
        hello["tag"] = "1"
        deployment.cli.lay(deployment.config, deployment.secrets)
    assert preview.returncode == 0, preview.stderr[-3000:]
    text = preview.stdout + preview.stderr
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / "preview-tag-change.txt").write_text(text)     # the README's sample
    record("preview --diff of a tag change", 0, next((line.strip() for line in text.splitlines()
                                                       if "to update" in line), ""))
    # the host's Command, and in its `create` the one manifest line whose token moved
    assert changed_commands(text) == {"vm-bundle"}, text[-4000:]
    moved = {m.group(1) for m in re.finditer(r"^\s*[-+]\s*#\s+(\S+)\s+[0-9a-f]{20}\b", text, re.M)}
    assert moved == {"svc-hello"}, text[-4000:]
    exported = json.dumps(deployment.cli.export(show_secrets=False))
    for value in (*DEMO_SECRETS.values(), deployment.secrets["deploy_key"].strip().splitlines()[1]):
        assert value not in text, "a secret in the preview"
        assert value not in exported, "a secret in plain text in the state"
    assert "using pulumi-resource" not in text, "plugins must be installed, not found on PATH"


def test_rolling_restart_under_load_loses_nothing(deployment):
    deployment.services["hello"]["container"]["tag"] = "2"
    mark = deployment.sshd.mark()
    started = time.monotonic()
    with Load(deployment.vm.https_port, HOST, "/", deployment.ca_file(), max_seconds=900) as load:
        steps = deployment.up()
    result = load.result
    connections = deployment.sshd.count(mark).connections
    record("rolling restart under load (tag 1 → 2)", time.monotonic() - started,
           f"{result.sent} requests, {result.lost} lost, failures {dict(result.failures)}, "
           f"slowest {result.slowest:.1f} s; {connections} SSH connection(s)")
    print(f"rolling restart: {result.sent} requests, {result.lost} lost")
    assert [s.name for s in steps] == ["vm-bundle"], steps
    assert connections == 1, "one changed service: one session, to its host"
    assert applied(steps[0]) == ["svc-hello"], steps[0].stdout
    assert "restarted: hello-image(restart), hello(rolling)" in steps[0].stdout
    assert result.sent > 20 and result.lost == 0, (result.failures, result.sent)
    status, body = get(deployment, "/")
    assert status == 200 and tag_of(body) == "2", body


def test_broken_version_stops_the_rollout_and_the_old_one_keeps_serving(deployment):
    hello = deployment.services["hello"]
    hello["container"]["tag"] = "3"
    hello["env"] = {**hello.get("env", {}), "BROKEN": "1"}
    started = time.monotonic()
    with pytest.raises(CommandFailed) as failure:
        deployment.up()
    message = str(failure.value)
    record("broken version stops the rollout", time.monotonic() - started, message)
    assert "hello@8000" in message and "500" in message, message
    states = user_units(deployment, "hello", "hello@8001.service")
    assert states == ["active"]
    for _ in range(10):
        status, body = get(deployment, "/")
        assert status == 200 and tag_of(body) == "2", body
    # Roll back: the previous config applies again and both replicas serve it.
    hello["container"]["tag"] = "2"
    hello["env"].pop("BROKEN")
    deployment.up()
    assert user_units(deployment, "hello", "hello@8000.service", "hello@8001.service") == ["active", "active"]


def test_job_runs_and_triggers_the_rolling_restart(deployment):
    before = deployment.admin_ssh(
        "sudo systemctl --user -M hello@ show -P ActiveEnterTimestampMonotonic hello@8000.service").stdout.strip()
    started = time.monotonic()
    deployment.admin_ssh("sudo systemctl start hello-refresh.service", timeout=600)
    after = wait_for(lambda: (lambda v: v if v != before else None)(deployment.admin_ssh(
        "sudo systemctl --user -M hello@ show -P ActiveEnterTimestampMonotonic hello@8000.service").stdout.strip()),
        timeout=300)
    record("job runs, triggers rolling restart", time.monotonic() - started)
    assert int(after) > int(before)
    assert deployment.admin_ssh("systemctl is-enabled hello-refresh.timer").stdout.strip() == "enabled"


def test_socket_activated_service_has_four_instances(deployment):
    seen = set()
    for _ in range(40):
        status, body = get(deployment, "/wsgi/")
        assert status == 200
        seen.add(body.strip())
    active = deployment.admin_ssh("systemctl is-active wsgi@1.socket wsgi@2.socket wsgi@3.socket wsgi@4.socket").stdout.split()
    assert active == ["active"] * 4
    assert len(seen) >= 2, f"requests should spread over the ReusePort instances: {seen}"


@pytest.mark.parametrize("kind, tag", [("haproxy", "4"), ("nginx", "5")])
def test_the_same_routes_behind_each_proxy_roll_without_loss(deployment, kind, tag):
    """One route list, another proxy: switching `outpost:proxy.kind` replaces the proxy on the
    host, HTTPS with the stack CA still reaches the right service on each path, and a rolling
    restart behind this proxy (HAProxy drains through its admin socket) loses no request."""
    serving = deployment.services["hello"]["container"]["tag"]
    deployment.config["outpost:proxy"]["kind"] = kind
    started = time.monotonic()
    steps = deployment.up()
    record(f"switch proxy to {kind}", time.monotonic() - started, f"{len(steps)} commands")
    assert [s.name for s in steps] == ["vm-bundle"] and "proxy" in applied(steps[0]), steps
    assert deployment.admin_ssh(f"systemctl is-active {kind}.service").stdout.strip() == "active"
    assert deployment.admin_ssh("systemctl is-active caddy.service", check=False).stdout.strip() != "active"
    status, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(get(deployment, "/")))
    assert tag_of(body) == serving, body
    status, body = get(deployment, "/wsgi/")
    assert status == 200 and "wsgi" in body, body

    deployment.services["hello"]["container"]["tag"] = tag
    started = time.monotonic()
    with Load(deployment.vm.https_port, HOST, "/", deployment.ca_file(), max_seconds=900) as load:
        steps = deployment.up()
    result = load.result
    record(f"rolling restart behind {kind} under load (tag → {tag})", time.monotonic() - started,
           f"{result.sent} requests, {result.lost} lost, failures {dict(result.failures)}, "
           f"slowest {result.slowest:.1f} s")
    assert [s.name for s in steps] == ["vm-bundle"] and applied(steps[0]) == ["svc-hello"], steps
    assert "hello(rolling)" in steps[0].stdout
    assert result.sent > 20 and result.lost == 0, (result.failures, result.sent)
    status, body = get(deployment, "/")
    assert status == 200 and tag_of(body) == tag, body


def test_destroy_leaves_nothing_behind(deployment, s3):
    started = time.monotonic()
    steps = deployment.destroy()
    record("destroy (pulumi destroy)", time.monotonic() - started, f"{len(steps)} commands deleted; "
           f"engine: {deployment.last.changes}")
    assert [(s.name, s.op) for s in steps] == [("vm-bundle", "delete"), ("vm-bootstrap", "delete")], steps
    assert deployment.cli.resources() == [], "the stack holds nothing after destroy"
    assert "outpost-backups" not in [b["Name"] for b in s3.client.list_buckets()["Buckets"]]
    # The base setup's removal restored the host's own sshd settings: root may log in with its key.
    leftovers = deployment.vm.ssh(
        "ls /etc/systemd/system /etc/containers/systemd 2>/dev/null | grep -E '^(hello|wsgi|outpost)' ; "
        "getent passwd hello admin ; ls /home ; ls -d /var/lib/outpost /etc/outpost/tls 2>/dev/null ; "
        "ls /etc/sudoers.d | grep outpost ; podman ps -a --format '{{.Names}}' ; "
        "ls /usr/local/lib/outpost /etc/ssh/sshd_config.d/10-outpost.conf 2>/dev/null ; true").stdout.split()
    assert leftovers == [], leftovers
