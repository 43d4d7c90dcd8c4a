"""Package and account steps that fail leave the host as it was, and the next apply converges.

An update (v1 → v2) also adds a package, a service user with linger and a directory that user
owns. One step of it fails once the way it does on real hosts: apt-get's lock is held by another
apt (exit 100), dpkg fails under apt-get, useradd cannot lock /etc/passwd, enabling linger fails,
or unlocking a user an earlier removal kept fails. The apply must fail naming the step, having
changed no file, dir or unit (the old version keeps running and the stored token stays), and the
same manifest applied again without the fault must end with everything as the manifest says.
The host's package and account databases are a small stand-in (`SetupHost`), seen by the agent
through patched `pwd`/`grp` lookups; files, dirs and ownership are real, in a temporary root.
"""

import grp
import pwd

import pytest

from test_agent_faults import CONF, UNIT, FaultyHost, assert_converged, versioned
from test_agent_unit import apply

from outpost_agent.base import AgentError
from outpost_agent.cli import Agent

USER, UID = "demo", 4711
DATA_DIR = "/srv/demo"


def v2_with_setup():
    doc = versioned("v2")
    doc.update(packages=["demo-pkg"], users=[{"name": USER, "linger": True}],
               dirs=[{"path": DATA_DIR, "mode": "0750", "owner": USER, "group": USER}])
    return doc


class SetupHost(FaultyHost):
    """FaultyHost that also keeps a package list and an account database, and fails one
    matching command once with the exit code and words of the real tool."""

    def __init__(self, root):
        super().__init__(root)
        self.installed, self.users, self.lingering, self.fault = set(), {}, set(), None

    def __call__(self, argv, **kwargs):
        if self.fault and self.fault[0](argv):
            _, code, words = self.fault
            self.fault = None
            self.calls.append(list(argv))
            return code, words, ""
        if argv[0] == "dpkg-query":
            self.calls.append(list(argv))
            out = "".join(f"{p}\t{'installed' if p in self.installed else 'not-installed'}\n"
                          for p in argv[3:])
            return 0, out, out
        if argv[0] == "apt-get" and "install" in argv:
            self.installed.update(a for a in argv[argv.index("install") + 1:] if not a.startswith("-"))
        if argv[0] == "useradd":
            self.users[argv[-1]] = {"locked": False}
        if argv[0] == "usermod" and "--unlock" in argv:
            self.users[argv[-1]]["locked"] = False
            (self.root / "etc/shadow").write_text(f"{argv[-1]}:!:19000:0:99999:7:::\n")
        if argv[0] == "loginctl" and argv[1] == "enable-linger":
            self.lingering.add(argv[2])
        return super().__call__(argv, **kwargs)


@pytest.fixture
def host(tmp_path, monkeypatch):
    for d in ("etc/systemd/system", "var/lib", "srv", "home"):
        (tmp_path / d).mkdir(parents=True)
    fake = SetupHost(tmp_path)
    real_user, real_group = pwd.getpwnam, grp.getgrnam

    def getpwnam(name):
        if name in fake.users:
            return pwd.struct_passwd((name, "x", UID, UID, "outpost", f"/home/{name}", "/usr/sbin/nologin"))
        return real_user(name)

    def getgrnam(name):
        if name in fake.users:
            return grp.struct_group((name, "x", UID, []))
        return real_group(name)

    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(grp, "getgrnam", getgrnam)
    agent = Agent(root=str(tmp_path), run=fake, log=open("/dev/null", "w"))
    apply(agent, versioned("v1"))
    return agent, fake, tmp_path


def kept_locked(fake, root):
    """The user exists, locked by an earlier removal (expiry day 1 in /etc/shadow)."""
    fake.users[USER] = {"locked": True}
    (root / "etc/shadow").write_text(f"{USER}:!!:19000:0:99999:7::1:\n")


FAULTS = {
    "apt lock held": (lambda a: a[0] == "apt-get" and "update" in a, 100,
                      "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 4242 (apt-get)",
                      "installing packages demo-pkg failed"),
    "dpkg lock held": (lambda a: a[0] == "apt-get" and "install" in a, 100,
                       "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 "
                       "(unattended-upgr)\nE: Unable to acquire the dpkg frontend lock",
                       "installing packages demo-pkg failed"),
    "dpkg fails": (lambda a: a[0] == "apt-get" and "install" in a, 100,
                   "E: Sub-process /usr/bin/dpkg returned an error code (1)",
                   "installing packages demo-pkg failed"),
    "useradd fails": (lambda a: a[0] == "useradd", 1, "useradd: cannot lock /etc/passwd; try again later.",
                      "creating user demo failed"),
    "linger fails": (lambda a: a[:2] == ["loginctl", "enable-linger"], 1,
                     "Could not enable linger: Access denied", "enabling linger for demo failed"),
    "unlock fails": (lambda a: a[0] == "usermod", 1, "usermod: cannot lock /etc/passwd; try again later.",
                     "unlocking user demo failed"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failing_package_or_account_step_changes_nothing_and_the_next_apply_converges(host, fault):
    agent, fake, root = host
    if fault == "unlock fails":
        kept_locked(fake, root)
    match, code, words, step = FAULTS[fault]
    fake.fault = (match, code, words)
    with pytest.raises(AgentError) as failed:
        apply(agent, v2_with_setup(), token="t2")
    message = str(failed.value)
    assert message.startswith(step) and f"exit {code}" in message
    assert "no dir, file or unit was changed" in message and "\n" not in message
    assert fake.read(UNIT) == "[Service]\nExecStart=/bin/true v1\n" and fake.read(CONF) == "v1\n"
    assert fake.running == (fake.read(UNIT), "v1\n"), "the old version must keep running"
    assert not (root / DATA_DIR.lstrip("/")).exists()
    assert agent.load_state("svc-demo")["token"] == "t1"
    assert not list(root.rglob(".outpost-stage-*"))

    apply(agent, v2_with_setup(), token="t2")
    assert_converged(fake, root)
    assert "demo-pkg" in fake.installed
    assert fake.users[USER] == {"locked": False} and USER in fake.lingering
    data = (root / DATA_DIR.lstrip("/")).stat()
    assert (data.st_uid, data.st_gid, data.st_mode & 0o7777) == (UID, UID, 0o750)
    assert agent.load_state("svc-demo")["token"] == "t2"


def test_apt_waits_a_bounded_time_for_the_lock_another_apt_holds(host):
    agent, fake, _ = host
    apply(agent, v2_with_setup(), token="t2")
    for apt in [c for c in fake.calls if c[0] == "apt-get"]:
        assert apt[1:3] == ["-o", "DPkg::Lock::Timeout=300"], apt
