"""Shared setup for the on-host agent's tests: its package (files/agent/outpost_agent) on sys.path,
so that each test imports the modules it tests directly, and the write faults they inject."""

import errno
import os
import sys
from pathlib import Path

import pytest

AGENT_SOURCE = Path(__file__).resolve().parents[2] / "files" / "agent"
if str(AGENT_SOURCE) not in sys.path:
    sys.path.insert(0, str(AGENT_SOURCE))


@pytest.fixture
def failing_write(monkeypatch):
    """failing_write(k, error): the K-th staged write (Agent.stage) raises ENOSPC, or with EIO the
    K-th rename (Agent.commit), as a full or failing disk would, whether it writes a host file or
    the agent's own state; returns a function that puts the real method back."""
    from outpost_agent.cli import Agent

    def inject(k, error):
        method = "stage" if error == errno.ENOSPC else "commit"
        real = getattr(Agent, method)
        calls = {"n": 0}

        def faulty(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == k:
                raise OSError(error, os.strerror(error))
            return real(self, *args, **kwargs)

        monkeypatch.setattr(Agent, method, faulty)
        return lambda: monkeypatch.setattr(Agent, method, real)

    return inject
