"""The on-host agent as shipped: files/agent/ (the `outpost_agent` package and the `__main__.py`
that runs it) built into one zipapp, the bytes the base manifest installs at AGENT_PATH.

Built at render time, in pure Python, so there is no build step to remember and `make plan`,
`make diff` and `pulumi up` always ship the agent of the working tree. The build is a function of
the sources alone: names sorted, every entry dated 1980-01-01 with mode 0644, stored (not
deflated: zlib's output may differ between the zlib builds of two deploying machines, and the
bytes decide the base manifest's token). Same sources, same bytes, same token; a touched file
(mtime, permissions) or another machine changes nothing.

The path keeps its `.py` name: `python3` runs a zip file whatever it is called, and the
`delete` commands already in users' Pulumi states, the restart units on their hosts and the day-two
tools all run `python3 /usr/local/lib/outpost/outpost-apply.py`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import tempfile
import zipfile
from pathlib import Path

AGENT_PATH = "/usr/local/lib/outpost/outpost-apply.py"
# Where the deploy uploads the agent, as the admin, when it changes (components/shipping.py); the
# agent's own outpost_agent/base.py names the same path.
UPLOAD_PATH = "/home/{admin}/.outpost-agent.pyz"
AGENT_SOURCE = Path(__file__).resolve().parent.parent.parent / "files" / "agent"
_SHIPPED = AGENT_SOURCE
SHEBANG = b"#!/usr/bin/env python3\n"
EPOCH = (1980, 1, 1, 0, 0, 0)    # the earliest date a zip entry can carry


def agent_sources(source: Path | None = None) -> tuple[tuple[str, bytes], ...]:
    """(name in the archive, bytes) of every file the zipapp holds, sorted by name: __main__.py
    and the package's modules; caches and anything that is not Python source stay out."""
    source = source or AGENT_SOURCE
    files = [source / "__main__.py", *sorted((source / "outpost_agent").rglob("*.py"))]
    return tuple(sorted((f.relative_to(source).as_posix(), f.read_bytes()) for f in files
                        if "__pycache__" not in f.parts))


@functools.cache
def _archive(sources: tuple[tuple[str, bytes], ...]) -> bytes:
    out = io.BytesIO()
    out.write(SHEBANG)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, data in sources:
            info = zipfile.ZipInfo(name, date_time=EPOCH)
            info.create_system = 3                 # unix, so the mode below is read as one
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_STORED
            archive.writestr(info, data)
    return out.getvalue()


@functools.cache
def _shipped_sources() -> tuple[tuple[str, bytes], ...]:
    # the repository's files/agent as this process first read it: a program run asks for the
    # agent once per host (any other source directory is read every time)
    return agent_sources(_SHIPPED)


def agent_zipapp(source: Path | None = None) -> bytes:
    """The agent as one zipapp: `python3 FILE ARGS` runs outpost_agent.cli."""
    source = source or AGENT_SOURCE
    return _archive(_shipped_sources() if source == _SHIPPED else agent_sources(source))


def agent_digest(source: Path | None = None) -> str:
    """sha256 of the zipapp: how the base manifest and the host's Command name the agent."""
    return hashlib.sha256(agent_zipapp(source)).hexdigest()


def agent_file(cache: Path | None = None) -> Path:
    """The zipapp as a file on the deploying machine, named by its digest (the engine hashes it
    and uploads it, but holds only its hash): ~/.cache/outpost/agent/outpost-agent-<digest>.pyz,
    written once, atomically."""
    cache = cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "outpost" / "agent"
    path = cache / f"outpost-agent-{agent_digest()[:32]}.pyz"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=".agent-")
        with os.fdopen(fd, "wb") as out:
            out.write(agent_zipapp())
        os.replace(tmp, path)
    return path
