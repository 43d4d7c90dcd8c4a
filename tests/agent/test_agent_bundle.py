"""A host's bundle (outpost_agent/bundle.py): every manifest of a host from one Command.

apply-host applies, in order, only the manifests whose token moved, then removes the ones the
previous bundle dropped; a failed manifest stops the run and the next one picks up there; a
per-manifest `remove` (the delete of a Command from before bundles) leaves a bundled manifest
alone; remove-host takes everything, the base setup last. Against a temporary root with the
recording FakeHost of test_agent_unit (the real systemd is on the VM: tests/e2e)."""

import hashlib
import io
import json

import pytest

from outpost_agent.base import AgentError
from outpost_agent.bundle import HOST_STATE
from outpost_agent.cli import Agent, main
from test_agent_unit import FakeHost, manifest, text_file


@pytest.fixture
def host(tmp_path):
    fake = FakeHost()
    for d in ("etc/systemd/system", "etc/app", "opt"):
        (tmp_path / d).mkdir(parents=True)
    return Agent(root=str(tmp_path), run=fake, log=io.StringIO()), fake, tmp_path


def parts(**contents):
    """Manifests named by keyword (base first), each writing one file with the given content."""
    names = {"base": "base", **{k: k.replace("_", "-") for k in contents if k != "base"}}
    contents = {"base": "base v1\n", **contents}
    return [manifest(name=names[k], files=[text_file(f"/etc/app/{names[k]}.conf", c)]) for k, c in contents.items()]


def bundle(host_name, docs, tokens=None):
    tokens = tokens or {}
    return json.dumps({"format": 1, "host": host_name, "manifests": [
        {"name": d["name"], "manifest": d,
         "token": tokens.get(d["name"], hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:20])}
        for d in docs]})


def lines(capsys):
    return capsys.readouterr().out.strip().splitlines()


def test_a_first_bundle_applies_every_manifest_in_order(host, capsys):
    agent, _, root = host
    agent.apply_host("vm", bundle("vm", parts(svc_a="a v1\n", svc_b="b v1\n")))
    out = lines(capsys)
    assert [line.split(":")[0] for line in out] == ["outpost base", "outpost svc-a", "outpost svc-b", "outpost host vm"]
    assert out[-1] == "outpost host vm: 3 applied, 0 unchanged, 0 removed"
    assert (root / "etc/app/svc-b.conf").read_text() == "b v1\n"
    assert json.loads((root / HOST_STATE.lstrip("/")).read_text())["manifests"] == ["base", "svc-a", "svc-b"]


def test_the_same_bundle_again_applies_nothing(host, capsys):
    agent, fake, _ = host
    text = bundle("vm", parts(svc_a="a v1\n"))
    agent.apply_host("vm", text)
    capsys.readouterr()
    calls = len(fake.calls)
    agent.apply_host("vm", text)
    assert lines(capsys) == ["outpost base: unchanged", "outpost svc-a: unchanged",
                             "outpost host vm: 0 applied, 2 unchanged, 0 removed"]
    assert len(fake.calls) == calls, "an unchanged manifest runs no command at all"


def test_only_the_manifest_whose_token_moved_is_applied(host, capsys):
    agent, _, root = host
    agent.apply_host("vm", bundle("vm", parts(svc_a="a v1\n", svc_b="b v1\n")))
    capsys.readouterr()
    agent.apply_host("vm", bundle("vm", parts(svc_a="a v1\n", svc_b="b v2\n")))
    out = lines(capsys)
    assert out[:2] == ["outpost base: unchanged", "outpost svc-a: unchanged"]
    assert out[2].startswith("outpost svc-b: 1 changed")
    assert (root / "etc/app/svc-b.conf").read_text() == "b v2\n"


def test_a_dropped_manifest_is_removed_after_the_others_apply(host, capsys):
    agent, _, root = host
    agent.apply_host("vm", bundle("vm", parts(svc_a="a v1\n", svc_b="b v1\n")))
    capsys.readouterr()
    agent.apply_host("vm", bundle("vm", parts(svc_a="a v2\n")))
    out = lines(capsys)
    assert out[1].startswith("outpost svc-a: 1 changed") and out[2].startswith("outpost svc-b: removed")
    assert out[-1] == "outpost host vm: 1 applied, 1 unchanged, 1 removed"
    assert not (root / "etc/app/svc-b.conf").exists()
    assert json.loads((root / HOST_STATE.lstrip("/")).read_text())["manifests"] == ["base", "svc-a"]


def test_a_failing_manifest_stops_the_run_and_the_next_run_picks_up_there(host, capsys):
    agent, _, root = host
    broken = parts(svc_a="a v1\n", svc_b="b v1\n")
    broken[1]["validate"] = [{"argv": ["false"]}]
    with pytest.raises(AgentError, match="validation failed"):
        agent.apply_host("vm", bundle("vm", broken))
    assert not (root / "etc/app/svc-a.conf").exists() and not (root / "etc/app/svc-b.conf").exists()
    capsys.readouterr()
    agent.apply_host("vm", bundle("vm", parts(svc_a="a v1\n", svc_b="b v1\n")))
    out = lines(capsys)
    assert out[0] == "outpost base: unchanged" and out[1].startswith("outpost svc-a: 1 changed")
    assert out[-1] == "outpost host vm: 2 applied, 1 unchanged, 0 removed"


def test_a_first_apply_cut_short_is_not_taken_for_done(host, capsys):
    """A first apply that failed after its state was saved (token and all) must run again: only
    the kept `applied` copy, written when an apply finishes, says it is done."""
    agent, _, root = host
    text = bundle("vm", parts(svc_a="a v1\n"))
    real, failed = agent.commit, []

    def commit(staged):          # the disk fills up at svc-a's file
        if staged.host_path == "/etc/app/svc-a.conf" and not failed:
            failed.append(staged.host_path)
            raise OSError(28, "No space left on device")
        return real(staged)

    agent.commit = commit
    with pytest.raises(AgentError, match="could not write /etc/app/svc-a.conf"):
        agent.apply_host("vm", text)
    capsys.readouterr()
    agent.apply_host("vm", text)
    assert (root / "etc/app/svc-a.conf").read_text() == "a v1\n"
    out = lines(capsys)
    assert out[0] == "outpost base: unchanged" and out[1].startswith("outpost svc-a: 1 changed"), out


def test_a_per_manifest_remove_leaves_a_bundled_manifest_alone(host, capsys):
    """Upgrading from one Command per manifest: the engine creates the host's bundle Command,
    then deletes the old Commands, whose `remove NAME TOKEN` must not undo the bundle's work."""
    agent, _, root = host
    tokens = {"base": "tb", "svc-a": "ta"}
    agent.apply_host("vm", bundle("vm", parts(svc_a="a v1\n"), tokens))
    capsys.readouterr()
    assert main(["remove", "svc-a", "ta"], agent=agent) == 0
    assert lines(capsys) == ["outpost svc-a: held by this host's bundle now, nothing removed"]
    assert (root / "etc/app/svc-a.conf").exists()


def test_remove_host_takes_everything_and_the_base_setup_last(host, capsys):
    agent, _, root = host
    agent.apply_host("vm", bundle("vm", parts(svc_a="a v1\n", svc_b="b v1\n")))
    capsys.readouterr()
    assert main(["remove-host", "vm"], agent=agent) == 0
    out = lines(capsys)
    assert [line.split(":")[0] for line in out] == ["outpost svc-b", "outpost svc-a", "outpost base", "outpost host vm"]
    assert not list((root / "etc/app").iterdir())
    assert not (root / "var/lib/outpost").exists(), "the agent's own state goes with the last manifest"


def test_a_rollback_stays_when_the_bundle_still_wants_the_version_it_rolled_back_from(host, capsys):
    agent, _, root = host
    agent.apply_host("vm", bundle("vm", parts(svc_a="a v1\n"), {"base": "tb", "svc-a": "a1"}))
    agent.apply_host("vm", bundle("vm", parts(svc_a="a v2\n"), {"base": "tb", "svc-a": "a2"}))
    agent.rollback("svc-a")
    assert (root / "etc/app/svc-a.conf").read_text() == "a v1\n"
    capsys.readouterr()
    # another service changes on the host: the bundle runs again, svc-a keeps its rollback
    docs = parts(svc_a="a v2\n", svc_c="c v1\n")
    agent.apply_host("vm", bundle("vm", docs, {"base": "tb", "svc-a": "a2", "svc-c": "c1"}))
    assert "outpost svc-a: rolled back by hand, kept (make rollback rolls forward)" in lines(capsys)
    assert (root / "etc/app/svc-a.conf").read_text() == "a v1\n"


@pytest.mark.parametrize("doc, message", [
    ("[]", "must be {\"format\": 1"),
    (json.dumps({"format": 1, "host": "other", "manifests": []}), "host is 'other' but the command line says 'vm'"),
    (json.dumps({"format": 1, "host": "vm", "manifests": [{"name": "svc-a", "token": "t", "manifest": {}}]}),
     "the base manifest is missing"),
    (json.dumps({"format": 1, "host": "vm", "manifests": [{"name": "base", "token": "t", "manifest": {}},
                                                            {"name": "base", "token": "u", "manifest": {}}]}),
     "base appears twice"),
])
def test_a_bad_bundle_is_refused_before_anything_changes(host, doc, message):
    agent, fake, root = host
    with pytest.raises(AgentError, match="bad host bundle|must be") as err:
        agent.apply_host("vm", doc)
    assert message in str(err.value)
    assert not fake.calls and not (root / "var").exists()
