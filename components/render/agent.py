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
import io
import zipfile
from pathlib import Path

AGENT_PATH = "/usr/local/lib/outpost/outpost-apply.py"
AGENT_SOURCE = Path(__file__).resolve().parent.parent.parent / "files" / "agent"
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


def agent_zipapp(source: Path | None = None) -> bytes:
    """The agent as one zipapp: `python3 FILE ARGS` runs outpost_agent.cli."""
    return _archive(agent_sources(source))
