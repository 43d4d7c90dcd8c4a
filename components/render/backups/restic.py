"""`tool: restic`: scheduled, deduplicated, encrypted snapshots of directories — the repository's
env file, the sandboxed oneshot and its timer, the restore script (see the package docstring).
"""

from __future__ import annotations

import re
import shlex

from ...config.model import Backup, Stack
from ..manifest import File, Manifest, Unit, secret_ref
from ..restore import restore_parts
from ..systemd import exec_line, exec_word, unit_text
from .common import (AUTO_COMMON, CONFIG_DIR, HARDENING, RESTORE_HARDENING, UNIT_DIR, endpoint_of,
                     env_value, header, owner_cases, paths_of, restore_dependency, restore_options, restore_path,
                     with_env)

CACHE_PREFIX = "outpost-backup-"            # CacheDirectory= → /var/cache/outpost-backup-<name>
RANDOMIZED_DELAY = "30min"
PING_CURL = ["/usr/bin/curl", "-fsS", "-m", "10", "--retry", "3", "-o", "/dev/null"]
RESTIC = "/usr/bin/restic"
PING_RE = re.compile(r"https?://[^\s'\"\\]+")
# restic only reads what it backs up.
RESTIC_CAPABILITIES = "CapabilityBoundingSet=CAP_DAC_READ_SEARCH"


def ping_url(backup: Backup, name: str) -> str | None:
    if backup.ping is None:
        return None
    url = backup.ping.rstrip("/")
    if not PING_RE.fullmatch(url):
        raise ValueError(f"backups.{name}.ping: {backup.ping!r} must be an http(s) URL without spaces "
                         "or quotes, like https://hc-ping.com/<uuid>")
    return url


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
{options}
{with_env}
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
                                 script=script, restic=shlex.quote(RESTIC),
                                 with_env=with_env(env_path or restic_env_path(name)),
                                 options=restore_options("snapshot", "        --list) list=1 ;;\n"))


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
