"""The on-host agent (files/agent/outpost_agent, as the zipapp the base manifest ships) against real
systemd on the Debian 13 VM.

Runs on the session's shared VM (tests/conftest.py: after tests/vm, before the validators; with
OUTPOST_TEST_VM=<state dir> on a VM already running there), copies the built agent to
/usr/local/lib/outpost/outpost-apply.py over SSH and runs it exactly as the Command resources do:
`sudo -n python3 ... apply NAME TOKEN` with the manifest on stdin, `... remove NAME TOKEN`.
The tests build on each other in file order (apply, re-apply, change, drop, ..., remove), each
manifest under its own NAME. The services are small python http.server instances whose /health
answers 500 for the ports the config file lists under `fail=`.
TCG is slow (seconds per process under load): every wait is bounded but generous.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import textwrap

import pytest

from components.render.agent import AGENT_PATH, agent_zipapp

pytestmark = pytest.mark.e2e

AGENT_ON_HOST = AGENT_PATH
HEALTH = {"interval": 1, "timeout": 3, "retries": 30}

WEB_PY = textwrap.dedent("""\
    import http.server, sys
    port, conf = int(sys.argv[1]), sys.argv[2]
    settings = dict(w.split("=", 1) for w in open(conf).read().split() if "=" in w)
    broken = str(port) in settings.get("fail", "").split(",")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = (f"broken build on {port}" if broken
                    else f"version {settings.get('version')} on {port}").encode()
            self.send_response(500 if broken else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
""")


def unit(description, exec_start):
    return (f"[Unit]\nDescription={description}\n\n[Service]\nExecStart={exec_start}\n\n"
            "[Install]\nWantedBy=multi-user.target\n")


def file(path, content, mode="0644", owner="root"):
    return {"path": path, "mode": mode, "owner": owner, "group": owner, "content": content,
            "b64": False}


def manifest(name, **parts):
    return {"format": 1, "name": name, "packages": [], "users": [], "dirs": [], "files": [],
            "units": [], "validate": [], "restart": [], **parts}


def token(doc):
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


@pytest.fixture(scope="module")
def vm(shared_vm):
    shared_vm.ssh(f"install -d -m 0755 /usr/local/lib/outpost && cat > {AGENT_ON_HOST}",
                  input=agent_zipapp())
    return shared_vm


class Result:
    def __init__(self, completed):
        self.code = completed.returncode
        self.out = completed.stdout.decode().strip()
        self.err = completed.stderr.decode().strip()
        self.summary = self.out.splitlines()[-1] if self.out else ""


def agent(vm, *args, doc=None):
    command = "sudo -n python3 " + shlex.join([AGENT_ON_HOST, *args])
    data = json.dumps(doc).encode() if doc is not None else None
    return Result(vm.ssh(command, input=data, check=False, timeout=900))


def apply(vm, doc, tok=None):
    return agent(vm, "apply", doc["name"], tok or token(doc), doc=doc)


def sh(vm, command):
    return vm.ssh(command, check=False, timeout=300).stdout.decode().strip()


def main_pid(vm, unit_name, scope=""):
    return sh(vm, f"systemctl {scope} show -P MainPID {unit_name}")


# -- svc-a: two plain system units, each restarted when its own config changes ----------------------

def svc_a(one="version=1", extra=True):
    files = [file("/usr/local/lib/otest/web.py", WEB_PY),
             file("/etc/systemd/system/otest-one.service",
                  unit("otest one", "/usr/bin/python3 /usr/local/lib/otest/web.py 8001 /etc/otest/one.conf")),
             file("/etc/systemd/system/otest-two.service",
                  unit("otest two", "/usr/bin/python3 /usr/local/lib/otest/web.py 8002 /etc/otest/two.conf")),
             file("/etc/otest/one.conf", one), file("/etc/otest/two.conf", "version=1")]
    if extra:
        files.append(file("/etc/otest/extra.txt", "dropped later\n", mode="0600"))
    return manifest("svc-a", dirs=[{"path": "/var/lib/otest", "mode": "0750", "owner": "root",
                                    "group": "root"}],
                    files=files, units=[{"unit": "otest-one.service"}, {"unit": "otest-two.service"}],
                    restart=[{"group": "one", "strategy": "restart", "when": ["/etc/otest/one.conf"],
                              "instances": [{"unit": "otest-one.service", "health": None}]},
                             {"group": "two", "strategy": "restart", "when": ["/etc/otest/two.conf"],
                              "instances": [{"unit": "otest-two.service", "health": None}]}])


def test_first_apply_writes_files_and_starts_units(vm):
    result = apply(vm, svc_a())
    assert result.code == 0, result.err
    assert result.out == result.summary  # the summary is the only line on stdout
    assert result.summary == "outpost svc-a: 11 changed, 0 removed, restarted: none"
    assert sh(vm, "systemctl is-active otest-one.service otest-two.service") == "active\nactive"
    assert sh(vm, "systemctl is-enabled otest-one.service") == "enabled"
    assert sh(vm, "stat -c '%a %U' /etc/otest/extra.txt /var/lib/otest") == "600 root\n750 root"
    assert sh(vm, "stat -c %a /var/lib/outpost/manifests/svc-a.json") == "600"
    assert "dropped later" not in sh(vm, "cat /var/lib/outpost/manifests/svc-a.json")


def test_same_manifest_again_changes_nothing(vm):
    pids = main_pid(vm, "otest-one"), main_pid(vm, "otest-two")
    result = apply(vm, svc_a())
    assert (result.code, result.summary) == (0, "outpost svc-a: 0 changed, 0 removed, restarted: none"), result.err
    assert (main_pid(vm, "otest-one"), main_pid(vm, "otest-two")) == pids


def test_changed_file_restarts_only_its_group(vm):
    one, two = main_pid(vm, "otest-one"), main_pid(vm, "otest-two")
    result = apply(vm, svc_a(one="version=2"))
    assert (result.code, result.summary) == (0, "outpost svc-a: 1 changed, 0 removed, restarted: one(restart)"), result.err
    assert main_pid(vm, "otest-one") != one
    assert main_pid(vm, "otest-two") == two
    assert "wrote /etc/otest/one.conf" in result.err and "version=2" not in result.err + result.out


def test_dropped_file_is_removed(vm):
    result = apply(vm, svc_a(one="version=2", extra=False))
    assert (result.code, result.summary) == (0, "outpost svc-a: 0 changed, 1 removed, restarted: none"), result.err
    assert sh(vm, "test -e /etc/otest/extra.txt || echo gone") == "gone"


# -- svc-roll: two templated instances, rolling, health-checked ----------------------------------------

def svc_roll(conf):
    instances = [{"unit": f"otest-web@{p}.service", "health": f"http://127.0.0.1:{p}/health"}
                 for p in (8011, 8012)]
    return manifest("svc-roll",
                    files=[file("/usr/local/lib/otest-roll/web.py", WEB_PY),
                           file("/etc/systemd/system/otest-web@.service",
                                unit("otest web %i", "/usr/bin/python3 /usr/local/lib/otest-roll/web.py "
                                                     "%i /etc/otest-roll/web.conf")),
                           file("/etc/otest-roll/web.conf", conf)],
                    units=[{"unit": i["unit"]} for i in instances],
                    restart=[{"group": "web", "strategy": "rolling", "when": ["/etc/otest-roll/web.conf"],
                              "instances": instances, "health": HEALTH}])


def test_rolling_restart_stops_at_the_unhealthy_instance(vm):
    first = apply(vm, svc_roll("version=1"))
    assert first.code == 0, first.err
    assert sh(vm, "systemctl is-enabled otest-web@8011.service otest-web@8012.service") == "enabled\nenabled"
    assert sh(vm, "curl -sS http://127.0.0.1:8012/health") == "version 1 on 8012"
    second_pid = main_pid(vm, "otest-web@8012")
    broken = apply(vm, svc_roll("version=2 fail=8011"))
    assert broken.code != 0
    assert "rolling restart of web stopped: otest-web@8011.service did not become healthy" in broken.err
    assert "HTTP 500: broken build on 8011" in broken.err
    assert "otest-web@8012.service were left untouched and keep serving" in broken.err
    assert "Traceback" not in broken.err
    assert main_pid(vm, "otest-web@8012") == second_pid
    assert sh(vm, "systemctl is-active otest-web@8012.service") == "active"
    assert sh(vm, "curl -sS http://127.0.0.1:8012/health") == "version 1 on 8012"
    fixed = apply(vm, svc_roll("version=3"))
    assert (fixed.code, fixed.summary) == (0, "outpost svc-roll: 1 changed, 0 removed, restarted: web(rolling)"), fixed.err
    assert sh(vm, "curl -sS http://127.0.0.1:8011/health http://127.0.0.1:8012/health") == \
        "version 3 on 8011version 3 on 8012"


# -- svc-ha: a rolling restart drained at a real haproxy, under a bounded request loop -----------------

HAPROXY_CFG = """\
global
    stats socket /run/otest-haproxy.sock mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend fe
    bind 127.0.0.1:8030
    default_backend web
backend web
    server r8031 127.0.0.1:8031
    server r8032 127.0.0.1:8032
"""

LOAD = ("i=0; while [ $i -lt 400 ] && [ ! -e /run/otest-stop ]; do "
        "curl -s -o /dev/null -m 5 -w '%{http_code}\\n' http://127.0.0.1:8030/ >> /run/otest-codes; "
        "i=$((i+1)); done")

SHOW_STAT = ("python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); "
             "s.connect('/run/otest-haproxy.sock'); s.sendall(b'show stat\\n'); "
             "print(s.makefile().read())\"")


def svc_ha(version, cfg=HAPROXY_CFG):
    instances = [{"unit": f"otest-ha@{p}.service", "health": f"http://127.0.0.1:{p}/health",
                  "drain": {"kind": "haproxy", "socket": "/run/otest-haproxy.sock", "backend": "web",
                            "server": f"r{p}"}} for p in (8031, 8032)]
    return manifest("svc-ha",
                    files=[file("/usr/local/lib/otest-ha/web.py", WEB_PY),
                           file("/etc/otest-ha/haproxy.cfg", cfg),
                           file("/etc/systemd/system/otest-haproxy.service",
                                unit("otest haproxy", "/usr/sbin/haproxy -Ws -f /etc/otest-ha/haproxy.cfg")
                                .replace("[Service]\n", "[Service]\nType=notify\n")),
                           file("/etc/systemd/system/otest-ha@.service",
                                unit("otest ha %i", "/usr/bin/python3 /usr/local/lib/otest-ha/web.py "
                                                    "%i /etc/otest-ha/web.conf")),
                           file("/etc/otest-ha/web.conf", f"version={version}")],
                    validate=[{"argv": ["haproxy", "-c", "-f", "{staged:/etc/otest-ha/haproxy.cfg}"]}],
                    units=[{"unit": "otest-haproxy.service"}] + [{"unit": i["unit"]} for i in instances],
                    restart=[{"group": "web-ha", "strategy": "rolling", "when": ["/etc/otest-ha/web.conf"],
                              "instances": instances, "health": HEALTH}])


def test_rolling_restart_drains_at_haproxy_and_loses_no_request(vm):
    first = apply(vm, svc_ha(1))
    assert first.code == 0, first.err
    assert sh(vm, "curl -sS http://127.0.0.1:8030/").startswith("version 1 on 803")
    vm.ssh("rm -f /run/otest-codes /run/otest-stop; "
           f"setsid -f sh -c {shlex.quote(LOAD)} </dev/null >/dev/null 2>&1")
    second = apply(vm, svc_ha(2))
    vm.ssh("touch /run/otest-stop; sleep 6")
    assert (second.code, second.summary) == (0, "outpost svc-ha: 1 changed, 0 removed, restarted: web-ha(rolling)"), second.err
    assert "drained web/r8031 at haproxy" in second.err and "web/r8032 is ready again" in second.err
    codes = sh(vm, "cat /run/otest-codes").split()
    assert codes and set(codes) == {"200"}, codes
    stat = {row.split(",")[1]: row.split(",")[17] for row in sh(vm, SHOW_STAT).splitlines()
            if row.startswith("web,r")}
    assert stat == {"r8031": "no check", "r8032": "no check"}  # both back in rotation, none in MAINT
    assert sh(vm, "curl -sS http://127.0.0.1:8031/health http://127.0.0.1:8032/health") == \
        "version 2 on 8031version 2 on 8032"


def test_failed_validation_keeps_the_old_config(vm):
    before = sh(vm, "sha256sum /etc/otest-ha/haproxy.cfg")
    broken = apply(vm, svc_ha(2, cfg=HAPROXY_CFG + "    bogus_keyword on\n"))
    assert broken.code == 1
    assert "validation failed, no file was changed: `haproxy -c -f '{staged:/etc/otest-ha/haproxy.cfg}'`" in broken.err
    assert "bogus_keyword" in broken.err
    assert sh(vm, "sha256sum /etc/otest-ha/haproxy.cfg") == before
    assert sh(vm, "ls -a /etc/otest-ha | grep -c outpost-stage; true") == "0"


# -- svc-bg: blue-green slots behind a switch file -----------------------------------------------------

def svc_bg(version):
    instances = [{"unit": f"otest-bg@{p}.service", "health": f"http://127.0.0.1:{p}/health"}
                 for p in (8021, 8022)]
    return manifest("svc-bg",
                    files=[file("/usr/local/lib/otest-bg/web.py", WEB_PY),
                           file("/etc/systemd/system/otest-bg@.service",
                                unit("otest bg %i", "/usr/bin/python3 /usr/local/lib/otest-bg/web.py "
                                                    "%i /etc/otest-bg/web.conf")),
                           file("/etc/otest-bg/web.conf", f"version={version}")],
                    units=[{"unit": i["unit"]} for i in instances],
                    restart=[{"group": "bg", "strategy": "blue-green", "when": ["/etc/otest-bg/web.conf"],
                              "instances": instances, "health": HEALTH,
                              "switch": {"path": "/etc/otest-bg/live.conf",
                                         "template": "server 127.0.0.1:{port}; # {unit}\n",
                                         "mode": "0644",
                                         "validate": ["grep", "-q", "^server", "{staged:/etc/otest-bg/live.conf}"],
                                         "reload": ["cp", "/etc/otest-bg/live.conf", "/run/otest-bg-proxy.conf"]}}])


def test_blue_green_deploys_to_the_idle_slot_and_switches_back(vm):
    first = apply(vm, svc_bg(1))
    assert (first.code, first.summary) == (0, "outpost svc-bg: 7 changed, 0 removed, restarted: bg(blue-green)"), first.err
    assert sh(vm, "cat /run/otest-bg-proxy.conf") == "server 127.0.0.1:8021; # otest-bg@8021.service"
    blue_pid = main_pid(vm, "otest-bg@8021")
    second = apply(vm, svc_bg(2))
    assert (second.code, second.summary) == (0, "outpost svc-bg: 1 changed, 0 removed, restarted: bg(blue-green)"), second.err
    assert sh(vm, "cat /run/otest-bg-proxy.conf") == "server 127.0.0.1:8022; # otest-bg@8022.service"
    assert sh(vm, "curl -sS http://127.0.0.1:8022/health") == "version 2 on 8022"
    assert main_pid(vm, "otest-bg@8021") == blue_pid  # the old slot keeps running the old version
    assert sh(vm, "curl -sS http://127.0.0.1:8021/health") == "version 1 on 8021"
    back = agent(vm, "switch", "bg")
    assert (back.code, back.summary) == (0, "outpost switch bg: live slot is now otest-bg@8021.service"), back.err
    assert sh(vm, "cat /run/otest-bg-proxy.conf") == "server 127.0.0.1:8021; # otest-bg@8021.service"
    status = agent(vm, "status")
    assert "bg: live slot otest-bg@8021.service" in status.out


# -- svc-user: a lingering system user with a user unit and a rootless quadlet ------------------------

USER_UNIT = "/home/otestuser/.config/systemd/user/otest-user.service"
QUADLET = "/home/otestuser/.config/containers/systemd/otest-q.container"


def svc_user(with_quadlet=False):
    files = [file(USER_UNIT, "[Service]\nExecStart=/usr/bin/sleep infinity\n\n[Install]\nWantedBy=default.target\n",
                  owner="otestuser")]
    units = [{"unit": "otest-user.service", "scope": "user:otestuser"}]
    if with_quadlet:
        files.append(file(QUADLET, "[Container]\nImage=localhost/sleep\nNetwork=none\n"
                                   "Exec=/usr/bin/sleep infinity\n\n"
                                   "[Install]\nWantedBy=default.target\n", owner="otestuser"))
        units.append({"unit": "otest-q.service", "scope": "user:otestuser"})
    return manifest("svc-user", users=[{"name": "otestuser", "home": "/home/otestuser", "linger": True,
                                        "system": True, "purge": True}], files=files, units=units)


IMPORT_IMAGE = r"""
set -eu
tar -chf /tmp/otest-sleep.tar /usr/bin/sleep $(ldd /usr/bin/sleep | grep -o '/[^ ]*')
chmod 0644 /tmp/otest-sleep.tar
cd /
runuser -u otestuser -- env XDG_RUNTIME_DIR=/run/user/$(id -u otestuser) \
    podman import -q /tmp/otest-sleep.tar localhost/sleep >/dev/null </dev/null
rm /tmp/otest-sleep.tar
"""


def test_user_scope_unit_and_quadlet(vm):
    first = apply(vm, svc_user())
    assert first.code == 0, first.err
    assert sh(vm, "id -u otestuser && test -e /var/lib/systemd/linger/otestuser && echo linger").endswith("linger")
    assert sh(vm, "stat -c %U /home/otestuser/.config /home/otestuser/.config/systemd") == "otestuser\notestuser"
    assert sh(vm, "systemctl --user -M otestuser@ is-active otest-user.service") == "active"
    assert vm.ssh(f"sh -c {shlex.quote(IMPORT_IMAGE)}", check=False, timeout=600).returncode == 0
    second = apply(vm, svc_user(with_quadlet=True))
    assert (second.code, second.summary) == (0, "outpost svc-user: 2 changed, 0 removed, restarted: none"), second.err
    assert sh(vm, "systemctl --user -M otestuser@ show -P UnitFileState otest-q.service") == "generated"
    assert sh(vm, "systemctl --user -M otestuser@ is-active otest-q.service") == "active"
    again = apply(vm, svc_user(with_quadlet=True))
    assert (again.code, again.summary) == (0, "outpost svc-user: 0 changed, 0 removed, restarted: none"), again.err


# -- svc-evil: a service user swaps its quadlet dir for a symlink to the system's --------------------

EVIL_QUADLET = "/home/otestevil/.config/containers/systemd/otest-evil.container"


def svc_evil(version="1"):
    return manifest("svc-evil", users=[{"name": "otestevil", "home": "/home/otestevil", "system": True,
                                        "linger": True, "purge": True}],
                    files=[file(EVIL_QUADLET, f"[Container]\nImage=localhost/none:{version}\n", owner="otestevil")])


def test_a_service_users_symlink_does_not_redirect_the_root_agent(vm):
    """The real kernel, the real user: otestevil replaces ~/.config/containers/systemd with a
    link to /etc/containers/systemd. apply must not write a quadlet there, remove must not
    unlink the system's file of the same name."""
    first = apply(vm, svc_evil())
    assert first.code == 0, first.err
    swap = ("cd ~/.config/containers && mv systemd systemd.away && ln -s /etc/containers/systemd systemd")
    assert vm.ssh(f"sudo -n runuser -u otestevil -- sh -c {shlex.quote(swap)}", check=False).returncode == 0
    second = apply(vm, svc_evil("2"))
    assert second.code == 1
    assert "refusing /home/otestevil/.config/containers/systemd: it is a symlink" in second.err
    assert sh(vm, "ls /etc/containers/systemd/otest-evil.container 2>&1 || true").endswith("No such file or directory")
    sh(vm, "sudo -n install -D -m 0644 /dev/null /etc/containers/systemd/otest-evil.container")
    removal = agent(vm, "remove", "svc-evil", token(svc_evil()))
    assert removal.code == 1 and "refusing /home/otestevil/.config/containers/systemd" in removal.err
    assert sh(vm, "test -e /etc/containers/systemd/otest-evil.container && echo kept") == "kept"
    # the operator takes the link away; then remove works and purges the user
    sh(vm, "sudo -n rm /etc/containers/systemd/otest-evil.container /home/otestevil/.config/containers/systemd")
    removal = agent(vm, "remove", "svc-evil", token(svc_evil()))
    assert removal.code == 0, removal.err
    assert sh(vm, "id otestevil 2>&1; true") == "id: 'otestevil': no such user"


# -- remove -------------------------------------------------------------------------------------------

def test_remove_with_a_stale_token_changes_nothing(vm):
    result = agent(vm, "remove", "svc-a", "0" * 32)
    assert (result.code, result.summary) == (0, "outpost svc-a: a successor owns svc-a (the stored token "
                                                "differs), nothing removed")
    assert sh(vm, "systemctl is-active otest-one.service") == "active"
    assert sh(vm, "test -e /etc/otest/one.conf && echo kept") == "kept"


@pytest.mark.parametrize("doc", [svc_a(one="version=2", extra=False), svc_roll("version=3"), svc_ha(2),
                                 svc_bg(2), svc_user(with_quadlet=True)], ids=lambda d: d["name"])
def test_remove_with_the_right_token_leaves_nothing_behind(vm, doc):
    result = agent(vm, "remove", doc["name"], token(doc))
    assert result.code == 0, result.err
    assert result.summary.startswith(f"outpost {doc['name']}: removed ")
    paths = " ".join(f["path"] for f in doc["files"])
    assert sh(vm, f"ls -d {paths} 2>/dev/null; true") == ""
    assert sh(vm, f"test -e /var/lib/outpost/manifests/{doc['name']}.json || echo gone") == "gone"
    units = sh(vm, "systemctl list-units --all --plain --no-legend 'otest-*'; "
                   "systemctl list-unit-files --plain --no-legend 'otest-*'")
    remaining = [line.split()[0] for line in units.splitlines() if line.strip()]
    own = {u["unit"] for u in doc["units"]}
    assert not own & set(remaining), remaining
    again = agent(vm, "remove", doc["name"], token(doc))
    assert again.summary == f"outpost {doc['name']}: nothing stored under this name, nothing to remove"


def test_no_trace_is_left(vm):
    assert sh(vm, "id otestuser 2>&1; true") == "id: 'otestuser': no such user"
    assert sh(vm, "ls -d /home/otestuser /var/lib/systemd/linger/otestuser /run/user/*/containers "
                  "2>/dev/null; grep otestuser /etc/subuid /etc/group; true") == ""
    # the dirs the manifests created went with them; the switch file and its state too
    assert sh(vm, "ls -d /etc/otest /etc/otest-roll /etc/otest-bg /etc/otest-ha /var/lib/otest "
                  "/usr/local/lib/otest /usr/local/lib/otest-roll /usr/local/lib/otest-bg "
                  "/usr/local/lib/otest-ha /etc/systemd/system/otest* "
                  "/var/lib/outpost/bluegreen/bg.json 2>/dev/null; true") == ""
    assert sh(vm, "systemctl list-units --all --plain --no-legend 'otest*'") == ""
