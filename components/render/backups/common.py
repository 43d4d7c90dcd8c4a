"""What both backup tools share: where their files go, backup names, env-file values, the
sandbox every backup unit runs in (and the restore unit's variant of it), and the shell both
restore scripts are built on (reading the env file as data, the --auto mode's checks).
Pure, like the rest of the render layer.
"""

from __future__ import annotations

import re
import shlex

from ...config.model import Backup, Bucket, Stack
from ..restore import owners, restore_unit_name
from ..secret_values import systemd_env_inner
from ..systemd import SANDBOX, SYSCALL_FILTER, single_line

UNIT_DIR = "/etc/systemd/system"
CONFIG_DIR = "/etc/outpost/backup"
RESTORE_DIR = "/usr/local/sbin"
# The manifest (backup-<name>) and restart group are named after the backup: the agent accepts
# [a-z0-9][a-z0-9-]* there (no '_').
BACKUP_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
# Shared by both tools: every sandbox setting that leaves a root job its network and its reads.
HARDENING = [
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=read-only",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "PrivateMounts=yes",
    *SANDBOX,
    "AmbientCapabilities=",
    *SYSCALL_FILTER,
]
# The automatic restore writes the restored paths anywhere outside /usr, /boot and /etc, with their
# owners and modes, and chowns them: the shared sandbox without the read-only view of the host,
# the private /tmp, the set-uid and @privileged (chown) bans and the 0077 umask.
RESTORE_CAPABILITIES = "CapabilityBoundingSet=CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID"
RESTORE_HARDENING = [RESTORE_CAPABILITIES, "ProtectSystem=full"] + [
    line for line in HARDENING
    if line.split("=", 1)[0] not in ("ProtectSystem", "ProtectHome", "PrivateTmp", "RestrictSUIDSGID", "UMask")
    and line != "SystemCallFilter=~@privileged @resources"] + ["UMask=0022"]


def check_backup_name(name: str) -> None:
    if not BACKUP_NAME_RE.fullmatch(name):
        raise ValueError(f"backups.{name}: its manifest (backup-{name}), units and restart group need "
                         "a name of a-z, 0-9 and '-' (no '_')")


def env_value(value: str, what: str) -> str:
    """`"value"` for systemd's EnvironmentFile= parser (and outpost's ENV_LOADER, which reads it the
    same way); a `<secret:NAME>` inside is escaped on fill-in (format systemd-env)."""
    return '"' + systemd_env_inner(single_line(value, what)) + '"'


def endpoint_of(bucket: Bucket, what: str) -> str:
    """Where the host reaches the bucket: `host_endpoint` when set, else `endpoint`."""
    return single_line(bucket.host_endpoint or bucket.endpoint, what).rstrip("/")


def paths_of(backup: Backup, name: str) -> list[str]:
    return list(backup.paths)  # absolute and normalized: the model's AbsPath


def restore_path(name: str) -> str:
    return f"{RESTORE_DIR}/outpost-restore-{name}"


def restore_dependency(name: str, backup: Backup) -> list[str]:
    """restore: auto → the backup waits for the restore, and never runs after a failed one (so it
    can't push a snapshot of the empty paths a failed restore left)."""
    if backup.restore != "auto":
        return []
    return [f"Requires={restore_unit_name(name)}", f"After={restore_unit_name(name)}"]


def owner_cases(stack: Stack, name: str) -> str:
    """The body of the scripts' `owner_of PATH` case: the one service user each path belongs to."""
    return "".join(f"        {shlex.quote(p)}) echo {shlex.quote(u)} ;;\n" for p, u in owners(stack, name))


def header(lines: list[str]) -> str:
    return "".join(f"# {line}\n" if line else "#\n" for line in lines)

# `python3 -c ENV_LOADER FILE COMMAND ...`: runs COMMAND with the KEY="value" assignments of FILE
# (an env file outpost wrote for systemd) added to the environment, parsed the way systemd's
# EnvironmentFile= parses double-quoted values: a backslash escapes \\ " $ ` and is kept before
# anything else. Nothing in the file is ever run, and no line is ever printed (they hold secrets).
ENV_LOADER = """\
import os, sys
path, argv, env, q = sys.argv[1], sys.argv[2:], dict(os.environ), chr(34)
with open(path, encoding="utf-8") as lines:
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\\n")
        if not line.strip() or line.lstrip().startswith(("#", ";")):
            continue
        key, eq, value = line.partition("=")
        if not eq or not key.isidentifier() or len(value) < 2 or value[0] != q or value[-1] != q:
            sys.exit(path + ": line " + str(number) + " is not KEY=\\"value\\"")
        out, chars = [], iter(value[1:-1])
        for c in chars:
            if c == "\\\\":
                c = next(chars, "")
                out.append(c if c in "\\\\\\"$`" else "\\\\" + c)
            else:
                out.append(c)
        env[key] = "".join(out)
os.execvpe(argv[0], argv, env)
"""
# The restore scripts' options: --auto, --target PATH (--target=PATH), -h; the first other option
# and everything after it go to the tool; a plain word names what to restore (the script's
# POSITIONAL variable). EXTRA: the script's own cases, before these.
RESTORE_OPTIONS = """\
while [ $# -gt 0 ]; do
    case $1 in
{extra}        --auto) auto=1 ;;
        --target) [ $# -ge 2 ] || usage; target=$2; shift ;;
        --target=*) target=${{1#--target=}} ;;
        -h|--help) usage ;;
        -*) break ;;
        *) {positional}=$1 ;;
    esac
    shift
done"""


def restore_options(positional: str, extra: str = "") -> str:
    return RESTORE_OPTIONS.format(positional=positional, extra=extra)


def with_env(env_path: str) -> str:
    """The restore scripts' `with_env COMMAND ...`: COMMAND with the settings of the env file at
    ENV_PATH (ENV_LOADER reads it)."""
    return ("# The env file holds secrets: it is read as data (the way systemd reads it), never sourced.\n"
            f"with_env() {{\n    python3 -c {shlex.quote(ENV_LOADER)} {shlex.quote(env_path)} \"$@\"\n}}")


# Shared by both restore scripts' --auto mode. Empty: missing, an empty directory or a 0-byte file
# (a symlink is never empty). A path reached through a symlink is refused: a service user could
# have planted it to make root write elsewhere.
AUTO_COMMON = """\
owner_of() {{
    case $1 in
{owner_cases}    esac
}}
is_empty() {{
    if [ -L "$1" ]; then return 1; fi
    if [ ! -e "$1" ]; then return 0; fi
    if [ -d "$1" ]; then [ -z "$(ls -A -- "$1")" ]; return; fi
    [ -f "$1" ] && [ ! -s "$1" ]
}}
check_no_symlink() {{
    real=$(realpath -m -- "$1")
    if [ "$real" != "$1" ]; then
        echo "{script}: refusing to restore $1: a symlink on the way leads to $real" >&2
        exit 1
    fi
}}
"""
