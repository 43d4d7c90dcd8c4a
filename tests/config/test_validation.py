"""The config contract: valid stacks load; each kind of mistake is reported with its key path."""

import copy
import subprocess
import sys

import pytest
import yaml

from components.config import ConfigError
from components.load import load_file, parse
from tests.conftest import ROOT, STACKS


def base_config() -> dict:
    return yaml.safe_load((ROOT / "Pulumi.test.yaml").read_text())["config"]


def errors_for(mutate) -> list[str]:
    config = copy.deepcopy(base_config())
    mutate(config)
    with pytest.raises(ConfigError) as info:
        parse(config, "test")
    return info.value.lines


@pytest.mark.parametrize("stack", STACKS)
def test_repository_stacks_are_valid(stack):
    loaded = load_file(ROOT / f"Pulumi.{stack}.yaml")
    assert loaded.hosts and loaded.admin.private_key in loaded.secrets


def test_defaults_are_applied():
    stack = parse(base_config(), "test")
    svc = stack.services["peerbook"]
    assert svc.user is None and stack.service_user("peerbook") == "peerbook"
    assert stack.services["kollektivkart"].deploy == "rolling"
    assert stack.proxy.kind == "caddy"
    assert stack.hosts["web1"].port == 22 and stack.hosts["web1"].ipv6 is True


def svc(c, name):
    return c["outpost:services"][name]


CASES = {
    "service on a missing host": (
        lambda c: svc(c, "peerbook").update(hosts=["nowhere"]),
        "Pulumi.test.yaml: outpost:services.peerbook.hosts[0]: host 'nowhere' is not defined in outpost:hosts (defined: web1)"),
    "secret not defined": (
        lambda c: svc(c, "peerbook").update(secret_env={"TOKEN": "nope"}),
        "Pulumi.test.yaml: outpost:services.peerbook.secret_env.TOKEN: secret 'nope' is not in outpost:secrets"),
    "port used twice on one host": (
        lambda c: svc(c, "peerbook").update(replicas=[8000, 20001]),
        "Pulumi.test.yaml: outpost:services.peerbook.replicas[0]: port 8000 on host 'web1' is already used by service 'kollektivkart'"),
    "replica port out of range": (
        lambda c: svc(c, "kollektivkart").update(replicas=[8000, 65536]),
        "Pulumi.test.yaml: outpost:services.kollektivkart.replicas[1]: 65536 is not a port; ports are 1-65535"),
    "private address outside its network": (
        lambda c: c["outpost:hosts"]["web1"]["networks"].update(internal="10.0.2.5"),
        "Pulumi.test.yaml: outpost:hosts.web1.networks.internal: 10.0.2.5 is outside 'internal''s subnet 10.0.1.0/24"),
    "route to a service without a port": (
        lambda c: c["outpost:routes"].append({"host": "etl{suffix}.example.org", "service": "kollektivkart-etl"}),
        "Pulumi.test.yaml: outpost:routes[3].service: service 'kollektivkart-etl' publishes no port"),
    "static host without host_key": (
        lambda c: c["outpost:hosts"].update(vps={"provider": "static", "address": "203.0.113.9"}),
        "Pulumi.test.yaml: outpost:hosts.vps.host_key: required for provider: static"),
    "blue-green on a job": (
        lambda c: svc(c, "kollektivkart-etl").update(deploy="blue-green"),
        "Pulumi.test.yaml: outpost:services.kollektivkart-etl.deploy: 'blue-green' does not apply to a scheduled job"),
    "invalid calendar": (
        lambda c: svc(c, "kollektivkart-etl")["schedule"].update(calendar="*-*-* 25:00:00"),
        "Pulumi.test.yaml: outpost:services.kollektivkart-etl.schedule.calendar: '*-*-* 25:00:00' is not a systemd calendar expression"),
    "service name not a unix user": (
        lambda c: c["outpost:services"].update({"Web App": {"hosts": ["web1"], "process": {"exec": "/bin/true"}}}),
        'Pulumi.test.yaml: outpost:services["Web App"]: \'Web App\' is not a valid service name'),
    "unknown key": (
        lambda c: c["outpost:hosts"]["web1"].update(flavour="large"),
        "Pulumi.test.yaml: outpost:hosts.web1.flavour: unknown key; valid keys here: address, host_key, image"),
    "unknown top-level key": (
        lambda c: c.update({"outpost:servers": {}}),
        "Pulumi.test.yaml: outpost:servers: unknown key; valid keys here: admin, backups"),
    "bad enum": (
        lambda c: c["outpost:proxy"].update(kind="traefik"),
        "Pulumi.test.yaml: outpost:proxy.kind: 'traefik' is not allowed; expected 'caddy', 'haproxy' or 'nginx'"),
    "acme with haproxy": (
        lambda c: c["outpost:proxy"].update(kind="haproxy"),
        "Pulumi.test.yaml: outpost:proxy.tls: acme means the proxy obtains its own certificates, which only "
        "kind: caddy does; haproxy needs its certificates from another mode: acme-dns"),
    "after_success to a missing service": (
        lambda c: svc(c, "kollektivkart-etl")["after_success"].update(restart="nope"),
        "Pulumi.test.yaml: outpost:services.kollektivkart-etl.after_success.restart: service 'nope' is not defined"),
    "network not defined": (
        lambda c: c["outpost:hosts"]["web1"]["networks"].update(lan="192.168.1.2"),
        "Pulumi.test.yaml: outpost:hosts.web1.networks.lan: network 'lan' is not defined in outpost:networks"),
    "several socket instances without reuse_port": (
        lambda c: c["outpost:services"].update({"echo": {"hosts": ["web1"], "process": {"exec": "/bin/cat"},
                                                         "socket": {"port": 7200, "instances": 2, "reuse_port": False}}}),
        "Pulumi.test.yaml: outpost:services.echo.socket.reuse_port: several instances share one port only with reuse_port: true"),
    "restic backups into an expiring bucket": (
        lambda c: c["outpost:buckets"]["bus-eta-test"].update(expire_days=30),
        "Pulumi.test.yaml: outpost:backups.kollektivkart-data.bucket: bucket 'bus-eta-test' expires objects after 30 days"),
    "backup of a dynamic user's state directory": (
        lambda c: (c["outpost:services"].update({"notes": {"hosts": ["web1"], "process": {"exec": "/opt/notes/notes"},
                                                           "state_directory": "notes"}}),
                   c["outpost:backups"].update({"notes": {"host": "web1", "paths": ["/var/lib/notes/db"],
                                                          "bucket": "bus-eta-test", "password": "restic_password"}})),
        "Pulumi.test.yaml: outpost:backups.notes.paths: /var/lib/notes/db lies in the state directory /var/lib/notes "
        "of service 'notes', which runs as a dynamic user (no user:)"),
    "unknown restore mode": (
        lambda c: c["outpost:backups"]["kollektivkart-data"].update(restore="always"),
        "Pulumi.test.yaml: outpost:backups.kollektivkart-data.restore:"),
    "backup to a missing bucket": (
        lambda c: c["outpost:backups"]["kollektivkart-data"].update(bucket="nope"),
        "Pulumi.test.yaml: outpost:backups.kollektivkart-data.bucket: bucket 'nope' is not defined in outpost:buckets"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_mistake_has_its_own_message(case):
    mutate, expected = CASES[case]
    lines = errors_for(mutate)
    assert any(line.startswith(expected) for line in lines), lines
    assert len(lines) == 1, f"one mistake, one message: {lines}"


def test_every_problem_is_reported_at_once():
    def mutate(c):
        svc(c, "peerbook").update(hosts=["nowhere"], secret_env={"X": "missing"})
        svc(c, "kollektivkart-etl").update(deploy="blue-green")
        c["outpost:hosts"]["web1"]["networks"].update(internal="10.0.2.5")
    lines = errors_for(mutate)
    assert len(lines) == 4, lines
    assert all(line.startswith("Pulumi.test.yaml: outpost:") for line in lines)


def test_cli_reports_errors_without_traceback(tmp_path):
    bad = base_config()
    svc(bad, "peerbook").update(hosts=["nowhere"])
    (tmp_path / "Pulumi.broken.yaml").write_text(yaml.safe_dump({"config": bad}))
    script = ("import sys, components.program as p, components.__main__ as m; from pathlib import Path; "
              f"m.ROOT = Path({str(tmp_path)!r}); sys.exit(m.main(['check', '--stack', 'broken']))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("Pulumi.broken.yaml: outpost:services.peerbook.hosts[0]: host 'nowhere' "
                                   "is not defined in outpost:hosts (defined: web1)")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_service_names_that_would_replace_host_units_are_refused():
    lines = errors_for(lambda c: c["outpost:services"].update({"caddy": {"hosts": ["web1"], "process": {"exec": "/bin/true"}}}))
    assert lines == ["Pulumi.test.yaml: outpost:services.caddy: 'caddy' would clash with the host's own units or users; pick another name"]
    lines = errors_for(lambda c: c["outpost:services"].update({"my_app": {"hosts": ["web1"], "process": {"exec": "/bin/true"}}}))
    assert len(lines) == 1 and lines[0].startswith("Pulumi.test.yaml: outpost:services.my_app: 'my_app' is not a valid service name")


def test_backup_of_a_state_directory_is_fine_with_a_fixed_user():
    config = copy.deepcopy(base_config())
    config["outpost:services"]["notes"] = {"hosts": ["web1"], "user": "notes", "process": {"exec": "/opt/notes/notes"},
                                           "state_directory": "notes"}
    config["outpost:backups"]["notes"] = {"host": "web1", "paths": ["/var/lib/notes"], "bucket": "bus-eta-test",
                                          "password": "restic_password"}
    assert parse(config, "test").backups["notes"].restore == "auto"
