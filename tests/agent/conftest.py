"""Shared fixtures for the on-host agent's tests: the agent module loaded from its file."""

import importlib.util
import sys
from pathlib import Path

import pytest

AGENT_PATH = Path(__file__).resolve().parents[2] / "files" / "agent" / "outpost-apply.py"


def load_agent():
    spec = importlib.util.spec_from_file_location("outpost_apply", AGENT_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("outpost_apply", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def oa():
    return load_agent()
