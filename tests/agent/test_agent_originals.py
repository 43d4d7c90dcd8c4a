"""Destroy puts back what was there: the files a manifest overwrote that outpost did not write.

The first apply that writes a path no stored manifest has written keeps a root-only copy of the
regular file there (content, mode, owner) under /var/lib/outpost/originals/; the removal of the
last manifest listing the path puts it back instead of unlinking it. Runs against a temporary
root with the recording FakeHost (tests run as root), like test_agent_unit.py.
"""

import errno
import grp
import hashlib
import io
import json
import os
import pwd
import stat

import pytest

from test_agent_unit import FakeHost, apply, manifest, text_file

from outpost_agent.base import AgentError
from outpost_agent.cli import Agent

AUTO = "/etc/apt/apt.conf.d/20auto-upgrades"
ORIGINAL = b'APT::Periodic::Update-Package-Lists "1";\n\x00 not text \xff\n'
USER = "nobody"
UID = pwd.getpwnam(USER).pw_uid
GID = pwd.getpwnam(USER).pw_gid
GROUP = grp.getgrgid(GID).gr_name
KEYS = "/home/nobody/.ssh/authorized_keys"
HOST_KEY = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostsOwnAdminKey admin@laptop\n"


@pytest.fixture
def host(tmp_path):
    for d in ("etc/apt/apt.conf.d", "etc/systemd/system", "home/nobody/.ssh", "var/lib"):
        (tmp_path / d).mkdir(parents=True)
    os.chown(tmp_path / "home/nobody", UID, GID)
    os.chown(tmp_path / "home/nobody/.ssh", UID, GID)
    log = io.StringIO()
    agent = Agent(root=str(tmp_path), run=FakeHost(), log=log)
    return agent, tmp_path, log


def plant(root, path, data, mode, uid=0, gid=0):
    p = root / path.lstrip("/")
    p.write_bytes(data)
    os.chown(p, uid, gid)
    os.chmod(p, mode)
    return p


def on_disk(p):
    st = os.lstat(p)
    return p.read_bytes(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def originals(root):
    folder = root / "var/lib/outpost/originals"
    return sorted(folder.iterdir()) if folder.exists() else []


def base(files, name="base"):
    return manifest(name=name, files=files)


def test_a_preexisting_file_is_put_back_byte_for_byte_with_its_mode_and_owner(host):
    agent, root, log = host
    p = plant(root, AUTO, ORIGINAL, 0o640, UID, GID)
    apply(agent, base([text_file(AUTO, "APT::Periodic::Unattended-Upgrade \"1\";\n")]))
    assert p.read_text() == "APT::Periodic::Unattended-Upgrade \"1\";\n"
    assert on_disk(p)[1:] == (0o644, 0, 0)
    folder = root / "var/lib/outpost/originals"
    st = folder.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, 0)
    key = hashlib.sha256(AUTO.encode()).hexdigest()
    assert [f.name for f in originals(root)] == [f"{key}.data", f"{key}.json"]
    for f in originals(root):
        assert (stat.S_IMODE(f.stat().st_mode), f.stat().st_uid) == (0o600, 0)
    assert (folder / f"{key}.data").read_bytes() == ORIGINAL
    meta = json.loads((folder / f"{key}.json").read_text())
    assert meta | {"sha256": None} == {"path": AUTO, "mode": "0640", "uid": UID, "gid": GID,
                                       "sha256": None, "size": len(ORIGINAL)}
    assert f"kept the original {AUTO}" in log.getvalue()

    line = agent.remove("base", "t1")
    assert line.startswith("outpost base: removed 1 files and dirs") and line.endswith("put back 1 original")
    assert on_disk(p) == (ORIGINAL, 0o640, UID, GID)
    assert f"put back the original {AUTO}" in log.getvalue()
    assert not (root / "var/lib/outpost").exists(), "destroy left outpost's state (or originals) behind"


def test_an_authorized_keys_in_a_users_home_comes_back_and_is_never_printed(host, capsys):
    agent, root, log = host
    p = plant(root, KEYS, HOST_KEY, 0o600, UID, GID)
    doc = base([{"path": KEYS, "mode": "0600", "owner": USER, "group": GROUP,
                 "content": "ssh-ed25519 AAAAdeploykey outpost\n"}])
    apply(agent, doc)
    assert p.read_bytes() == b"ssh-ed25519 AAAAdeploykey outpost\n"
    agent.remove("base", "t1")
    assert on_disk(p) == (HOST_KEY, 0o600, UID, GID)
    out = capsys.readouterr()
    for text in (log.getvalue(), out.out, out.err):
        assert "HostsOwnAdminKey" not in text
    assert not (root / "var/lib/outpost").exists()


def test_a_path_two_manifests_list_comes_back_only_when_the_last_goes(host):
    agent, root, _ = host
    p = plant(root, AUTO, ORIGINAL, 0o644)
    apply(agent, base([text_file(AUTO, "a\n")], name="base"))
    apply(agent, base([text_file(AUTO, "b\n")], name="other"))
    assert p.read_bytes() == b"b\n"
    assert len(originals(root)) == 2, "the second manifest kept outpost's own file as an original"
    agent.remove("base", "t1")
    assert p.read_bytes() == b"b\n" and len(originals(root)) == 2
    assert agent.remove("other", "t1").endswith("put back 1 original")
    assert on_disk(p) == (ORIGINAL, 0o644, 0, 0)
    assert not (root / "var/lib/outpost").exists()


def test_a_file_outpost_created_is_simply_removed(host):
    agent, root, _ = host
    apply(agent, base([text_file(AUTO, "new\n")]))
    assert originals(root) == []
    line = agent.remove("base", "t1")
    assert "put back" not in line and not (root / AUTO.lstrip("/")).exists()
    assert not (root / "var/lib/outpost").exists()


def test_a_later_apply_keeps_the_first_original(host):
    agent, root, _ = host
    p = plant(root, AUTO, ORIGINAL, 0o600)
    apply(agent, base([text_file(AUTO, "v1\n")]), token="t1")
    apply(agent, base([text_file(AUTO, "v2\n")]), token="t2")
    p.write_bytes(b"drifted\n")  # someone edits outpost's file: still not an original
    apply(agent, base([text_file(AUTO, "v2\n")]), token="t2")
    agent.remove("base", "t2")
    assert on_disk(p) == (ORIGINAL, 0o600, 0, 0)


def test_a_dropped_file_gets_its_original_back_at_the_next_apply(host):
    agent, root, _ = host
    p = plant(root, AUTO, ORIGINAL, 0o640)
    keep = text_file("/etc/apt/apt.conf.d/99outpost", "x\n")
    apply(agent, base([keep, text_file(AUTO, "v1\n")]), token="t1")
    assert apply(agent, base([keep]), token="t2").startswith("outpost base: 0 changed, 1 removed")
    assert on_disk(p) == (ORIGINAL, 0o640, 0, 0)
    assert originals(root) == [], "the put-back original's copy was kept"
    apply(agent, base([keep, text_file(AUTO, "v3\n")]), token="t3")  # listed again: kept again
    agent.remove("base", "t3")
    assert on_disk(p) == (ORIGINAL, 0o640, 0, 0)
    assert not (root / "var/lib/outpost").exists()


@pytest.mark.parametrize("k", range(1, 7))
@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO])
def test_a_run_cut_off_at_any_write_converges_and_remove_puts_the_original_back(host, monkeypatch,
                                                                                 k, error):
    """The k-th staged write (state, the original's copy, its record, the file) runs out of
    space, or the k-th rename fails: the re-run finishes, and the original still comes back."""
    agent, root, _ = host
    p = plant(root, AUTO, ORIGINAL, 0o640, UID, GID)
    calls = {"n": 0}
    method = "stage" if error == errno.ENOSPC else "commit"
    real = getattr(Agent, method)

    def faulty(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == k:
            raise OSError(error, os.strerror(error))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Agent, method, faulty)
    doc = base([text_file(AUTO, "outpost\n"), text_file("/etc/systemd/system/x.service", "[Unit]\n")])
    try:
        apply(agent, doc)
    except AgentError:
        pass
    monkeypatch.setattr(Agent, method, real)
    apply(agent, doc)
    assert p.read_bytes() == b"outpost\n"
    assert len(originals(root)) == 2
    agent.remove("base", "t1")
    assert on_disk(p) == (ORIGINAL, 0o640, UID, GID)
    assert not (root / "etc/systemd/system/x.service").exists()
    assert not (root / "var/lib/outpost").exists()
    assert not list(root.rglob(".outpost-stage-*"))


def test_a_run_killed_at_the_files_rename_finds_the_original_already_saved(host, monkeypatch):
    agent, root, _ = host
    p = plant(root, AUTO, ORIGINAL, 0o640)
    real = Agent.commit
    key = hashlib.sha256(AUTO.encode()).hexdigest()

    class Killed(BaseException):
        pass

    def killed_at_rename(self, staged):
        if staged.host_path == AUTO:
            folder = root / "var/lib/outpost/originals"
            assert (folder / f"{key}.data").read_bytes() == ORIGINAL, "the original is not saved yet"
            assert (folder / f"{key}.json").exists(), "the original is not recorded yet"
            raise Killed()
        return real(self, staged)

    monkeypatch.setattr(Agent, "commit", killed_at_rename)
    with pytest.raises(Killed):
        apply(agent, base([text_file(AUTO, "outpost\n")]))
    assert p.read_bytes() == ORIGINAL
    monkeypatch.setattr(Agent, "commit", real)
    apply(agent, base([text_file(AUTO, "outpost\n")]))
    assert p.read_bytes() == b"outpost\n"
    agent.remove("base", "t1")
    assert on_disk(p) == (ORIGINAL, 0o640, 0, 0)
    assert not (root / "var/lib/outpost").exists()


def test_a_first_apply_that_failed_before_writing_leaves_what_is_there(host, monkeypatch):
    """Failing at the packages (before any original is kept or file written): the recorded first
    apply's removal must not delete the host's own file, and a re-run still keeps it."""
    agent, root, _ = host
    p = plant(root, AUTO, ORIGINAL, 0o640)

    def no_network(self, packages):
        raise AgentError("installing packages caddy failed")

    monkeypatch.setattr(Agent, "ensure_packages", no_network)
    with pytest.raises(AgentError):
        apply(agent, base([text_file(AUTO, "outpost\n")]), token="first")
    agent.remove("base", "first")
    assert on_disk(p) == (ORIGINAL, 0o640, 0, 0)
    assert not (root / "var/lib/outpost").exists()

    with pytest.raises(AgentError):
        apply(agent, base([text_file(AUTO, "outpost\n")]), token="first")
    monkeypatch.undo()
    apply(agent, base([text_file(AUTO, "outpost\n")]), token="first")
    agent.remove("base", "first")
    assert on_disk(p) == (ORIGINAL, 0o640, 0, 0)


def test_a_failed_validation_changes_nothing_and_the_kept_copy_is_harmless(host):
    """Decision: the copy kept before a validation that failed stays; the file was never
    overwritten, so putting it back (or dropping the copy) leaves the host as it was."""
    agent, root, _ = host
    p = plant(root, AUTO, ORIGINAL, 0o640)
    doc = manifest(name="base", files=[text_file(AUTO, "outpost\n")], validate=[{"argv": ["false"]}])
    with pytest.raises(AgentError, match="validation failed"):
        apply(agent, doc)
    assert on_disk(p) == (ORIGINAL, 0o640, 0, 0)
    assert len(originals(root)) == 2
    apply(agent, base([text_file(AUTO, "outpost\n")]))
    assert len(originals(root)) == 2
    agent.remove("base", "t1")
    assert on_disk(p) == (ORIGINAL, 0o640, 0, 0)
    assert not (root / "var/lib/outpost").exists()


def test_a_failed_restart_puts_back_the_previous_file_and_keeps_one_original(host):
    """The rollback of a failed restart group restores what was on disk before the apply (the
    host's own file); the copy stays the one original, and remove still puts it back."""
    agent, root, _ = host
    p = plant(root, AUTO, ORIGINAL, 0o640)
    agent.runner.fail = True
    runner = agent.runner
    real = runner.systemctl

    def failing_restart(args):
        if args[0] == "restart" and runner.fail:
            return 1, "injected", ""
        return real(args)

    runner.systemctl = failing_restart
    doc = manifest(name="base", files=[text_file(AUTO, "outpost\n")],
                   restart=[{"group": "apt", "strategy": "restart", "when": [AUTO],
                             "instances": [{"unit": "apt-daily.service"}]}])
    with pytest.raises(AgentError, match="put back"):
        apply(agent, doc, token="t2")
    assert on_disk(p) == (ORIGINAL, 0o640, 0, 0)
    assert len(originals(root)) == 2
    runner.fail = False
    apply(agent, doc, token="t2")
    assert p.read_bytes() == b"outpost\n" and len(originals(root)) == 2
    agent.remove("base", "t2")
    assert on_disk(p) == (ORIGINAL, 0o640, 0, 0)


def test_a_symlink_planted_at_the_path_is_never_read_through(host):
    agent, root, log = host
    secret = plant(root, "/etc/shadow-decoy", b"root:$6$secret-hash:19000::::::\n", 0o600)
    (root / AUTO.lstrip("/")).symlink_to("/etc/shadow-decoy")
    apply(agent, base([text_file(AUTO, "outpost\n")]))
    assert originals(root) == [], "the link's target was kept as the original"
    assert not (root / AUTO.lstrip("/")).is_symlink()
    assert secret.read_bytes() == b"root:$6$secret-hash:19000::::::\n"
    agent.remove("base", "t1")
    assert not os.path.lexists(root / AUTO.lstrip("/"))
    assert secret.read_bytes() == b"root:$6$secret-hash:19000::::::\n"
    assert "secret-hash" not in log.getvalue()


def test_a_symlink_or_hard_link_a_user_planted_in_its_home_is_not_kept(host):
    agent, root, _ = host
    decoy = plant(root, "/etc/shadow-decoy", b"root:$6$secret-hash\n", 0o600)
    keys = root / KEYS.lstrip("/")
    keys.symlink_to("/etc/shadow-decoy")
    os.lchown(keys, UID, GID)
    doc = base([{"path": KEYS, "mode": "0600", "owner": USER, "group": GROUP, "content": "k\n"}])
    with pytest.raises(AgentError, match="refusing"):
        apply(agent, doc)
    assert originals(root) == []
    keys.unlink()
    os.link(decoy, keys)  # (protected_hardlinks stops a real user; root must not rely on it)
    apply(agent, doc)
    assert originals(root) == []
    assert decoy.read_bytes() == b"root:$6$secret-hash\n"


def test_a_directory_in_the_way_stays_an_error(host):
    agent, root, _ = host
    (root / AUTO.lstrip("/")).mkdir()
    with pytest.raises(AgentError, match="is a directory"):
        apply(agent, base([text_file(AUTO, "outpost\n")]))
    assert originals(root) == []


def test_a_damaged_copy_stops_the_removal_before_anything_changes(host):
    agent, root, _ = host
    p = plant(root, AUTO, ORIGINAL, 0o640)
    apply(agent, base([text_file(AUTO, "outpost\n")]))
    data = [f for f in originals(root) if f.suffix == ".data"][0]
    data.write_bytes(b"tampered")
    with pytest.raises(AgentError, match="missing or damaged"):
        agent.remove("base", "t1")
    assert p.read_bytes() == b"outpost\n"
