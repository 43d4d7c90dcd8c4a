"""Offline tests of components/operate: connections from the stack (static config, cloud outputs),
the SSH command line (pinned key, deploy key in a 0600 file and never in argv), and status's
verdicts and exit codes against recorded agent answers. The real thing runs in
tests/e2e/test_operate.py."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from components.operate import connections as conn_mod
from components.operate import status
from components.operate.connections import Unreachable, connections, injected
from components.program import ROOT, stack_config
from components.shipping import token
from components.load import load_file
from components.render import render_stack

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-key-material-42\n-----END OPENSSH PRIVATE KEY-----\n"


def local_source():
    return injected("local", stack_config("local", secrets={"deploy_key": KEY}))


def test_static_hosts_come_from_their_config_and_the_key_stays_out_of_repr():
    (vm,) = connections(local_source()).values()
    assert (vm.host, vm.address, vm.port, vm.user) == ("vm", "127.0.0.1", 2222, "admin")
    assert vm.known_hosts_line().startswith("[127.0.0.1]:2222 ssh-ed25519 AAAA")
    assert "secret-key-material" not in repr(vm)


def test_cloud_hosts_come_from_the_stack_outputs():
    source = injected("test", stack_config("test", secrets={"deploy_key": KEY}))
    with pytest.raises(Unreachable, match="outputs have no address or host key"):
        connections(source)
    names = [n for n, h in source.stack.hosts.items() if h.provider == "hcloud"]
    source.outputs = {"hosts": {n: {"address": f"198.51.100.{i}", "port": 22,
                                    "host_key": "ssh-ed25519 AAAAkey\n"} for i, n in enumerate(names)}}
    found = connections(source)
    assert found[names[0]].address == "198.51.100.0" and found[names[0]].host_key == "ssh-ed25519 AAAAkey"


def test_a_missing_deploy_key_is_a_clear_error():
    with pytest.raises(Unreachable, match="deploy key"):
        connections(injected("local", stack_config("local")))


def test_the_session_pins_the_host_key_and_keeps_the_key_out_of_argv(monkeypatch):
    (vm,) = connections(local_source()).values()
    seen = {}

    def fake_run(argv, **kwargs):
        key_file = argv[argv.index("-i") + 1]
        known = next(a.split("=", 1)[1] for a in argv if a.startswith("UserKnownHostsFile="))
        seen.update(argv=argv, mode=stat.S_IMODE(os.stat(key_file).st_mode),
                    key=open(key_file).read(), known=open(known).read())
        return subprocess.CompletedProcess(argv, 0, '{"manifests": []}', "")

    monkeypatch.setattr(conn_mod.subprocess, "run", fake_run)
    conn_mod.agent(vm, "report", "--json")
    assert "StrictHostKeyChecking=yes" in seen["argv"] and seen["mode"] == 0o600
    assert seen["key"] == KEY and seen["known"] == vm.known_hosts_line()
    assert not any("secret-key-material" in a for a in seen["argv"])
    assert seen["argv"][-1] == "sudo -n python3 /usr/local/lib/outpost/outpost-apply.py report --json"
    assert not os.path.exists(os.path.dirname(seen["argv"][seen["argv"].index("-i") + 1]))


def answer(tokens, **override):
    """An agent report in which every manifest is up, healthy and at TOKENS."""
    manifests = []
    for name, tok in tokens.items():
        m = {"name": name, "token": tok, "pending": [], "version": None, "rollback": False,
             "last": {"time": "2026-12-01T23:00:00Z", "op": "apply", "outcome": "ok"},
             "units": [{"unit": f"{name}.service", "scope": "system", "active": "active",
                        "enabled": "enabled", "must_run": True}],
             "replicas": []}
        m.update(override.get(name, {}))
        manifests.append(m)
    return {"host": "vm", "manifests": manifests}


@pytest.fixture
def stack_tokens():
    return {m.name: token(m.encode()) for m in render_stack(load_file(ROOT / "Pulumi.local.yaml"))["vm"]}


def run_status(monkeypatch, reply):
    def fake_agent(conn, *args, **kwargs):
        if isinstance(reply, Exception):
            raise reply
        return subprocess.CompletedProcess([], 0, json.dumps(reply), "")
    monkeypatch.setattr(status, "agent", fake_agent)
    return status.collect(local_source())


def test_status_exit_0_when_all_is_up_and_current(monkeypatch, stack_tokens):
    doc = run_status(monkeypatch, answer(stack_tokens))
    assert doc["exit"] == 0
    assert {m["stack"] for m in doc["hosts"]["vm"]["manifests"]} == {"up to date"}
    assert status.table(doc).endswith("status: all up and current\n")


def test_status_exit_1_names_a_stopped_unit_a_drifted_and_a_missing_manifest(monkeypatch, stack_tokens):
    tokens = dict(stack_tokens)
    tokens["svc-wsgi"] = "old-token"
    del tokens["proxy"]
    reply = answer(tokens, **{"svc-hello": {"units": [{"unit": "hello@8001.service", "scope": "user:hello",
                                                       "active": "inactive", "enabled": "", "must_run": True}]}})
    doc = run_status(monkeypatch, reply)
    text = status.table(doc)
    assert doc["exit"] == 1
    assert "vm: hello: hello@8001.service is inactive" in text
    assert "vm: wsgi: drifted" in text and "vm: proxy: not applied" in text


def test_status_reports_a_rollback_with_the_version_the_stack_wants(monkeypatch, stack_tokens):
    reply = answer({**stack_tokens, "svc-hello": "older"}, **{"svc-hello": {
        "version": "tag 0", "last": {"time": "t", "op": "rollback", "outcome": "ok"}}})
    doc = run_status(monkeypatch, reply)
    (hello,) = [m for m in doc["hosts"]["vm"]["manifests"] if m["name"] == "svc-hello"]
    assert hello["stack"] == "rolled back, stack wants tag 1"


def test_status_exit_2_names_the_unreachable_host(monkeypatch):
    doc = run_status(monkeypatch, Unreachable("vm (127.0.0.1:2222): Connection refused"))
    assert doc["exit"] == 2
    assert "vm: unreachable: vm (127.0.0.1:2222): Connection refused" in status.table(doc)


def test_a_log_record_is_one_line_prefixed_with_time_host_and_instance():
    from components.operate.logs import line_of
    rec = {"host": "vm", "unit": "hello@8001.service", "time": 1764633183788000,
           "message": '10.0.2.15 "GET /ready HTTP/1.1" 200 -\n'}
    assert line_of(rec) == '2025-12-01T23:53:03.788Z vm hello@8001.service: 10.0.2.15 "GET /ready HTTP/1.1" 200 -'
    assert line_of({**rec, "message": "a\nb"}).endswith(": a / b")
