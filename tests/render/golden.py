"""The golden-file check the render tests share (services, proxy, backups).

A case's rendered files, {relative path: text}, must equal the tree under its golden directory:
the same paths, byte for byte. `OUTPOST_UPDATE_GOLDEN=1` rewrites the directory from what was
rendered first (review the diff); each test also asserts the lines that matter inline, so an
update cannot silently drop them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

UPDATE = os.environ.get("OUTPOST_UPDATE_GOLDEN") == "1"


def read_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def check_golden(tree: dict[str, str], directory: Path, case: str) -> None:
    if UPDATE:
        shutil.rmtree(directory, ignore_errors=True)
        for rel, content in tree.items():
            (directory / rel).parent.mkdir(parents=True, exist_ok=True)
            (directory / rel).write_text(content)
    assert directory.is_dir(), f"no golden files for {case}: run with OUTPOST_UPDATE_GOLDEN=1"
    expected = read_tree(directory)
    assert sorted(tree) == sorted(expected), \
        "rendered file set differs from the golden one; OUTPOST_UPDATE_GOLDEN=1 rewrites the goldens"
    for rel in tree:
        assert tree[rel] == expected[rel], f"{case}/{rel} differs from its golden file"
