"""`make logs FOLLOW=1` offline: the real follow path against stand-ins for the network.

`ssh` on PATH is a stand-in for the SSH client and server: it runs the real agent
(the zipapp built from files/agent/, `logs svc-hello ... --follow`) against a temporary root holding a
stored manifest, and relays its stdout like an SSH channel (a SIGTERM ends it the way a closed
session does). `journalctl` on PATH is a fault-free stand-in producer of journal JSON records:
it prints one record, waits (bounded) for the test to have *seen* it — so a client that reads to
the end before printing anything cannot pass — then prints the rest, and then either ends or
stays quiet, bounded by itself, like `--follow` on a service that logs nothing more.
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import pytest

from components.operate import logs
from components.operate.connections import injected
from components.render.agent import agent_zipapp
from components.program import stack_config

KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-key-material-42\n-----END OPENSSH PRIVATE KEY-----\n"
UNITS = ["hello@8001.service", "hello@8002.service", "hello@8001.service"]

SSH = """#!{python}
import shlex, subprocess, sys
if {fail!r}:
    print("admin@127.0.0.1: Permission denied (publickey).", file=sys.stderr)
    sys.exit(255)
remote = shlex.split(sys.argv[-1])          # sudo -n python3 AGENT logs svc-hello ...
args = remote[remote.index("python3") + 2:]
agent = subprocess.Popen([sys.executable, {runner!r}, *args], stdout=subprocess.PIPE)
for line in agent.stdout:                   # the channel: relayed as it comes
    sys.stdout.buffer.write(line)
    sys.stdout.flush()
sys.exit(agent.wait())
"""

RUNNER = """import signal, sys
sys.path.insert(0, {agent!r})                  # the zipapp the base manifest ships
from outpost_agent.cli import Agent, main
signal.signal(signal.SIGHUP, signal.SIG_IGN)   # as the agent's __main__ does
sys.exit(main(sys.argv[1:], Agent(root={root!r})))
"""

JOURNALCTL = """#!{python}
import json, os, sys, time
open({pidfile!r}, "w").write(str(os.getpid()))
def record(i, unit):
    print(json.dumps({{"__REALTIME_TIMESTAMP": str(1764633183000000 + i * 1000), "_SYSTEMD_UNIT": unit,
                      "MESSAGE": f"request {{i}}"}}), flush=True)
record(0, {first!r})
deadline = time.monotonic() + 10
while not os.path.exists({go!r}) and time.monotonic() < deadline:
    time.sleep(0.05)
if not os.path.exists({go!r}):
    sys.exit(0)                              # never seen: the client did not stream
for i, unit in enumerate({rest!r}, 1):
    record(i, unit)
if {endless!r} and "--follow" in sys.argv:
    time.sleep(60)                           # a quiet service: nothing more, bounded all the same
"""


class Seen(io.StringIO):
    """The terminal: notes each line's arrival and lets the producer go on after the first."""

    def __init__(self, go: Path):
        super().__init__()
        self.go, self.times = go, []

    def write(self, text):
        self.times.append(time.monotonic())
        self.go.touch()
        return super().write(text)


@pytest.fixture
def host(tmp_path, monkeypatch):
    def setup(endless=False, fail=False):
        root, bin_dir = tmp_path / "root", tmp_path / "bin"
        (root / "var/lib/outpost/manifests").mkdir(parents=True)
        bin_dir.mkdir()
        state = {"format": 1, "name": "svc-hello", "token": "t1",
                 "manifest": {"name": "svc-hello", "files": [], "restart": [], "users": [],
                              "units": [{"unit": u, "scope": "system", "enable": False, "start": True}
                                        for u in sorted(set(UNITS))]}}
        (root / "var/lib/outpost/manifests/svc-hello.json").write_text(json.dumps(state))
        runner = tmp_path / "agent_runner.py"
        agent = tmp_path / "outpost-apply.py"
        agent.write_bytes(agent_zipapp())
        runner.write_text(RUNNER.format(agent=str(agent), root=str(root)))
        paths = {"pidfile": str(tmp_path / "journalctl.pid"), "go": str(tmp_path / "go")}
        for name, text in (("ssh", SSH.format(python=sys.executable, fail=fail, runner=str(runner))),
                           ("journalctl", JOURNALCTL.format(python=sys.executable, first=UNITS[0], rest=UNITS[1:],
                                                            endless=endless, **paths))):
            (bin_dir / name).write_text(text)
            (bin_dir / name).chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
        return Seen(tmp_path / "go"), paths["pidfile"]
    return setup


def source():
    return injected("local", stack_config("local", secrets={"deploy_key": KEY}))


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:      # a zombie waiting for its parent has ended
        return fh.read().split(") ", 1)[1][0] != "Z"


def test_follow_streams_prefixed_lines_and_ends_with_the_producer(host):
    out, _ = host()
    err = io.StringIO()
    started = time.monotonic()
    code = logs.follow(source(), "hello", None, None, 200, out=out, timeout=30, err=err)
    assert code == 0, err.getvalue()
    assert time.monotonic() - started < 20, "follow did not end when the stream ended"
    lines = out.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == \
        [f"vm {unit}: request {i}" for i, unit in enumerate(UNITS)]
    assert lines[0].startswith("2025-12-01T23:53:03.000Z ")


def test_follow_ends_on_its_timeout_and_the_host_stops_journalctl(host):
    out, pidfile = host(endless=True)
    started = time.monotonic()
    assert logs.follow(source(), "hello", None, None, 200, out=out, timeout=3, err=io.StringIO()) == 0
    assert time.monotonic() - started < 3 + 2 * logs.CLOSE_WAIT
    assert len(out.getvalue().splitlines()) == len(UNITS)
    pid = int(Path(pidfile).read_text())
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid), "journalctl --follow outlived the closed session on the host"


def test_follow_says_which_host_it_could_not_reach(host):
    out, _ = host(fail=True)
    err = io.StringIO()
    assert logs.follow(source(), "hello", None, None, 200, out=out, timeout=30, err=err) == 2
    assert err.getvalue() == "vm: unreachable: admin@127.0.0.1: Permission denied (publickey).\n"
    assert "secret-key-material" not in err.getvalue()
