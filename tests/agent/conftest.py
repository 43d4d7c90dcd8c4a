"""Shared setup for the on-host agent's tests: its package (files/agent/outpost_agent) on sys.path,
so that each test imports the modules it tests directly."""

import sys
from pathlib import Path

AGENT_SOURCE = Path(__file__).resolve().parents[2] / "files" / "agent"
if str(AGENT_SOURCE) not in sys.path:
    sys.path.insert(0, str(AGENT_SOURCE))
