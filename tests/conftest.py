"""Shared test setup: the repository root on sys.path, so `components` and `tools` import."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))


def pytest_collection_modifyitems(config, items):
    """Everything under tests/e2e and tests/vm needs the local VM: mark it `e2e`."""
    import pytest
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT).parts
        if parts[:2] in (("tests", "e2e"), ("tests", "vm")):
            item.add_marker(pytest.mark.e2e)
