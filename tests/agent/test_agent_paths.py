"""The agent never writes, chowns or removes through a path a service user controls.

A service user owns its home and can swap any directory there for a symlink (or its own
directory) at any moment. Each test plants such a thing at one level of the paths outpost ships
into a home (the quadlet directory, the user unit directory and its default.target.d, the file
itself, the staging directory and the staging file, and a directory in the instant between its
mkdir and its chown) and checks that `apply` and `remove` refuse with an error naming the path
and leave everything outside the home exactly as it was.

The test machine's `nobody` stands in for the service user (tests run as root, in a temporary
directory used as the host's root, like test_agent_unit.py).
"""

import grp
import os
import pwd

import pytest

from test_agent_unit import FakeHost, apply, manifest

from outpost_agent.base import AgentError
from outpost_agent.cli import Agent

USER = "nobody"
HOME = "/home/nobody"
QUADLET = f"{HOME}/.config/containers/systemd/app.container"
DROPIN = f"{HOME}/.config/systemd/user/default.target.d/outpost-app.conf"
UID = pwd.getpwnam(USER).pw_uid
GID = pwd.getpwnam(USER).pw_gid
GROUP = grp.getgrgid(GID).gr_name


def home_manifest():
    return manifest(files=[{"path": p, "mode": "0644", "owner": USER, "group": GROUP,
                            "content": f"[Unit]\n# {p}\n"} for p in (QUADLET, DROPIN)])


@pytest.fixture
def host(tmp_path):
    for d in ("etc/containers/systemd", "etc/systemd/system/default.target.d", "home/nobody", "var/lib"):
        (tmp_path / d).mkdir(parents=True)
    os.chown(tmp_path / "home/nobody", UID, GID)
    (tmp_path / "etc/passwd-decoy").write_text("root:x:0:0\n")
    agent = Agent(root=str(tmp_path), run=FakeHost(), log=open(os.devnull, "w"))
    return agent, tmp_path


def outside(root):
    """Everything outside the home and the agent's own state: path → (kind, owner, content)."""
    seen = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel.startswith(("home/", "var/lib/outpost")):
            continue
        st = p.lstat()
        seen[rel] = (st.st_mode, st.st_uid, p.read_bytes() if p.is_file() and not p.is_symlink() else None)
    return seen


def as_user(path):
    os.lchown(path, UID, GID)
    return path


def make_home_dirs(root, upto):
    """Create the home's directories down to (not including) `upto`, owned by the user."""
    path = root / HOME.lstrip("/")
    for part in upto.relative_to(path).parts[:-1]:
        path = path / part
        path.mkdir(exist_ok=True)
        as_user(path)


# every level of both paths, with the outside place the planted symlink points at
LEVELS = [(".config", "etc"),
          (".config/containers", "etc/containers"),
          (".config/containers/systemd", "etc/containers/systemd"),
          (".config/containers/systemd/app.container", "etc/passwd-decoy"),
          (".config/systemd", "etc/systemd"),
          (".config/systemd/user", "etc/systemd/system"),
          (".config/systemd/user/default.target.d", "etc/systemd/system/default.target.d"),
          (".config/systemd/user/default.target.d/outpost-app.conf", "etc/passwd-decoy")]


@pytest.mark.parametrize("level,target", LEVELS, ids=[lvl for lvl, _ in LEVELS])
def test_apply_refuses_a_symlink_at_every_level(host, level, target):
    agent, root = host
    link = root / HOME.lstrip("/") / level
    make_home_dirs(root, link)
    link.symlink_to(root / target)
    as_user(link)
    before = outside(root)
    with pytest.raises(AgentError, match=f"refusing {HOME}/"):
        apply(agent, home_manifest())
    assert outside(root) == before


def test_apply_refuses_a_directory_of_another_user(host):
    agent, root = host
    config = root / HOME.lstrip("/") / ".config"
    config.mkdir()
    os.chown(config, 1, 1)  # daemon: neither the file's owner nor at home here
    with pytest.raises(AgentError, match=f"refusing {HOME}/.config: it belongs to uid 1"):
        apply(agent, home_manifest())
    assert list(config.iterdir()) == []


@pytest.mark.parametrize("level,target", LEVELS, ids=[lvl for lvl, _ in LEVELS])
def test_remove_refuses_a_symlink_at_every_level(host, level, target):
    agent, root = host
    assert apply(agent, home_manifest()).startswith("outpost svc-demo: 2 changed")
    link = root / HOME.lstrip("/") / level
    # the outside place holds what the agent would remove there if it followed the link
    for path in (QUADLET, DROPIN):
        rel = os.path.relpath(path, f"{HOME}/{level}")
        decoy = (root / target / rel) if rel != "." else root / target
        if rel != "." and decoy.parent.is_dir() and not decoy.exists():
            decoy.write_text("the host's own file\n")
    link.rename(link.with_name(link.name + ".moved"))
    link.symlink_to(root / target)
    as_user(link)
    before = outside(root)
    with pytest.raises(AgentError, match=f"refusing {HOME}/"):
        agent.remove("svc-demo", "t1")
    assert outside(root) == before
    assert (root / "var/lib/outpost/manifests/svc-demo.json").exists()


def racing_mkdir(monkeypatch, root, name_prefix, swap):
    """os.mkdir that lets `swap` replace what it just made (the instant a service user has
    between the agent's mkdir and its next step)."""
    real_mkdir = os.mkdir

    def mkdir(path, mode=0o777, *, dir_fd=None):
        real_mkdir(path, mode, dir_fd=dir_fd)
        full = os.path.join(f"/proc/self/fd/{dir_fd}" if dir_fd is not None else "", path)
        parent = os.path.realpath(os.path.dirname(full))
        if os.path.basename(path).startswith(name_prefix) and HOME in parent:
            monkeypatch.setattr(os, "mkdir", real_mkdir)  # once
            swap(parent, os.path.basename(path))

    monkeypatch.setattr(os, "mkdir", mkdir)


def test_a_staging_dir_swapped_for_a_symlink_is_refused(host, monkeypatch):
    agent, root = host
    def swap(parent, name):
        os.rmdir(os.path.join(parent, name))
        os.symlink(root / "etc/containers/systemd", os.path.join(parent, name))
    racing_mkdir(monkeypatch, root, ".outpost-stage-", swap)
    before = outside(root)
    with pytest.raises(AgentError, match=f"refusing {HOME}/.config/containers/systemd/.outpost-stage-"):
        apply(agent, home_manifest())
    assert outside(root) == before


def test_a_staging_dir_swapped_for_the_users_own_with_a_symlink_file_is_refused(host, monkeypatch):
    agent, root = host
    def swap(parent, name):
        os.rmdir(os.path.join(parent, name))
        os.mkdir(os.path.join(parent, name))
        as_user(os.path.join(parent, name))
        os.symlink(root / "etc/passwd-decoy", os.path.join(parent, name, "app.container"))
    racing_mkdir(monkeypatch, root, ".outpost-stage-", swap)
    before = outside(root)
    with pytest.raises(AgentError, match="refusing .*/.outpost-stage-.*replaced"):
        apply(agent, home_manifest())
    assert outside(root) == before


def test_a_new_parent_swapped_before_its_chown_is_refused(host, monkeypatch):
    """The race between mkdir and a chown by path: the chown must not reach /etc."""
    agent, root = host
    (root / HOME.lstrip("/") / ".config").mkdir()
    as_user(root / HOME.lstrip("/") / ".config")
    def swap(parent, name):
        os.rmdir(os.path.join(parent, name))
        os.symlink(root / "etc/containers", os.path.join(parent, name))
    racing_mkdir(monkeypatch, root, "containers", swap)
    before = outside(root)
    with pytest.raises(AgentError, match=f"refusing {HOME}/.config/containers"):
        apply(agent, home_manifest())
    assert outside(root) == before


def test_files_in_the_home_are_written_owned_by_the_user_and_removed(host):
    agent, root = host
    assert apply(agent, home_manifest()).startswith("outpost svc-demo: 2 changed")
    quadlet = root / QUADLET.lstrip("/")
    assert quadlet.stat().st_uid == UID and (root / HOME.lstrip("/") / ".config").stat().st_uid == UID
    assert not list(root.rglob(".outpost-stage-*"))
    assert agent.remove("svc-demo", "t1").startswith("outpost svc-demo: removed")
    assert not quadlet.exists()
    assert (root / HOME.lstrip("/")).is_dir()


def test_root_made_symlinks_in_root_only_directories_are_followed(host):
    """Merged /usr and friends: /lib -> usr/lib is the host's own and is followed."""
    agent, root = host
    (root / "usr/lib/systemd/system").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    doc = manifest(files=[{"path": "/lib/systemd/system/x.service", "content": "[Unit]\n"}])
    assert apply(agent, doc).startswith("outpost svc-demo: 1 changed")
    assert (root / "usr/lib/systemd/system/x.service").read_text() == "[Unit]\n"
