"""An apply that fails at any step converges on the next run.

Each test injects one fault into an update (v1 → v2 of a unit file and its config): an external
command failing once, ENOSPC or an I/O error at the k-th write (files and state alike), the
deployer's pipes closing. Then the same manifest is applied again without the fault. Afterwards
the files on disk, the unit definition systemd has loaded and the version the service runs must
all be v2, and no staging copy may be left behind at any point. The recording host
(FakeHost) remembers, at each daemon-reload, the unit files it saw, and at each start/restart,
the loaded definition and config the unit runs with.
"""

import errno
import io
import os

import pytest

from test_agent_unit import FakeHost, apply, manifest, text_file

from outpost_agent.base import AgentError
from outpost_agent.cli import Agent

UNIT = "/etc/systemd/system/demo.service"
CONF = "/etc/demo.conf"


def versioned(v):
    return manifest(files=[text_file(UNIT, f"[Service]\nExecStart=/bin/true {v}\n"), text_file(CONF, f"{v}\n")],
                    units=[{"unit": "demo.service"}],
                    restart=[{"group": "demo", "strategy": "restart", "when": [UNIT, CONF],
                              "instances": [{"unit": "demo.service"}]}])


class FaultyHost(FakeHost):
    """FakeHost that fails one matching command once and tracks what the unit runs."""

    def __init__(self, root):
        super().__init__()
        self.root, self.fail, self.loaded, self.running = root, None, None, None

    def read(self, path):
        p = self.root / path.lstrip("/")
        return p.read_text() if p.exists() else None

    def __call__(self, argv, **kwargs):
        if self.fail and self.fail(argv):
            self.fail = None
            self.calls.append(list(argv))
            return 1, "injected failure", ""
        result = super().__call__(argv, **kwargs)
        if argv[0] == "systemctl" and "daemon-reload" in argv:
            self.loaded = self.read(UNIT)
        if argv[0] == "systemctl" and ("restart" in argv or "start" in argv) and "demo.service" in argv:
            self.running = (self.loaded, self.read(CONF))
        return result


@pytest.fixture
def host(tmp_path):
    for d in ("etc/systemd/system", "var/lib"):
        (tmp_path / d).mkdir(parents=True)
    fake = FaultyHost(tmp_path)
    agent = Agent(root=str(tmp_path), run=fake, log=io.StringIO())
    assert apply(agent, versioned("v1")).endswith("restarted: none")
    assert fake.running == ("[Service]\nExecStart=/bin/true v1\n", "v1\n")
    return agent, fake, tmp_path


def assert_converged(fake, root, v="v2"):
    assert fake.read(UNIT) == f"[Service]\nExecStart=/bin/true {v}\n" and fake.read(CONF) == f"{v}\n"
    assert fake.loaded == fake.read(UNIT), "systemd still has the old unit definition loaded"
    assert fake.running == (fake.read(UNIT), fake.read(CONF)), "the service still runs the old version"
    assert "demo.service" in fake.active and "demo.service" in fake.enabled
    assert not list(root.rglob(".outpost-stage-*"))


def fail_then_converge(agent, fake, root):
    with pytest.raises(Exception):
        apply(agent, versioned("v2"))
    assert not list(root.rglob(".outpost-stage-*")), "a staging copy was left behind"
    apply(agent, versioned("v2"))
    assert_converged(fake, root)


COMMANDS = {"daemon-reload": lambda a: "daemon-reload" in a,
            "show": lambda a: a[:2] == ["systemctl", "show"],
            "restart": lambda a: "restart" in a}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_failing_command_is_retried_by_the_next_apply(host, command):
    agent, fake, root = host
    fake.fail = COMMANDS[command]
    fail_then_converge(agent, fake, root)


@pytest.mark.parametrize("k", range(1, 7))
@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO])
def test_a_failing_write_at_any_point_is_finished_by_the_next_apply(host, monkeypatch, k, error):
    """The k-th staged write (a host file or the agent's own state) runs out of space, or the
    k-th rename hits an I/O error."""
    agent, fake, root = host
    calls = {"n": 0}
    method = "stage" if error == errno.ENOSPC else "commit"
    real = getattr(Agent, method)

    def faulty(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == k:
            raise OSError(error, os.strerror(error))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Agent, method, faulty)
    with pytest.raises(Exception):
        apply(agent, versioned("v2"))
    assert not list(root.rglob(".outpost-stage-*")), "a staging copy was left behind"
    monkeypatch.setattr(Agent, method, real)
    apply(agent, versioned("v2"))
    assert_converged(fake, root)


class ClosedPipe(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_a_closed_stdout_and_stderr_do_not_stop_an_apply_halfway(host, monkeypatch):
    """The SSH session drops: every progress line and the summary hit a closed pipe."""
    agent, fake, root = host
    agent.log_to = ClosedPipe()
    monkeypatch.setattr("sys.stdout", ClosedPipe())
    try:
        apply(agent, versioned("v2"))
    except OSError:
        pass  # (the old agent stopped here; the next apply must still finish the work)
    agent.log_to = io.StringIO()
    monkeypatch.undo()
    apply(agent, versioned("v2"))
    assert_converged(fake, root)


def test_a_first_apply_that_failed_is_recorded_so_remove_undoes_it(tmp_path):
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    fake = FaultyHost(tmp_path)
    agent = Agent(root=str(tmp_path), run=fake, log=io.StringIO())
    fake.fail = COMMANDS["daemon-reload"]
    with pytest.raises(AgentError):
        apply(agent, versioned("v1"), token="first")
    assert (tmp_path / "etc/demo.conf").exists()
    assert agent.remove("svc-demo", "first").startswith("outpost svc-demo: removed 2 files")
    assert not (tmp_path / "etc/demo.conf").exists() and not (tmp_path / UNIT.lstrip("/")).exists()


def test_staging_dirs_left_by_a_killed_apply_are_swept(host):
    """SIGKILL between staging and commit leaves a root-only staging dir; the next apply that
    writes there removes it (and leaves a service user's look-alike alone)."""
    agent, fake, root = host
    stale = root / "etc/.outpost-stage-0123456789abcdef"
    stale.mkdir(mode=0o700)
    (stale / "demo.conf").write_text("half-written\n")
    foreign = root / "etc/.outpost-stage-not-ours"
    foreign.mkdir(mode=0o755)
    apply(agent, versioned("v2"))
    assert not stale.exists()
    assert foreign.exists()
    foreign.rmdir()
    assert_converged(fake, root)
