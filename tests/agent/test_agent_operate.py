"""Unit tests of the agent's day-two subcommands (files/agent/outpost_agent: journal.py, operate.py):
the agent log, the kept versions behind repair and rollback, `report --json`, `drift --json
[--repair]`. They run against a temporary root with the same recording stand-in for systemctl as
test_agent_unit.py; health checks hit real local HTTP servers.
"""

import io
import json
import os
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_agent_unit import FakeHost, manifest, servers, text_file  # noqa: E402,F401 (servers: a fixture)

from outpost_agent.base import AgentError
from outpost_agent.cli import Agent, main

SECRET = "s3cr3t-value-91xq"


@pytest.fixture
def host(tmp_path):
    fake = FakeHost()
    for d in ("etc/systemd/system", "srv", "opt", "home"):
        (tmp_path / d).mkdir(parents=True)
    return Agent(root=str(tmp_path), run=fake, log=io.StringIO()), fake, tmp_path


def apply(agent, doc, token):
    return agent.apply(doc["name"], token, json.dumps(doc))


def app(tag, urls=(), body="v"):
    """A service manifest: a tag env file and a secret env file in a dir the agent creates,
    a config file, and (with URLS) a rolling group of health-checked instances."""
    instances = [{"unit": f"web@{8000 + i}.service", "health": u} for i, u in enumerate(urls)]
    files = [text_file("/srv/app/app.env", f"TAG={tag}\n", "0600"),
             text_file("/srv/app/secret.env", f"TOKEN={SECRET}\n", "0600"),
             text_file("/srv/app/app.conf", body)]
    restart = [{"group": "web", "strategy": "rolling", "when": ["/srv/app/app.env"],
                "instances": instances, "health": {"interval": 0.05, "timeout": 1, "retries": 2}}] \
        if instances else []
    return manifest("svc-app", files=files, units=[{"unit": i["unit"]} for i in instances],
                    restart=restart)


def log_lines(root):
    return (root / "var/lib/outpost/agent.log").read_text().splitlines()


def test_each_apply_and_remove_appends_one_private_line_without_secrets(host):
    agent, _, root = host
    apply(agent, app("1"), "tok-1")
    apply(agent, app("1"), "tok-1")
    bad = app("2")
    bad["validate"] = [{"argv": ["sh", "-c", f"echo {SECRET}; exit 1"]}]
    with pytest.raises(AgentError):
        apply(agent, bad, "tok-2")
    lines = log_lines(root)
    assert len(lines) == 3
    assert lines[0].split(" ", 1)[1] == "apply svc-app token=tok-1 changed=3 removed=0 restarted=none outcome=ok"
    assert lines[1].endswith("apply svc-app token=tok-1 changed=0 removed=0 restarted=none outcome=ok")
    assert lines[2].endswith("apply svc-app token=tok-2 changed=? restarted=? "
                             "outcome=failed: validation failed, no file was changed")
    log = root / "var/lib/outpost/agent.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert SECRET not in log.read_text()
    agent.remove("svc-app", "other-token")
    assert log_lines(root)[-1].endswith("remove svc-app token=other-token removed=0 "
                                        "note=a-successor-owns-it outcome=ok")
    # the last manifest removed takes the log and the kept versions with it: no trace stays
    agent.remove("svc-app", "tok-1")
    assert not (root / "var/lib/outpost").exists()


def test_the_log_never_follows_a_symlink(host, tmp_path):
    agent, _, root = host
    (root / "var/lib/outpost").mkdir(parents=True)
    target = tmp_path / "elsewhere"
    target.write_text("")
    (root / "var/lib/outpost/agent.log").symlink_to(target)
    with pytest.raises(OSError):
        apply(agent, app("1"), "tok-1")
    assert target.read_text() == ""


def test_rollback_reapplies_the_previous_version_and_is_logged(host, servers):
    agent, fake, root = host
    ok = servers(200, b"ok")
    apply(agent, app("1", [ok.url(), ok.url()]), "tok-1")
    apply(agent, app("2", [ok.url(), ok.url()]), "tok-2")
    previous = root / "var/lib/outpost/previous/svc-app.json"
    assert stat.S_IMODE(previous.stat().st_mode) == 0o600
    fake.calls.clear()
    assert agent.rollback("svc-app").endswith("restarted: web(rolling)")
    assert (root / "srv/app/app.env").read_text() == "TAG=1\n"
    assert json.loads((root / "var/lib/outpost/manifests/svc-app.json").read_text())["token"] == "tok-1"
    assert [c[-1] for c in fake.commands("restart")] == ["web@8000.service", "web@8001.service"]
    assert " rollback svc-app token=tok-1 changed=1 " in log_lines(root)[-1]
    # a second rollback goes forward again: the rolled-back-from version is now the previous one
    agent.rollback("svc-app")
    assert (root / "srv/app/app.env").read_text() == "TAG=2\n"


def test_the_stacks_delete_still_removes_a_rolled_back_manifest(host):
    agent, _, root = host
    apply(agent, app("1"), "tok-1")
    apply(agent, app("2"), "tok-2")
    agent.rollback("svc-app")
    agent.remove("svc-app", "tok-old-successor")     # not the stack's token: nothing removed
    assert (root / "srv/app/app.env").exists()
    agent.remove("svc-app", "tok-2")                 # the stack's resource still holds tok-2
    assert not (root / "srv/app/app.env").exists()


def test_rollback_stops_at_the_first_unhealthy_instance(host, servers):
    agent, fake, root = host
    ok, bad = servers(200, b"ok"), servers(200, b"ok")
    apply(agent, app("1", [ok.url(), bad.url()]), "tok-1")
    apply(agent, app("2", [ok.url(), bad.url()]), "tok-2")
    bad.status = 500
    fake.calls.clear()
    with pytest.raises(AgentError, match="web@8001.service did not become healthy"):
        agent.rollback("svc-app")
    assert log_lines(root)[-1].endswith("outcome=failed: rolling restart of web stopped")


def test_rollback_without_a_previous_version_is_a_clear_error(host):
    agent, _, _ = host
    apply(agent, app("1"), "tok-1")
    with pytest.raises(AgentError, match="no previous version of svc-app"):
        agent.rollback("svc-app")


def test_report_gives_units_health_version_last_line_and_token(host, servers):
    agent, fake, _ = host
    ok, bad = servers(200, b"ok"), servers(200, b"ok")
    apply(agent, app("7", [ok.url(), bad.url()]), "tok-7")
    bad.status, bad.body = 503, b"down"
    fake.active.discard("web@8001.service")
    (svc,) = agent.report()["manifests"]
    assert svc["name"] == "svc-app" and svc["token"] == "tok-7" and svc["version"] == "tag 7"
    assert svc["last"]["op"] == "apply" and svc["last"]["outcome"] == "ok"
    assert [(u["unit"], u["active"], u["must_run"]) for u in svc["units"]] == \
        [("web@8000.service", "active", True), ("web@8001.service", "inactive", True)]
    assert [(r["unit"], r["healthy"]) for r in svc["replicas"]] == \
        [("web@8000.service", True), ("web@8001.service", False)]
    assert svc["replicas"][1]["response"].startswith("HTTP 503")


def test_drift_lists_exactly_the_edited_chmoded_and_extra_files_and_repair_puts_them_back(host):
    agent, _, root = host
    apply(agent, app("1"), "tok-1")
    assert agent.drift()["manifests"] == [{"name": "svc-app", "drift": []}]
    (root / "srv/app/app.conf").write_text("edited by hand")
    os.chmod(root / "srv/app/secret.env", 0o644)
    (root / "srv/app/stray.txt").write_text("x")
    (entry,) = agent.drift()["manifests"]
    assert entry["drift"] == [
        {"path": "/srv/app/secret.env", "what": "changed: mode 0644 (wants 0600)"},
        {"path": "/srv/app/app.conf", "what": "changed: content"},
        {"path": "/srv/app/stray.txt", "what": "extra"}]
    (entry,) = agent.drift(repair=True)["manifests"]
    assert entry["repaired"].startswith("outpost svc-app: 2 changed")
    assert entry["after"] == [{"path": "/srv/app/stray.txt", "what": "extra"}]  # never deleted
    assert (root / "srv/app/app.conf").read_text() == "v"
    assert stat.S_IMODE((root / "srv/app/secret.env").stat().st_mode) == 0o600
    assert " repair svc-app token=tok-1 changed=2 " in log_lines(root)[-1]


def test_drift_reports_a_disabled_unit_and_a_missing_file(host):
    agent, fake, root = host
    doc = manifest("svc-u", files=[text_file("/etc/systemd/system/u.service", "[Service]\n")],
                   units=[{"unit": "u.service"}])
    apply(agent, doc, "tok-u")
    fake.enabled.discard("u.service")
    (root / "etc/systemd/system/u.service").unlink()
    (entry,) = agent.drift()["manifests"]
    assert entry["drift"] == [{"path": "/etc/systemd/system/u.service", "what": "missing"},
                              {"unit": "u.service", "scope": "system", "what": "not enabled (disabled)"}]


def test_main_prints_report_and_drift_as_json(host, capsys):
    agent, _, root = host
    apply(agent, app("1"), "tok-1")
    capsys.readouterr()
    assert main(["report", "--json"], agent=agent) == 0
    assert json.loads(capsys.readouterr().out)["manifests"][0]["token"] == "tok-1"
    assert main(["drift", "--json"], agent=agent) == 0
    assert json.loads(capsys.readouterr().out)["manifests"][0]["drift"] == []
    os.chmod(root / "srv/app/app.conf", 0o600)
    assert main(["drift", "--json", "--repair"], agent=agent) == 0
    out = capsys.readouterr().out      # the JSON alone: the repair's summary line goes to stderr
    assert json.loads(out)["manifests"][0]["repaired"].startswith("outpost svc-app: 1 changed")
    assert main(["rollback", "svc-app"], agent=agent) == 1
    assert "no previous version" in capsys.readouterr().err
    assert main(["drift", "--fix"], agent=agent) == 2
