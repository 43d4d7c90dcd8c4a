"""Rules about the repository files a stack ships: `process.artifacts` and `container.build.files`
name regular files inside the repository, and a process whose `exec` runs one of its artifacts
needs that artifact executable here (it is shipped with the mode it has in the repository, so a
0644 program would fail on the host with status 203/EXEC).

Pure apart from reading the repository's file metadata.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from pathlib import Path

from .model import Stack

REPO = Path(__file__).resolve().parent.parent.parent


def repo_file(relative: str) -> Path | None:
    """The repository file RELATIVE names (after symlinks, still inside the repository), or None."""
    path = (REPO / relative).resolve()
    return path if REPO in path.parents and path.is_file() else None


def check(stack: Stack) -> Iterator[tuple[str, str]]:
    for name, svc in stack.services.items():
        shipped: dict[str, tuple[str, str]] = {}
        if svc.process:
            shipped = {target: (source, f"services.{name}.process.artifacts.{target}")
                       for target, source in svc.process.artifacts.items()}
        elif svc.container and svc.container.build:
            shipped = {target: (source, f"services.{name}.container.build.files.{target}")
                       for target, source in svc.container.build.files.items()}
        for source, key in shipped.values():
            if repo_file(source) is None:
                yield key, f"{source!r} is not a file in the repository"
        if svc.process:
            program = shlex.split(svc.process.exec)[0]
            if program in shipped:
                source, key = shipped[program]
                path = repo_file(source)
                if path is not None and not os.access(path, os.X_OK):
                    yield (f"services.{name}.process.exec", f"runs {program}, the artifact {source!r}, which is "
                           f"not executable in the repository (it ships with its mode): `chmod +x {source}` "
                           "and commit, or run it through its interpreter")
