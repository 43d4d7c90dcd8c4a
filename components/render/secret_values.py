"""How a secret value is written into each kind of file it can land in, or why it cannot be.

Rendered files hold `<secret:NAME>` placeholders; the resource layer fills the values in
(`Manifest.encode`). A value is data, never syntax, so each file declares its format
(`File.secret_format`) and every value is escaped for it, or refused when the format cannot hold
it. A refusal names the secret, the file and the offending kind of character, never the value.

* `raw` — the file is the value (secret_files, PEM certificates and keys): any text, NUL included.
* `systemd-env` — inside `KEY="..."` of a file only systemd's EnvironmentFile= parser reads
  (process services, backups; outpost's restore scripts read it the same way, never with `.`):
  `\\ " $ \\`` are backslash-escaped (systemd.exec(5), EnvironmentFile=: in double quotes a
  backslash escapes exactly these); control characters are refused (systemd drops a variable
  holding one, and a newline would end the line for any simpler reader).
* `podman-env` — `KEY=value` lines of podman's --env-file (containers), which takes the rest of the
  line literally: newline, CR and NUL are refused (they end the line or the string), and so is a
  leading quote, which some podman versions strip as multi-line value syntax.
* `line` — one token of a one-line setting (WireGuard keys and endpoints): no control character.
"""

from __future__ import annotations

import re

FORMATS = ("raw", "systemd-env", "podman-env", "line")
CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")   # every control character but tab
ENV_LINE_BREAK_RE = re.compile(r"[\x00\r\n]")
SYSTEMD_ESCAPED = '\\"$`'


class SecretValueError(ValueError):
    """A secret value the file's format cannot hold (the message never contains the value)."""


def _kind(value: str, pattern: re.Pattern[str]) -> str:
    char = pattern.search(value).group()
    return {"\x00": "a NUL byte", "\n": "a newline", "\r": "a carriage return"}.get(char, f"control character {ord(char):#04x}")


def systemd_env_inner(value: str) -> str:
    """VALUE as the inside of a double-quoted EnvironmentFile= value (the quotes are the file's)."""
    return "".join("\\" + c if c in SYSTEMD_ESCAPED else c for c in value)


def fill(fmt: str, name: str, value: str, path: str) -> str:
    """Secret NAME's VALUE as it is written into PATH (a file of format FMT)."""
    where = f"secret {name!r} cannot be written into {path}"
    if fmt == "raw":
        return value
    if fmt == "systemd-env":
        if CONTROL_RE.search(value):
            raise SecretValueError(f"{where}: it holds {_kind(value, CONTROL_RE)}, which an environment file "
                                   "cannot carry; store it as a secret_files file instead")
        return systemd_env_inner(value)
    if fmt == "podman-env":
        if ENV_LINE_BREAK_RE.search(value):
            raise SecretValueError(f"{where}: it holds {_kind(value, ENV_LINE_BREAK_RE)}, which podman's env file "
                                   "cannot carry (one variable per line); store it as a secret_files file instead")
        if value[:1] in ("'", '"', "`"):
            raise SecretValueError(f"{where}: it starts with a quote, which podman's env file may take as quoting; "
                                   "store it as a secret_files file instead")
        return value
    if fmt == "line":
        if CONTROL_RE.search(value) or "\t" in value:
            raise SecretValueError(f"{where}: it holds a control character, which a one-line setting cannot carry")
        return value
    raise ValueError(f"unknown secret format {fmt!r} (expected one of {', '.join(FORMATS)})")
