"""Executes the program's `remote.Command` resources against a real host, the way the Pulumi
engine and the command provider would: no Pulumi CLI, real SSH with the pinned host key.

- A new resource runs `create` with `stdin`.
- A resource whose inputs changed runs `update` if it has one, else `create` again; inputs named
  in `ignore_changes` don't count.
- A resource whose `triggers` changed is replaced: the new one is created first, then the old one
  deleted (unless `delete_before_replace`), as the engine orders replacements.
- Resources gone from the program are deleted, dependents before their dependencies.
Every run opens exactly one SSH session, counted in `sessions`.

Why this stands in for `pulumi up` here: the real CLI is built by `make engine`, but the Python
language host and the command provider can't be had on this workplace's Go module proxy (every
version asked is refused; `python3 tools/engine/build.py --check` lists them), and without them the
engine can't run the program or its Commands. Once `.engine/bin` is complete, the suite should move
to the real engine and this file go.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.program import Registered

COMMAND = "command:remote:Command"
DIAL_ERROR = re.compile(r"kex_exchange_identification|Connection (refused|reset|closed)|Connection timed out")
DIFFED = ("create", "update", "delete", "stdin", "connection", "environment", "addPreviousOutputInEnv")


class CommandFailed(Exception):
    def __init__(self, name: str, op: str, result: subprocess.CompletedProcess):
        self.name, self.op, self.result = name, op, result
        super().__init__(f"{name}: {op} exited {result.returncode}: "
                         f"{result.stderr.decode(errors='replace').strip()[-2000:]}")


@dataclass
class Applied:
    name: str
    urn: str
    inputs: dict[str, Any]
    depends_on: list[str]
    stdout: str = ""


@dataclass
class Step:
    name: str
    op: str            # create | update | delete | replace
    seconds: float
    stdout: str
    stderr: str = ""   # the agent's progress lines (the command provider's `stderr` output)


@dataclass
class Engine:
    """The stored state of every Command (like a Pulumi stack's checkpoint) and a runner."""

    state: dict[str, Applied] = field(default_factory=dict)
    sessions: int = 0
    log: list[Step] = field(default_factory=list)

    # -- running one command over SSH ------------------------------------------------------------
    def run(self, name: str, op: str, inputs: dict[str, Any], command: str) -> str:
        conn = inputs["connection"]
        with tempfile.TemporaryDirectory(prefix="outpost-e2e-") as tmp:
            key = Path(tmp) / "key"
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(conn["privateKey"].rstrip("\n") + "\n")
            known = Path(tmp) / "known_hosts"
            port = int(conn.get("port", 22))
            known.write_text(f"[{conn['host']}]:{port} {conn['hostKey']}\n")
            argv = ["ssh", "-F", "none", "-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                    "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}",
                    "-o", "GlobalKnownHostsFile=/dev/null", "-o", "HostKeyAlgorithms=ssh-ed25519",
                    "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR", "-p", str(port),
                    f"{conn['user']}@{conn['host']}", "--", command]
            stdin = inputs.get("stdin")
            started = time.monotonic()
            # Like the provider's dialer: a connection that fails before the session starts
            # (sshd reloading after the base setup, say) is retried, up to dialErrorLimit times.
            for _ in range(int(conn.get("dialErrorLimit", 10))):
                self.sessions += 1
                result = subprocess.run(argv, input=stdin.encode() if stdin is not None else None,
                                        stdin=None if stdin is not None else subprocess.DEVNULL,
                                        capture_output=True, timeout=900)
                if not (result.returncode == 255 and DIAL_ERROR.search(result.stderr.decode(errors="replace"))):
                    break
                time.sleep(1)
        stdout = result.stdout.decode(errors="replace")
        self.log.append(Step(name, op, round(time.monotonic() - started, 2), stdout.strip(),
                             result.stderr.decode(errors="replace").strip()))
        if result.returncode != 0:
            raise CommandFailed(name, op, result)
        return stdout

    # -- the engine's steps ----------------------------------------------------------------------
    def up(self, registered: list[Registered]) -> list[Step]:
        """Bring the host(s) to what REGISTERED describes; returns the steps run this time."""
        first = len(self.log)
        wanted = {r.name: r for r in registered if r.type == COMMAND}
        by_urn = {r.urn: r.name for r in wanted.values()}
        for name in _topological(wanted, by_urn):
            res = wanted[name]
            old = self.state.get(name)
            deps = [by_urn[u] for u in res.depends_on if u in by_urn]
            if old is None:
                out = self.run(name, "create", res.inputs, res.inputs["create"])
            elif _triggers(old.inputs) != _triggers(res.inputs):
                if res.delete_before_replace:
                    self._delete(old)
                out = self.run(name, "replace", res.inputs, res.inputs["create"])
                if not res.delete_before_replace:
                    self._delete(old)
            elif _changed(old.inputs, res.inputs, res.ignore_changes):
                command = res.inputs.get("update") or res.inputs["create"]
                out = self.run(name, "update", res.inputs, command)
            else:
                continue
            self.state[name] = Applied(name, res.urn, res.inputs, deps, out)
        gone = [n for n in self.state if n not in wanted]
        for name in reversed(_topological_applied({n: self.state[n] for n in gone})):
            self._delete(self.state.pop(name))
        return self.log[first:]

    def destroy(self) -> list[Step]:
        first = len(self.log)
        for name in reversed(_topological_applied(self.state)):
            self._delete(self.state.pop(name))
        return self.log[first:]

    def _delete(self, applied: Applied) -> None:
        command = applied.inputs.get("delete")
        if command:
            self.run(applied.name, "delete", applied.inputs, command)


def _triggers(inputs: dict[str, Any]) -> str:
    return json.dumps(inputs.get("triggers"), sort_keys=True)


def _changed(old: dict[str, Any], new: dict[str, Any], ignored: list[str]) -> bool:
    keys = [k for k in DIFFED if k not in ignored]
    return any(json.dumps(old.get(k), sort_keys=True) != json.dumps(new.get(k), sort_keys=True) for k in keys)


def _topological(wanted: dict[str, Registered], by_urn: dict[str, str]) -> list[str]:
    deps = {n: [by_urn[u] for u in r.depends_on if u in by_urn] for n, r in wanted.items()}
    return _order(deps)


def _topological_applied(applied: dict[str, Applied]) -> list[str]:
    return _order({n: [d for d in a.depends_on if d in applied] for n, a in applied.items()})


def _order(deps: dict[str, list[str]]) -> list[str]:
    done: list[str] = []
    seen: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in seen:
            return
        if name in path:
            raise ValueError(f"dependency cycle: {' -> '.join(path + (name,))}")
        for dep in sorted(deps[name]):
            visit(dep, path + (name,))
        seen.add(name)
        done.append(name)

    for name in sorted(deps):
        visit(name, ())
    return done
