"""Removing a manifest keeps a service user's data unless the manifest says purge.

Renaming a service, moving it to another host or changing its `user:` removes the old manifest:
that must stop its units and take outpost's files away, but keep the user (locked) and its home.
Only `users[].purge: true` deletes them. The service user is a stand-in the agent sees through a
patched `pwd.getpwnam` (it is never created on the test machine); useradd, usermod and userdel are
recorded by FakeHost.
"""

import pwd

import pytest

from test_agent_unit import FakeHost, apply, manifest

from outpost_agent.base import AgentError
from outpost_agent.cli import Agent
from outpost_agent.manifest import load_manifest

USER, UID = "keeper", 4242
HOME = f"/home/{USER}"
SUCCESSOR = "heir"   # the user a `user:` change or a renamed service moves to
STAND_INS = {USER: UID, SUCCESSOR: 4343}


@pytest.fixture
def host(tmp_path, monkeypatch):
    real = pwd.getpwnam

    def getpwnam(name):
        if name in STAND_INS:
            uid = STAND_INS[name]
            return pwd.struct_passwd((name, "x", uid, uid, "outpost", f"/home/{name}", "/usr/sbin/nologin"))
        return real(name)

    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    for d in ("etc", "var/lib", f"home/{USER}/data"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / f"home/{USER}/data/db.sqlite").write_text("years of data\n")
    fake = FakeHost()
    agent = Agent(root=str(tmp_path), run=fake, log=open("/dev/null", "w"))
    return agent, fake, tmp_path


def user_manifest(name="svc-demo", user=USER, **options):
    return manifest(name=name, users=[{"name": user, **options}],
                    files=[{"path": f"/etc/{user}.conf", "content": "x\n"}])


def lock(user):
    return ["usermod", "--lock", "--expiredate", "1", "--shell", "/usr/sbin/nologin", user]


def test_remove_keeps_the_user_locked_and_its_home(host):
    agent, fake, root = host
    apply(agent, user_manifest())
    line = agent.remove("svc-demo", "t1")
    assert line.endswith("deleted users: none, kept users (locked, data kept): keeper")
    assert not [c for c in fake.calls if c[0] == "userdel"]
    assert lock(USER) in fake.calls
    assert (root / f"home/{USER}/data/db.sqlite").read_text() == "years of data\n"
    assert not (root / "etc/keeper.conf").exists()  # outpost's own files still go


def test_a_user_change_locks_the_old_user_and_keeps_its_data(host):
    """`user:` changes: the same Command applies the same manifest name with the new user. The
    old user goes exactly as a removal would take it: locked, its data kept."""
    agent, fake, root = host
    apply(agent, user_manifest())
    fake.calls.clear()
    apply(agent, user_manifest(user=SUCCESSOR), token="t2")
    assert lock(USER) in fake.calls
    assert lock(SUCCESSOR) not in fake.calls and not [c for c in fake.calls if c[0] == "userdel"]
    assert ["loginctl", "disable-linger", USER] in fake.calls
    assert (root / f"home/{USER}/data/db.sqlite").read_text() == "years of data\n"
    assert not (root / f"etc/{USER}.conf").exists() and (root / f"etc/{SUCCESSOR}.conf").exists()
    assert agent.load_state("svc-demo")["leftover"] is None
    fake.calls.clear()
    apply(agent, user_manifest(user=SUCCESSOR), token="t2")   # nothing owed any more
    assert not [c for c in fake.calls if c[0] in ("usermod", "loginctl")]


def test_a_user_change_whose_lock_failed_is_finished_by_the_next_apply(host):
    agent, fake, root = host
    apply(agent, user_manifest())
    real = fake.__call__

    def usermod_fails(argv, **kwargs):
        if argv[0] == "usermod":
            fake.calls.append(list(argv))
            return 1, "usermod: cannot lock /etc/passwd; try again later.", ""
        return real(argv, **kwargs)

    fake_run, agent.runner = agent.runner, usermod_fails
    with pytest.raises(Exception, match="usermod"):
        apply(agent, user_manifest(user=SUCCESSOR), token="t2")
    agent.runner = fake_run
    fake.calls.clear()
    apply(agent, user_manifest(user=SUCCESSOR), token="t2")
    assert lock(USER) in fake.calls
    assert agent.load_state("svc-demo")["leftover"] is None


def test_a_renamed_service_locks_its_old_user_when_the_old_manifest_goes(host):
    """A rename (or a move to another host): the new manifest is applied, then the old one removed."""
    agent, fake, _ = host
    apply(agent, user_manifest())
    apply(agent, user_manifest(name="svc-renamed", user=SUCCESSOR))
    agent.remove("svc-demo", "t1")
    assert lock(USER) in fake.calls and lock(SUCCESSOR) not in fake.calls


def test_a_renamed_service_that_keeps_its_user_keeps_it_unlocked(host):
    agent, fake, _ = host
    apply(agent, user_manifest())
    apply(agent, user_manifest(name="svc-renamed"))
    agent.remove("svc-demo", "t1")
    assert not [c for c in fake.calls if c[0] == "usermod"]


def test_purge_deletes_the_user_with_its_home(host):
    agent, fake, _ = host
    apply(agent, user_manifest(purge=True))
    with pytest.raises(Exception, match="userdel could not delete keeper"):
        agent.remove("svc-demo", "t1")  # the stand-in user cannot really go away
    assert ["userdel", "--remove", USER] in fake.calls
    assert not [c for c in fake.calls if c[0] == "usermod"]


def test_a_kept_user_is_unlocked_when_a_manifest_lists_it_again(host):
    agent, fake, root = host
    (root / "etc/shadow").write_text(f"root:*:19000:0:99999:7:::\n{USER}:!!:19000:0:99999:7::1:\n")
    fake.calls.clear()
    apply(agent, user_manifest(shell="/bin/sh"))
    assert ["usermod", "--unlock", "--expiredate", "", "--shell", "/bin/sh", USER] in fake.calls
    (root / "etc/shadow").write_text(f"{USER}:!:19000:0:99999:7:::\n")
    fake.calls.clear()
    apply(agent, user_manifest(shell="/bin/sh"))
    assert not [c for c in fake.calls if c[0] == "usermod"]


def test_purge_must_be_a_boolean():
    import json
    with pytest.raises(AgentError, match=r"users\[0\]: purge must be true or false"):
        load_manifest(json.dumps(user_manifest(purge="yes")), "svc-demo")
