"""Where each host of a stack is and how to reach it: address, port, admin user, pinned host key
and the deploy key, from the stack alone; and one SSH session running the agent there.

- Static hosts: their config (`address` or `ssh_address`, `port`, `host_key`).
- Cloud hosts: address, port and host key from the stack output `hosts` (`pulumi stack output`;
  the host key is generated in the stack and is in no config file).
- The deploy key: the secret `outpost:admin.private_key` names, read with `pulumi config get`
  from the CLI in .engine/bin — or from an injected config mapping (tests, the e2e Deployment).

The session uses `StrictHostKeyChecking=yes` against a temporary known_hosts holding only the
pinned key, and the deploy key from a 0600 temporary file: no secret is ever in argv, and errors
never quote the key.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from ..load import parse
from ..config.model import Stack
from ..program import ROOT
from ..render.base import AGENT_PATH

SSH_TIMEOUT = 120


class Unreachable(Exception):
    """A host that could not be reached (or whose agent could not run); says which and why."""


@dataclass(frozen=True)
class Connection:
    host: str
    address: str
    port: int
    user: str
    host_key: str
    private_key: str = field(repr=False)     # never printed: repr leaves it out

    def known_hosts_line(self) -> str:
        target = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{target} {' '.join(self.host_key.split()[:2])}\n"


@dataclass
class StackSource:
    """One stack's config mapping (secrets with their values) and, for cloud hosts, its outputs."""
    name: str
    config: dict[str, Any]
    outputs: Optional[dict[str, Any]] = None

    @property
    def stack(self) -> Stack:
        return parse(self.config, self.name)


def stack_cli(stack: str):
    """The pinned CLI (.engine/bin) for STACK: the local stack with make up's state in .vm/ when
    it is there, any other with the user's own backend and the project's stack file."""
    from tools.pulumi_cli import StackCli
    local = ROOT / ".vm"
    return StackCli(stack, local if stack == "local" and (local / "pulumi-state").is_dir() else None)


def pulumi_cli(cli, args: list[str]) -> str:
    """Run the CLI; its own one-line message (it never echoes a secret value) when it fails."""
    try:
        result = cli.run(args, check=False, timeout=120)
    except FileNotFoundError:
        raise Unreachable("the Pulumi CLI is not in .engine/bin (run `make engine`)") from None
    if result.returncode != 0:
        raise Unreachable(f"`pulumi {args[0]} {args[1] if len(args) > 1 else ''}` for stack {cli.stack} "
                          f"failed: {last_line(result.stderr, 'no output')}")
    return result.stdout


def from_cli(stack: str, cli=None) -> StackSource:
    """The stack's config from the file the CLI reads (make up's .vm/ copy for the local stack)
    with the deploy key read through `pulumi config get`; outputs only when a cloud host needs
    them. CLI: a tools.pulumi_cli.StackCli (default: `stack_cli(stack)`)."""
    cli = cli or stack_cli(stack)
    config = dict((yaml.safe_load(cli.config_file.read_text()) or {}).get("config") or {})
    key_name = config["outpost:admin"]["private_key"]
    key = pulumi_cli(cli, ["config", "get", "--path", f"outpost:secrets.{key_name}"])
    config["outpost:secrets"] = {**(config.get("outpost:secrets") or {}), key_name: key}
    outputs = None
    if any(h.get("provider") == "hcloud" for h in (config.get("outpost:hosts") or {}).values()):
        outputs = json.loads(pulumi_cli(cli, ["stack", "output", "--json", "--show-secrets"]))
    return StackSource(stack, config, outputs)


def connections(source: StackSource) -> dict[str, Connection]:
    """host name → Connection, hosts in config order."""
    stack = source.stack
    key = source.config["outpost:secrets"][stack.admin.private_key]
    if not isinstance(key, str) or "PRIVATE KEY" not in key:
        raise Unreachable(f"the deploy key (secret {stack.admin.private_key}) is not set for this stack")
    found = {}
    for name, host in stack.hosts.items():
        if host.provider == "static":
            found[name] = Connection(name, host.ssh_address or host.address, host.port,
                                     stack.admin.user, host.host_key, key)
            continue
        info = (((source.outputs or {}).get("hosts") or {}).get(name) or {})
        if not info.get("address") or not info.get("host_key"):
            raise Unreachable(f"{name}: the stack's outputs have no address or host key for it "
                              "(run `pulumi up` first)")
        found[name] = Connection(name, info["address"], int(info.get("port") or 22),
                                 stack.admin.user, info["host_key"].strip(), key)
    return found


def ssh_argv(conn: Connection, known_hosts: str, key_file: str) -> list[str]:
    return ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "ConnectTimeout=15",
            "-o", "LogLevel=ERROR", "-i", key_file, "-p", str(conn.port), f"{conn.user}@{conn.address}"]


def agent(conn: Connection, *args: str, timeout: float = SSH_TIMEOUT,
          stream: bool = False) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run `outpost-apply ARGS` as root on the host in one SSH session; return the finished
    process (stdout text), or with STREAM the running one: the caller reads its stdout, calls
    `proc.forget_key()` once a first line came (ssh has authenticated by then) and in any case
    when done, and finds ssh's and the agent's stderr in `proc.stderr_file` (a temporary file,
    not a pipe nobody drains). Raises Unreachable when ssh itself fails (exit 255)."""
    import shlex
    tmp = tempfile.mkdtemp(prefix="outpost-ssh-")
    try:
        known, key_file = Path(tmp) / "known_hosts", Path(tmp) / "key"
        known.write_text(conn.known_hosts_line())
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(conn.private_key if conn.private_key.endswith("\n") else conn.private_key + "\n")
        remote = shlex.join(["sudo", "-n", "python3", AGENT_PATH, *args])
        argv = [*ssh_argv(conn, str(known), str(key_file)), "--", remote]
        if stream:
            errors = tempfile.TemporaryFile(mode="w+", errors="replace")
            try:
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL,
                                        text=True, errors="replace")
            except BaseException:
                errors.close()
                raise
            proc.stderr_file = errors                                            # type: ignore[attr-defined]
            proc.forget_key = lambda path=tmp: shutil.rmtree(path, ignore_errors=True)  # type: ignore[attr-defined]
            tmp = None   # the caller's forget_key removes it
            return proc
        try:
            result = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                                    stdin=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Unreachable(f"{conn.host} ({conn.address}:{conn.port}): no answer within {timeout}s") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if result.returncode == 255:
        raise Unreachable(f"{conn.host} ({conn.address}:{conn.port}): "
                          f"{last_line(result.stderr, 'ssh failed')}")
    return result


def last_line(text: str, default: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else default


def injected(stack: str, config: Mapping[str, Any]) -> StackSource:
    """A StackSource from a config mapping with secret values (tests; the e2e Deployment's)."""
    return StackSource(stack, dict(config))
