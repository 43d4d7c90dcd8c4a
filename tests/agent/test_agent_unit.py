"""Unit tests of the on-host agent (files/agent/outpost_agent) that need no VM.

The pure parts (manifest checks, masking, restart selection, summary line, health probe, haproxy
admin-socket talk) are tested directly. apply/remove/switch run for real against a temporary
directory used as the host's root; only systemctl, loginctl, useradd and apt are answered by a
small recording stand-in (`FakeHost`), everything else (validate steps, proxy reloads) really runs.
The real systemd behaviour is proven on a VM by test_agent_vm.py.
"""

import hashlib
import http.server
import io
import json
import os
import socket
import socketserver
import stat
import threading

import pytest

from outpost_agent.base import AgentError, run_command
from outpost_agent.cli import Agent, main
from outpost_agent.health import probe
from outpost_agent.manifest import file_bytes, groups_to_restart, load_manifest, mask, summary

TOKEN = "t1"


def manifest(name="svc-demo", **parts):
    doc = {"format": 1, "name": name, "packages": [], "users": [], "dirs": [], "files": [],
           "units": [], "validate": [], "restart": []}
    doc.update(parts)
    return doc


def text_file(path, content, mode="0644"):
    return {"path": path, "mode": mode, "owner": "root", "group": "root", "content": content,
            "b64": False}


class FakeHost:
    """Answers systemctl/loginctl/useradd/usermod/apt like a quiet host and records every call."""

    def __init__(self):
        self.calls = []
        self.active = set()
        self.enabled = set()

    def __call__(self, argv, **kwargs):
        self.calls.append(list(argv))
        if argv[0] == "systemctl":
            return self.systemctl([a for a in argv[1:] if a not in ("--user", "-M", "--")
                                   and not a.endswith("@")])
        if argv[0] == "dpkg-query":
            out = "".join(f"{p}\tinstalled\n" for p in argv[3:])
            return 0, out, out
        if argv[0] in ("loginctl", "useradd", "usermod", "userdel", "apt-get"):
            return 0, "", ""
        return run_command(argv, **kwargs)

    def systemctl(self, args):
        cmd, units = args[0], [a for a in args[1:] if not a.startswith("--")]
        if cmd == "show":
            out = "\n\n".join(
                f"LoadState=loaded\nUnitFileState={'enabled' if u in self.enabled else 'disabled'}\n"
                f"ActiveState={'active' if u in self.active else 'inactive'}" for u in units) + "\n"
            return 0, out.strip(), out
        if cmd == "is-active":
            state = "active" if units[0] in self.active else "inactive"
            return (0 if state == "active" else 3), state, state
        if cmd in ("start", "restart"):
            self.active.update(units)
        if cmd == "stop":
            self.active.difference_update(units)
        if cmd == "enable":
            self.enabled.update(units)
        if cmd == "disable":
            self.enabled.difference_update(units)
        return 0, "", ""

    def commands(self, verb):
        return [c for c in self.calls if c[0] == "systemctl" and verb in c]


@pytest.fixture
def host(tmp_path):
    fake = FakeHost()
    for d in ("etc/systemd/system", "srv", "opt", "home"):
        (tmp_path / d).mkdir(parents=True)
    agent = Agent(root=str(tmp_path), run=fake, log=io.StringIO())
    return agent, fake, tmp_path


def apply(agent, doc, token=TOKEN, capsys=None):
    return agent.apply(doc["name"], token, json.dumps(doc))


# -- pure parts -----------------------------------------------------------------------------------

def test_manifest_defaults_are_filled():
    doc = manifest(files=[{"path": "/etc/x", "content": "x"}],
                   users=[{"name": "app"}],
                   units=[{"unit": "x.service"}],
                   restart=[{"group": "web", "strategy": "rolling", "when": ["/etc/x"],
                             "instances": [{"unit": "web@8000.service",
                                            "health": "http://127.0.0.1:8000/"}]}])
    m = load_manifest(json.dumps(doc), "svc-demo")
    assert m["files"][0] | {"content": None} == {"path": "/etc/x", "mode": "0644", "owner": "root",
                                                 "group": "root", "b64": False, "content": None}
    assert m["users"][0] == {"name": "app", "home": "/home/app", "linger": False, "system": True,
                             "shell": "/usr/sbin/nologin", "purge": False}
    assert m["units"][0] == {"unit": "x.service", "scope": "system", "enable": True, "start": True,
                             "report": False, "stop": True}
    group = m["restart"][0]
    assert group["health"] == {"interval": 2, "timeout": 1, "retries": 20}
    assert group["instances"][0]["port"] == "8000"


def test_manifest_problems_are_all_reported_in_one_paragraph():
    doc = manifest(name="other",
                   files=[text_file("/etc/../x", "a"), text_file("/etc/y", "b"), text_file("/etc/y", "c")],
                   units=[{"unit": "x.service", "scope": "user:"}],
                   validate=[{"argv": ["tool", "{staged:/etc/missing}"]}],
                   restart=[{"group": "web", "strategy": "rolling", "when": ["/etc/nope"],
                             "instances": [{"unit": "a@1.service", "health": "http://example.org/"}]},
                            {"group": "bg", "strategy": "blue-green",
                             "instances": [{"unit": "b@1.service"}]}])
    with pytest.raises(AgentError) as err:
        load_manifest(json.dumps(doc), "svc-demo")
    message = str(err.value)
    assert "\n" not in message
    for expected in ("name is 'other'", "'/etc/../x' must be absolute and normalized",
                     "/etc/y is listed twice", "scope 'user:'", "{staged:/etc/missing}",
                     "when names /etc/nope", "must be an http://127.0.0.1 URL",
                     "blue-green needs exactly two instances", "blue-green needs switch"):
        assert expected in message


def test_invalid_json_is_a_clear_error():
    with pytest.raises(AgentError, match="not valid JSON"):
        load_manifest("{nope", "svc-demo")


def test_mask_replaces_content_with_digest():
    m = load_manifest(json.dumps(manifest(files=[text_file("/etc/x", "secret value"),
                                                 {"path": "/opt/b", "content": "AAEC", "b64": True}])),
                      "svc-demo")
    masked = mask(m)
    assert "secret value" not in json.dumps(masked)
    assert masked["files"][0]["sha256"] == hashlib.sha256(b"secret value").hexdigest()
    assert file_bytes(m["files"][1]) == b"\x00\x01\x02"
    assert "content" not in masked["files"][1] and "b64" not in masked["files"][1]


def test_summary_line():
    assert summary("base", 0, 0, []) == "outpost base: 0 changed, 0 removed, restarted: none"
    assert summary("svc-a", 3, 1, [("a", "rolling"), ("b", "restart")]) == \
        "outpost svc-a: 3 changed, 1 removed, restarted: a(rolling), b(restart)"


def test_groups_to_restart():
    def group(name, when):
        return {"group": name, "strategy": "restart", "when": when, "instances": []}
    new = {"restart": [group("a", ["/x"]), group("b", ["/y"]), group("c", ["/z"]), group("d", [])]}
    previous = {"manifest": {"restart": [group("a", ["/x"]), group("b", ["/y"]), group("d", [])]},
                "pending": ["d"]}
    chosen = [g["group"] for g in groups_to_restart(new, previous, ["/y"])]
    assert chosen == ["b", "c", "d"]  # b: file changed, c: new, d: pending from a failed apply
    assert [g["group"] for g in groups_to_restart(new, None, [])] == ["a", "b", "c", "d"]


# -- files: staging, diffing, removal ---------------------------------------------------------------

def test_apply_writes_files_then_changes_nothing(host, capsys):
    agent, fake, root = host
    doc = manifest(files=[text_file("/etc/outpost-test/a.conf", "one\n", "0640"),
                          {"path": "/opt/bin/tool", "mode": "0755", "content": "IyEvYmluL3NoCg==",
                           "b64": True}])
    assert apply(agent, doc) == "outpost svc-demo: 2 changed, 0 removed, restarted: none"
    written = root / "etc/outpost-test/a.conf"
    assert written.read_text() == "one\n"
    assert stat.S_IMODE(written.stat().st_mode) == 0o640
    assert (root / "opt/bin/tool").read_bytes() == b"#!/bin/sh\n"
    assert apply(agent, doc) == "outpost svc-demo: 0 changed, 0 removed, restarted: none"
    assert capsys.readouterr().out.splitlines()[-1] == \
        "outpost svc-demo: 0 changed, 0 removed, restarted: none"
    os.chmod(written, 0o644)  # drift in mode alone is repaired
    assert apply(agent, doc).startswith("outpost svc-demo: 1 changed")
    assert not list(root.rglob(".outpost-stage-*"))


def test_state_is_private_and_holds_no_content(host):
    agent, _, root = host
    apply(agent, manifest(files=[text_file("/etc/x.conf", "password=hunter2\n")]))
    state_file = root / "var/lib/outpost/manifests/svc-demo.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    state = json.loads(state_file.read_text())
    assert state["token"] == TOKEN
    assert "hunter2" not in state_file.read_text()
    assert len(state["manifest"]["files"][0]["sha256"]) == 64


def test_dropped_file_and_created_dirs_are_removed(host):
    agent, _, root = host
    doc = manifest(files=[text_file("/etc/keep", "k"), text_file("/srv/new/deep/drop", "d")])
    apply(agent, doc)
    assert (root / "srv/new/deep/drop").exists()
    doc["files"] = doc["files"][:1]
    assert apply(agent, doc) == "outpost svc-demo: 0 changed, 3 removed, restarted: none"
    assert not (root / "srv/new").exists()  # the dirs the agent created went with the file
    assert (root / "srv").exists()          # (this one was there before)


def test_file_listed_by_another_manifest_is_not_removed(host):
    agent, _, root = host
    apply(agent, manifest(files=[text_file("/etc/shared", "s")]))
    apply(agent, manifest(name="base", files=[text_file("/etc/shared", "s")]))
    apply(agent, manifest(files=[]))
    assert (root / "etc/shared").exists()


def test_validate_runs_on_staged_copy_and_failure_changes_nothing(host):
    agent, _, root = host
    check = ["python3", "-c", "import sys,os; t=open(sys.argv[1]).read(); print('checked', os.path.basename(sys.argv[1]));"
             "sys.exit('bad config: ' + t.strip()) if 'bad' in t else None", "{staged:/etc/app/app.conf}"]
    doc = manifest(files=[text_file("/etc/app/app.conf", "good\n")], validate=[{"argv": check}])
    apply(agent, doc)
    doc["files"][0]["content"] = "bad\n"
    with pytest.raises(AgentError) as err:
        apply(agent, doc)
    assert "validation failed, no file was changed" in str(err.value)
    assert "bad config: bad" in str(err.value)
    assert (root / "etc/app/app.conf").read_text() == "good\n"
    assert not list(root.rglob(".outpost-stage-*"))
    doc["files"][0]["content"] = "good too\n"
    assert apply(agent, doc).startswith("outpost svc-demo: 1 changed")


def test_staged_copy_keeps_the_file_name(host):
    agent, _, root = host
    seen = root / "seen"
    doc = manifest(files=[text_file("/etc/caddy/Caddyfile", ":80\n")],
                   validate=[{"argv": ["cp", "{staged:/etc/caddy/Caddyfile}", str(seen)]},
                             {"argv": ["sh", "-c", f'basename "$0" > {seen}.name', "{staged:/etc/caddy/Caddyfile}"]}])
    apply(agent, doc)
    assert seen.read_text() == ":80\n"
    assert (root / "seen.name").read_text() == "Caddyfile\n"


# -- units and restarts with the recording stand-in ------------------------------------------------

def unit_manifest(body="v1", **extra):
    return manifest(files=[text_file("/etc/systemd/system/demo.service", "[Service]\nExecStart=/bin/true\n"),
                           text_file("/etc/demo.conf", body)],
                    units=[{"unit": "demo.service"}],
                    restart=[{"group": "demo", "strategy": "restart", "when": ["/etc/demo.conf"],
                              "instances": [{"unit": "demo.service"}]}], **extra)


def test_units_enabled_started_and_restarted_only_on_change(host):
    agent, fake, _ = host
    assert apply(agent, unit_manifest()) == "outpost svc-demo: 4 changed, 0 removed, restarted: none"
    assert ["systemctl", "daemon-reload"] in fake.calls
    assert "demo.service" in fake.active and "demo.service" in fake.enabled
    fake.calls.clear()
    assert apply(agent, unit_manifest()) == "outpost svc-demo: 0 changed, 0 removed, restarted: none"
    assert not fake.commands("restart") and not fake.commands("daemon-reload")
    assert apply(agent, unit_manifest("v2")) == "outpost svc-demo: 1 changed, 0 removed, restarted: demo(restart)"
    assert fake.commands("restart") == [["systemctl", "restart", "demo.service"]]
    assert not fake.commands("daemon-reload")  # only the config changed, not a unit file


def test_dropped_unit_is_stopped_and_disabled(host):
    agent, fake, root = host
    apply(agent, unit_manifest())
    assert apply(agent, manifest()) == "outpost svc-demo: 0 changed, 2 removed, restarted: none"
    assert "demo.service" not in fake.active and "demo.service" not in fake.enabled
    assert not (root / "etc/systemd/system/demo.service").exists()


class HealthServer:
    """A local HTTP server answering every GET with a fixed status and body."""

    def __init__(self, status=200, body=b"ok"):
        outer = self
        self.status, self.body = status, body

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(outer.status)
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self):
        return f"http://127.0.0.1:{self.port}/health"


@pytest.fixture
def servers():
    made = []
    yield lambda *a: made.append(HealthServer(*a)) or made[-1]
    for s in made:
        s.server.shutdown()


def test_probe_reports_status_body_and_connection_errors(servers):
    assert probe(servers(200, b"fine").url(), 1) == (True, "HTTP 200: fine")
    ok, last = probe(servers(503, b"db down\n" + b"x" * 1000).url(), 1)
    assert not ok and last.startswith("HTTP 503: db down / xxx") and len(last) < 530
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ok, last = probe(f"http://127.0.0.1:{port}/", 1)
    assert not ok and last.startswith("connection error:")


def rolling_manifest(urls, strategy="rolling", **group):
    instances = [{"unit": f"web@{8000 + i}.service", "health": u} for i, u in enumerate(urls)]
    return manifest(files=[text_file("/etc/web.conf", group.pop("body", "v1"))],
                    units=[{"unit": i["unit"]} for i in instances],
                    restart=[{"group": "web", "strategy": strategy, "when": ["/etc/web.conf"],
                              "instances": instances,
                              "health": {"interval": 0.05, "timeout": 1, "retries": 3}, **group}])


def test_rolling_stops_at_first_unhealthy_instance(host, servers):
    agent, fake, _ = host
    good, bad = servers(200, b"ok"), servers(200, b"ok")
    doc = rolling_manifest([good.url(), bad.url(), good.url()])
    apply(agent, doc)
    bad.status, bad.body = 500, b"boom: tag 2025-99 not found"
    doc["files"][0]["content"] = "v2"
    with pytest.raises(AgentError) as err:
        apply(agent, doc)
    message = str(err.value)
    assert "rolling restart of web stopped: web@8001.service did not become healthy" in message
    assert "HTTP 500: boom: tag 2025-99 not found" in message
    assert "web@8002.service were left untouched" in message
    # the rollout stopped at 8001 (8002 untouched); then the previous web.conf went back and the
    # two instances that had the new one were restarted with it (test_agent_rollback.py)
    assert [c[-1] for c in fake.commands("restart")] == ["web@8000.service", "web@8001.service"] * 2
    # the failed group stays pending: the next apply retries it
    bad.status = 200
    assert apply(agent, doc).endswith("restarted: web(rolling)")


def test_rolling_drains_at_haproxy(host, servers, tmp_path):
    agent, fake, _ = host
    admin = FakeHaproxy(str(tmp_path / "admin.sock"))
    doc = rolling_manifest([servers().url()])
    doc["restart"][0]["instances"][0]["drain"] = {"kind": "haproxy", "socket": admin.path,
                                                  "backend": "web", "server": "r8000"}
    apply(agent, doc)
    doc["files"][0]["content"] = "v2"
    assert apply(agent, doc).endswith("restarted: web(rolling)")
    assert admin.commands == ["set server web/r8000 state drain", "set server web/r8000 state maint",
                              "show stat", "show stat", "set server web/r8000 state ready"]


class FakeHaproxy:
    """An admin socket that answers like haproxy: empty for `set server`, CSV for `show stat`
    (one session on web/r8000 the first time, none after)."""

    def __init__(self, path):
        self.path, self.commands = path, []
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline().decode().strip()
                outer.commands.append(line)
                if line == "show stat":
                    scur = 1 if outer.commands.count("show stat") == 1 else 0
                    self.wfile.write(f"# pxname,svname,qcur,qmax,scur,smax\nweb,r8000,0,0,{scur},3\n"
                                     "web,BACKEND,0,0,0,3\n\n".encode())

        self.server = socketserver.ThreadingUnixStreamServer(path, Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def bluegreen_manifest(urls, root, body="v1"):
    doc = rolling_manifest(urls, strategy="blue-green", body=body,
                           switch={"path": "/etc/proxy/live.conf",
                                   "template": "upstream {port} # {unit}\n",
                                   "reload": ["touch", f"{root}/reloaded"]})
    return doc


def test_blue_green_switches_to_the_idle_slot_and_back(host, servers):
    agent, fake, root = host
    blue, green = servers(), servers()
    live = root / "etc/proxy/live.conf"
    assert apply(agent, bluegreen_manifest([blue.url(), green.url()], root)).endswith("web(blue-green)")
    assert live.read_text() == "upstream 8000 # web@8000.service\n"
    assert (root / "reloaded").exists()
    fake.calls.clear()
    apply(agent, bluegreen_manifest([blue.url(), green.url()], root, body="v2"))
    assert live.read_text() == "upstream 8001 # web@8001.service\n"
    assert [c[-1] for c in fake.commands("restart")] == ["web@8001.service"]  # the old slot keeps running
    assert agent.switch("web").endswith("live slot is now web@8000.service")
    assert live.read_text() == "upstream 8000 # web@8000.service\n"
    # a broken idle slot: no switch, the live one keeps serving
    green.status = 502
    with pytest.raises(AgentError, match="proxy still routes to web@8000.service"):
        apply(agent, bluegreen_manifest([blue.url(), green.url()], root, body="v3"))
    assert live.read_text() == "upstream 8000 # web@8000.service\n"


def test_blue_green_reload_failure_restores_switch_file(host, servers):
    agent, fake, root = host
    doc = bluegreen_manifest([servers().url(), servers().url()], root)
    apply(agent, doc)
    doc["restart"][0]["switch"]["reload"] = ["false"]
    doc["files"][0]["content"] = "v2"
    with pytest.raises(AgentError, match="live.conf was restored"):
        apply(agent, doc)
    assert (root / "etc/proxy/live.conf").read_text() == "upstream 8000 # web@8000.service\n"


# -- remove and tokens -------------------------------------------------------------------------------

def test_remove_with_stale_token_changes_nothing(host):
    agent, fake, root = host
    apply(agent, unit_manifest(), token="new")
    assert agent.remove("svc-demo", "old") == \
        "outpost svc-demo: a successor owns svc-demo (the stored token differs), nothing removed"
    assert (root / "etc/demo.conf").exists() and "demo.service" in fake.active


def test_remove_with_right_token_removes_everything(host):
    agent, fake, root = host
    doc = unit_manifest()
    doc["dirs"] = [{"path": "/srv/demo/data", "mode": "0750"}]
    apply(agent, doc, token="t9")
    line = agent.remove("svc-demo", "t9")
    assert line.startswith("outpost svc-demo: removed 4 files and dirs, stopped 1 units")
    assert not (root / "etc/demo.conf").exists() and not (root / "srv/demo").exists()
    assert "demo.service" not in fake.active and "demo.service" not in fake.enabled
    assert not (root / "var/lib/outpost/manifests/svc-demo.json").exists()
    assert not (root / "var/lib/outpost").exists(), "the last removal takes the agent's state along"
    assert agent.remove("svc-demo", "t9") == \
        "outpost svc-demo: nothing stored under this name, nothing to remove"


def test_remove_reloads_host_units_it_configured_and_never_stops_them(host):
    """Removing the base manifest takes its sshd drop-in away: ssh.service (the host's unit, not
    the manifest's) must keep running and reload, so the host's own login settings apply again."""
    agent, fake, root = host
    dropin = "/etc/ssh/sshd_config.d/10-outpost.conf"
    doc = manifest("base", files=[text_file(dropin, "PermitRootLogin no\n")],
                   restart=[{"group": "sshd", "strategy": "reload", "scope": "system", "when": [dropin],
                             "instances": [{"unit": "ssh.service", "health": None}]}])
    fake.active.add("ssh.service")
    apply(agent, doc, token="b1")
    fake.calls.clear()
    assert agent.remove("base", "b1").endswith("stopped 0 units, deleted users: none")
    assert not (root / dropin.lstrip("/")).exists()
    assert fake.commands("stop") == []
    assert fake.commands("try-reload-or-restart") == [["systemctl", "try-reload-or-restart", "ssh.service"]]
    assert "ssh.service" in fake.active


def test_the_agent_state_stays_while_another_manifest_is_stored(host):
    agent, _, root = host
    apply(agent, unit_manifest(), token="t1")
    apply(agent, manifest("other", files=[text_file("/etc/other.conf", "x\n")]), token="t2")
    agent.remove("svc-demo", "t1")
    assert (root / "var/lib/outpost/manifests/other.json").exists()
    agent.remove("other", "t2")
    assert not (root / "var/lib/outpost").exists()


def test_main_prints_one_paragraph_error_and_exits_nonzero(host, capsys, monkeypatch):
    agent, _, _ = host
    monkeypatch.setattr("sys.stdin", io.StringIO("[1, 2"))
    assert main(["apply", "svc-demo", "t"], agent=agent) == 1
    err = capsys.readouterr().err
    assert err.startswith("outpost-apply: error: the manifest on stdin is not valid JSON")
    assert "Traceback" not in err and err.count("\n") == 1
    assert main(["apply", "../etc", "t"], agent=agent) == 1
    assert main(["bogus"], agent=agent) == 2
    assert main(["status"], agent=agent) == 0


def test_restart_runs_the_stored_plan_now(host, capsys):
    agent, fake, _ = host
    apply(agent, unit_manifest())
    fake.calls.clear()
    assert agent.restart("svc-demo") == "outpost svc-demo: 0 changed, 0 removed, restarted: demo(restart)"
    assert fake.commands("restart") == [["systemctl", "restart", "demo.service"]]
    with pytest.raises(Exception, match="no stored manifest svc-other"):
        agent.restart("svc-other")


def test_reload_leaves_a_stopped_unit_stopped(host):
    agent, fake, _ = host
    doc = manifest(name="tls", files=[text_file("/srv/cert.pem", "a")],
                   restart=[{"group": "certs", "strategy": "reload", "scope": "system",
                             "when": ["/srv/cert.pem"], "instances": [{"unit": "caddy.service", "health": None}]}])
    apply(agent, doc)
    doc["files"][0]["content"] = "b"
    assert apply(agent, doc).endswith("restarted: certs(reload)")
    assert fake.commands("try-reload-or-restart") == [["systemctl", "try-reload-or-restart", "caddy.service"]] * 2
    assert not fake.commands("reload")


def test_an_existing_account_with_another_home_is_not_taken_over(host, monkeypatch):
    """The manifest's `home` is authoritative: its files below the home were rendered for it, so an
    account of outpost's own whose home is elsewhere is refused; the same home is no change."""
    import pwd
    agent, fake, _ = host
    entry = pwd.struct_passwd(("svc", "x", 990, 990, "outpost", "/var/lib/svc", "/usr/sbin/nologin"))
    monkeypatch.setattr(pwd, "getpwnam", lambda name: entry if name == "svc" else pwd.getpwnam(name))
    monkeypatch.setattr(type(agent), "locked_by_outpost", lambda self, user: False)
    user = {"name": "svc", "home": "/home/svc", "shell": "/usr/sbin/nologin", "linger": False, "system": True}
    with pytest.raises(AgentError, match="user svc exists with home /var/lib/svc, not /home/svc"):
        agent.ensure_users([user])
    assert not [c for c in fake.calls if c[0] in ("useradd", "loginctl")]
    agent.ensure_users([{**user, "home": "/var/lib/svc"}])   # the same home: nothing to create
    assert not [c for c in fake.calls if c[0] == "useradd"]


@pytest.mark.parametrize("home", ["/var/lib/postgresql", "/home/postgres"])
def test_an_account_outpost_did_not_create_is_refused_naming_the_key(host, monkeypatch, home):
    """A host's own postgres (or a person's login of that name), whatever its home: the error names
    the stack key to change, and the apply changes nothing."""
    import pwd
    agent, fake, root = host
    entry = pwd.struct_passwd(("postgres", "x", 110, 117, "PostgreSQL administrator,,,", home, "/bin/bash"))
    monkeypatch.setattr(pwd, "getpwnam", lambda name: entry if name == "postgres" else pwd.getpwnam(name))
    doc = manifest(name="svc-postgres", users=[{"name": "postgres", "home": "/home/postgres",
                                                "key": "services.postgres.user"}],
                   dirs=[{"path": "/srv/pg"}], files=[text_file("/srv/pg/conf", "x")])
    with pytest.raises(AgentError) as err:
        apply(agent, doc)
    message = str(err.value)
    assert message.startswith("user postgres already exists on this host and outpost did not create it")
    assert "set services.postgres.user to an account of its own (no dir, file or unit was changed)" in message
    assert not [c for c in fake.calls if c[0] in ("useradd", "usermod", "loginctl")]
    assert not (root / "srv" / "pg").exists()


def test_a_dynamic_user_service_named_like_an_existing_account_is_refused(host, monkeypatch):
    """DynamicUser= runs a service as an existing account of its user's name: refused; a name no
    account has, or one of systemd's own dynamic accounts (the service running now), is fine."""
    import pwd
    agent, fake, _ = host
    accounts = {"mysql": pwd.struct_passwd(("mysql", "x", 112, 120, "MySQL Server,,,", "/nonexistent", "/bin/false")),
                "web": pwd.struct_passwd(("web", "x", 63017, 63017, "Dynamic User", "/", "/usr/sbin/nologin"))}

    def getpwnam(name):
        if name in accounts:
            return accounts[name]
        raise KeyError(name)

    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    agent.check_dynamic_users([{"name": "web", "key": "services.web"}, {"name": "free", "key": "services.free"}])
    with pytest.raises(AgentError, match=r"user mysql already exists on this host .* DynamicUser= uses an existing "
                                         r"account of that name.* set services\.mysql to an account of its own"):
        agent.check_dynamic_users([{"name": "mysql", "key": "services.mysql"}])
    doc = manifest(name="svc-mysql", dynamic_users=[{"name": "mysql", "key": "services.mysql"}],
                   files=[text_file("/etc/mysql.conf", "x")])
    with pytest.raises(AgentError, match="user mysql already exists"):
        apply(agent, doc)


@pytest.mark.parametrize("entry", [{"name": "Bad Name"}, {"name": "ok", "extra": 1}, {"name": "ok", "key": 3}, "ok"])
def test_dynamic_users_entries_are_checked(entry):
    doc = manifest(dynamic_users=[entry])
    with pytest.raises(AgentError, match=r"dynamic_users\[0\]: needs a valid name"):
        load_manifest(json.dumps(doc), "svc-demo")
