"""Accounts and paths outpost must not take over: system accounts as service users, root as the
admin, service files in sudo/sshd/unit/agent locations, two manifests writing one path, and a
replica count one rollout could hold the host lock with for ever."""

import copy

import pytest

from components.load import parse
from components.config.reserved import FORBIDDEN_TARGETS, SYSTEM_ACCOUNTS
from components.config.takeover import MAX_REPLICAS
from tests.config.test_validation import base_config, errors_for, svc

P = "Pulumi.test.yaml: outpost:"


@pytest.mark.parametrize("account", ["root", "www-data", "caddy", "haproxy", "sshd", "nobody", "daemon", "backup"])
def test_a_service_user_naming_a_system_account_is_refused(account):
    assert account in SYSTEM_ACCOUNTS
    lines = errors_for(lambda c: svc(c, "peerbook").update(user=account))
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{P}services.peerbook.user: user {account!r} is a system account every host has"), lines


def test_a_service_named_like_a_system_account_is_refused_through_its_default_user():
    # a process service named `daemon` would run as Debian's `daemon` (DynamicUser= reuses a static user)
    lines = errors_for(lambda c: c["outpost:services"].update({"daemon": {"hosts": ["web1"], "process": {"exec": "/bin/true"}}}))
    assert lines == [f"{P}services.daemon: the service's user (its name, as no user: is given) 'daemon' is a "
                     "system account every host has (see SYSTEM_ACCOUNTS in components/config/reserved.py); outpost "
                     "would take it over: give the service a user: of its own"]


@pytest.mark.parametrize("name", ["postgres", "mysql", "redis", "postfix", "chrony", "dnsmasq"])
def test_a_service_named_like_an_account_some_hosts_have_is_left_to_the_agent(name):
    """Only possibly an account: the host may not have it; the agent refuses to take over one
    that exists (files/agent: ensure_users), so the config does not guess."""
    assert name not in SYSTEM_ACCOUNTS
    config = copy.deepcopy(base_config())
    config["outpost:services"][name] = {"hosts": ["web1"], "process": {"exec": "/bin/true"}}
    svc(config, "peerbook").update(user=name)
    stack = parse(config, "test")
    assert stack.service_user(name) == name and stack.service_user("peerbook") == name


def test_a_service_user_naming_the_admin_is_refused():
    lines = errors_for(lambda c: svc(c, "peerbook").update(user="admin"))
    assert lines == [f"{P}services.peerbook.user: user 'admin' is the admin user; a service runs as an account of its own"]


def test_root_as_the_admin_is_refused():
    lines = errors_for(lambda c: c["outpost:admin"].update(user="root"))
    assert len(lines) == 1 and lines[0].startswith(f"{P}admin.user: root cannot be the admin"), lines


@pytest.mark.parametrize("path, protected", [
    ("/etc/sudoers", "/etc/sudoers"), ("/etc/sudoers.d/zz-app", "/etc/sudoers.d"),
    ("/etc/sudoers.bak", "/etc/sudoers"), ("/etc/ssh/sshd_config.d/00-app.conf", "/etc/ssh"),
    ("/etc/systemd/system/app.service", "/etc/systemd"), ("/usr/lib/systemd/system/x.service", "/usr/lib/systemd"),
    ("/etc/containers/systemd/x.container", "/etc/containers"),
    ("/usr/local/lib/outpost/outpost-apply.py", "/usr/local/lib/outpost"), ("/var/lib/outpost/state", "/var/lib/outpost"),
    ("/home/peerbook/.config/systemd/user/x.service", "~/.config/systemd"),
    ("/home/admin/.ssh/authorized_keys", "/home/admin (the admin's home)"),
])
@pytest.mark.parametrize("key", ["secret_files", "artifacts"])
def test_service_files_may_not_target_protected_places(path, protected, key):
    def mutate(c):
        if key == "secret_files":
            svc(c, "peerbook").update(secret_files={path: "s3_secret"})
        else:
            svc(c, "peerbook")["process"]["artifacts"] = {path: "files/demo/peerbook.py"}
    lines = errors_for(mutate)
    where = "secret_files" if key == "secret_files" else "process.artifacts"
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{P}services.peerbook.{where}.{path}: {path} is in {protected}, which outpost never"), lines


def test_dot_dot_paths_are_refused_before_they_can_leave_a_directory():
    lines = errors_for(lambda c: svc(c, "peerbook").update(secret_files={"/opt/../etc/sudoers.d/x": "s3_secret"}))
    assert lines == [f"{P}services.peerbook.secret_files./opt/../etc/sudoers.d/x: '/opt/../etc/sudoers.d/x' is not "
                     "a normalized absolute path (no '.', '..', '//' or trailing '/')"]


def test_protected_places_cover_what_the_issue_names():
    for place in ("/etc/sudoers", "/etc/sudoers.d", "/etc/ssh", "/etc/systemd", "/usr/local/lib/outpost"):
        assert place in FORBIDDEN_TARGETS


def test_two_manifests_writing_one_path_is_a_key_path_error():
    # peerbook's secret file lands on the file kollektivkart's manifest writes (its tag env file)
    target = "/home/kollektivkart/.config/outpost/kollektivkart.env"
    lines = errors_for(lambda c: svc(c, "peerbook").update(secret_files={target: "s3_secret"}))
    assert lines == [f"{P}services.peerbook.secret_files.{target}: {target} on host 'web1': manifest "
                     "svc-kollektivkart writes it too; each path has one owner: move one of them"]


def test_a_service_file_over_the_proxy_config_is_a_clash():
    lines = errors_for(lambda c: svc(c, "peerbook").update(secret_files={"/etc/caddy/Caddyfile": "s3_secret"}))
    assert lines == [f"{P}services.peerbook.secret_files./etc/caddy/Caddyfile: /etc/caddy/Caddyfile on host 'web1': "
                     "manifest proxy writes it too; each path has one owner: move one of them"]


def test_replicas_are_capped():
    lines = errors_for(lambda c: svc(c, "kollektivkart").update(replicas=list(range(9000, 9000 + MAX_REPLICAS + 1))))
    assert lines == [f"{P}services.kollektivkart.replicas: {MAX_REPLICAS + 1} replicas; at most {MAX_REPLICAS} (a rollout "
                     "restarts them one at a time while it holds the host's apply lock)"]
    assert MAX_REPLICAS == 16
