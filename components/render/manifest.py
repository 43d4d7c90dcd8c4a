"""The host manifest: the files, users and units one Command ships to one host.

Pure data. The render layer builds `Manifest`s; the resource layer turns each into the JSON a
`remote.Command` carries on stdin (see docs/manifest.md); `make plan` writes their files to disk.
Secrets appear only as `<secret:NAME>` placeholders until the resource layer fills them in.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .secret_values import FORMATS, fill

SECRET_RE = re.compile(r"<secret:([A-Za-z0-9_.:/@-]+)>")


def secret_ref(name: str) -> str:
    """The placeholder the render layer writes where secret NAME's value belongs."""
    return f"<secret:{name}>"


@dataclass(frozen=True)
class File:
    path: str
    content: str | bytes
    mode: str = "0644"
    owner: str = "root"
    group: str = "root"
    # How secret values are written into this file (see secret_values.py); not part of the wire
    # format: the filled-in content is.
    secret_format: str = "raw"
    # The on-host agent itself: the wire format names it by sha256 (`agent_sha256`) and the agent
    # that applies the manifest supplies its own bytes, so no Command's stdin carries them.
    is_agent: bool = False

    def __post_init__(self) -> None:
        if self.secret_format not in FORMATS:
            raise ValueError(f"{self.path}: unknown secret format {self.secret_format!r}")

    @property
    def secrets(self) -> tuple[str, ...]:
        if isinstance(self.content, bytes):
            return ()
        return tuple(sorted(set(SECRET_RE.findall(self.content))))

    def to_json(self) -> dict[str, Any]:
        if self.is_agent:
            assert isinstance(self.content, bytes), self.path
            return {"path": self.path, "mode": self.mode, "owner": self.owner, "group": self.group,
                    "agent_sha256": hashlib.sha256(self.content).hexdigest()}
        if isinstance(self.content, bytes):
            content, b64 = base64.b64encode(self.content).decode(), True
        else:
            content, b64 = self.content, False
        return {"path": self.path, "mode": self.mode, "owner": self.owner, "group": self.group,
                "content": content, "b64": b64}


@dataclass(frozen=True)
class Dir:
    path: str
    mode: str = "0755"
    owner: str = "root"
    group: str = "root"

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "mode": self.mode, "owner": self.owner, "group": self.group}


@dataclass(frozen=True)
class User:
    name: str
    home: str
    linger: bool = True
    system: bool = True
    purge: bool = False   # removal deletes the user and its home; by default both are kept
    key: str | None = None   # the stack key that names it: the agent's error when it would take over an account

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "home": self.home, "linger": self.linger, "system": self.system,
                **({"purge": True} if self.purge else {}), **({"key": self.key} if self.key else {})}


@dataclass(frozen=True)
class Unit:
    unit: str
    scope: str = "system"  # "system" or "user:<name>"
    enable: bool = True
    start: bool = True
    # report: started on its own, before the others, synchronously; the agent prints its journal
    # for that run and fails the apply (with that journal) when it fails. stop: False → removing
    # the manifest leaves it as it is (a finished oneshot other units Require=).
    report: bool = False
    stop: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"unit": self.unit, "scope": self.scope, "enable": self.enable, "start": self.start,
                **({"report": True} if self.report else {}), **({} if self.stop else {"stop": False})}


@dataclass
class Manifest:
    """Everything one Command applies on one host (see docs/manifest.md for the wire format)."""

    name: str
    packages: list[str] = field(default_factory=list)
    users: list[User] = field(default_factory=list)
    dirs: list[Dir] = field(default_factory=list)
    files: list[File] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)
    validate: list[dict[str, Any]] = field(default_factory=list)
    restart: list[dict[str, Any]] = field(default_factory=list)
    # What the manifest's own programs create on the host (a fetched binary, a cache), under
    # /usr/local/lib/outpost/ or /var/cache/outpost-*: removed with the last manifest listing it.
    scratch: list[str] = field(default_factory=list)
    # The users DynamicUser= services run as ({"name", "key"}): systemd would run them as an
    # existing account of that name, so the agent refuses when the host has one.
    dynamic_users: list[dict[str, str]] = field(default_factory=list)
    # What plan.json / `make diff` say this manifest restarts, e.g. {"kollektivkart": "rolling"}.
    restarts: dict[str, str] = field(default_factory=dict)
    # What plan.json / `make diff` say this manifest restores: [{"backup", "restore" (auto |
    # manual), "tool", "location" (bucket/prefix), "paths"}]. Not part of the wire format.
    restores: list[dict[str, Any]] = field(default_factory=list)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(sorted({s for f in self.files for s in f.secrets}))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 1,
            "name": self.name,
            "packages": sorted(set(self.packages)),
            "users": [u.to_json() for u in self.users],
            "dirs": [d.to_json() for d in self.dirs],
            "files": [f.to_json() for f in sorted(self.files, key=lambda f: f.path)],
            "units": [u.to_json() for u in self.units],
            "validate": self.validate,
            "restart": self.restart,
            **({"scratch": sorted(set(self.scratch))} if self.scratch else {}),
            **({"dynamic_users": self.dynamic_users} if self.dynamic_users else {}),
        }

    def encode(self, secrets: dict[str, str] | None = None) -> str:
        """The stdin text: canonical JSON, placeholders replaced by `secrets` when given. Then
        `secret_values` also lists every value filled in, as given and as written into its file,
        so that the agent can hide them in whatever a tool prints (the masked encoding, the
        token's source, has neither)."""
        doc = self.to_json()
        if secrets is not None:
            formats = {f.path: f.secret_format for f in self.files}
            values: set[str] = set()

            def filled(fmt: str, name: str, path: str) -> str:
                written = fill(fmt, name, secrets[name], path)
                values.update((secrets[name], written))
                return written

            for f in doc["files"]:
                if not f.get("b64", True):
                    fmt, path = formats[f["path"]], f["path"]
                    f["content"] = SECRET_RE.sub(lambda m: filled(fmt, m.group(1), path), f["content"])
            if values - {""}:
                doc["secret_values"] = sorted(values - {""})
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def digest(self) -> str:
        """sha256 of the masked manifest: equal exactly when the rendered plan is equal."""
        return encoded_digest(self.encode())


def encoded_digest(masked: str) -> str:
    """`Manifest.digest` from the masked encoding, for callers that already hold it."""
    return hashlib.sha256(masked.encode()).hexdigest()
