"""Escaping for systemd unit files and quadlets, shared by every renderer that writes them.

Values from the stack config end up in unit settings; these helpers make sure none of them can
start a new line, smuggle in a specifier or `$` expansion, or break out of its quotes
(systemd.service(5) "Command lines", systemd.unit(5) "Specifiers"). Pure functions, no I/O.
"""

from __future__ import annotations

import re

from ..config.model import command_words

CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# The sandbox settings every unit outpost writes for a program of its own shares (process
# services, the backup tools and their restore): no access to the kernel's knobs, modules, logs
# or clock, no namespaces, realtime, set-uid files, writable-executable memory or System V IPC,
# private keyrings, files created 0600. Each unit adds its view of the file system and its
# capabilities before these, and SYSCALL_FILTER after.
SANDBOX = [
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "RemoveIPC=yes",
    "DevicePolicy=closed",
    "KeyringMode=private",
    "UMask=0077",
]
SYSCALL_FILTER = [
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged @resources",
    "SystemCallErrorNumber=EPERM",
]
# A command-line word that needs no quotes in a unit file.
PLAIN_WORD_RE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def single_line(value: str, what: str) -> str:
    """Refuse control characters (newline, CR, NUL, tab ...): nothing may start a new unit line."""
    if not isinstance(value, str) or CONTROL_RE.search(value):
        raise ValueError(f"{what}: {value!r} must be a single line without control characters")
    return value


def unit_text(value: str, what: str = "text") -> str:
    """Free text in a setting systemd expands specifiers in (Description=): `%` → `%%`."""
    return single_line(value, what).replace("%", "%%")


def specifiers(word: str, instance: bool) -> str:
    """`%` → `%%`, except `%i` (the instance: a replica's port) in templated units."""
    return re.sub(r"%(?!i)", "%%", word) if instance else word.replace("%", "%%")


def exec_word(word: str, *, instance: bool = False, what: str = "command") -> str:
    """One argument of an Exec line (ExecStart=, quadlet Exec=/Environment=), quoted per
    systemd.service(5) "Command lines": specifiers and `$` escaped, quotes only when needed."""
    single_line(word, what)
    text = specifiers(word, instance).replace("$", "$$")
    if PLAIN_WORD_RE.fullmatch(word):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_line(words: list[str], *, instance: bool = False, what: str = "command") -> str:
    return " ".join(exec_word(w, instance=instance, what=what) for w in words)


def split_command(command: str, what: str) -> list[str]:
    """The words of a command the model accepted (config.model.command_words)."""
    single_line(command, what)
    try:
        return command_words(command)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None


def env_assignment(key: str, value: str, *, instance: bool, on_command_line: bool) -> str:
    """`"KEY=value"` for Environment=. systemd expands specifiers there; quadlet turns a
    [Container] Environment= into `--env` on ExecStart, where `$` is expanded too."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        raise ValueError(f"environment variable name {key!r} is not valid")
    text = specifiers(f"{key}={single_line(value, f'env {key}')}", instance)
    if on_command_line:
        text = text.replace("$", "$$")
    if PLAIN_WORD_RE.fullmatch(f"{key}={value}"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
