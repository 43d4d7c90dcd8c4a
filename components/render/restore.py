"""Automatic restore: for every `outpost:backups` entry with `restore: auto` (the default), what puts
its paths back on a fresh host before the services that use them start.

Pure, like the rest of the render layer. `backups.py` adds these to the `backup-<name>` manifest:

* `outpost-restore-<name>.service` — a oneshot (RemainAfterExit=yes, enabled, so it runs on every
  boot) that runs `outpost-restore-<name> --auto`: each backed-up path that is missing or empty
  comes back from the newest snapshot (restic) or replica (litestream); a path that holds anything
  is never touched; an empty repository is "nothing to restore". On success it touches
  `/run/outpost/restore/<name>.done`. The agent starts it synchronously (`report`), prints its
  journal lines and fails the apply when it fails; removing the manifest never stops it (`stop:
  false`): stopping it would stop every service that Requires= it.
* `/etc/systemd/system/<unit>.d/outpost-restore-<name>.conf` — for each system unit of a service
  on the host whose data (state directory /var/lib/<dir>, container volumes' host side, secret
  files, artifacts) lies under one of the backup's paths, or contains one: `Requires=` and
  `After=` the restore unit, so a failed restore keeps the service down, on every boot.
* `<home>/.config/systemd/user/<unit>.d/outpost-restore-<name>.conf` — a rootless container's
  units live in its user's manager, which cannot depend on system units: an `ExecStartPre=` waits
  (bounded, WAIT_SECONDS by the clock) for the marker the restore unit writes. The wait counts
  against the unit's start timeout (120 s for a container, 90 s by default), so the drop-in
  raises that to WAIT_SECONDS plus the container's own start time; a oneshot job keeps its
  unlimited one.
* The users of those services, as their own manifests declare them: the restore chowns what it
  restored to the one service user the path belongs to (restic restores numeric ids; a fresh host
  may have given the user another uid), so the user must exist before the service's own manifest
  creates it. Their `purge` is the service's: the agent retires a user only once no manifest
  lists it, so removing the backup never purges a user a service still has.

`restored_services(stack, host)` tells the resource layer which `svc-<name>` Commands must wait
for which `backup-<name>` Commands on the first apply.
"""

from __future__ import annotations

import shlex

from ..config.model import Backup, Stack
from .manifest import File, Unit, User
from .services import CONTAINER_START_TIMEOUT, container_place, home, service_manifest
from .systemd import exec_line, exec_word, unit_text

UNIT_DIR = "/etc/systemd/system"
MARKER_DIR = "/run/outpost/restore"
WAIT_SECONDS = 900


def restore_unit_name(name: str) -> str:
    return f"outpost-restore-{name}.service"


def marker(name: str) -> str:
    return f"{MARKER_DIR}/{name}.done"


def overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def data_paths(stack: Stack, svc_name: str) -> list[str]:
    """Where a service keeps what it must find on start: its state directory, its container
    volumes' host side, its secret files and artifacts."""
    svc = stack.services[svc_name]
    paths = [f"/var/lib/{svc.state_directory}"] if svc.process and svc.state_directory else []
    if svc.container:
        paths += [v.split(":", 1)[0] for v in svc.container.volumes if v.startswith("/")]
    paths += list(svc.secret_files)
    if svc.process:
        paths += list(svc.process.artifacts)
    return paths


def covered_services(stack: Stack, name: str) -> list[str]:
    """The services on the backup's host whose data lies under (or contains) one of its paths."""
    backup = stack.backups[name]
    return sorted(s for s in stack.services_on(backup.host)
                  if any(overlaps(d, p) for d in data_paths(stack, s) for p in backup.paths))


def auto_backups(stack: Stack, host: str) -> list[str]:
    return sorted(n for n, b in stack.backups.items() if b.host == host and b.restore == "auto")


def restored_services(stack: Stack, host: str) -> dict[str, list[str]]:
    """service name → the `auto` backups on HOST that restore its data."""
    out: dict[str, list[str]] = {}
    for name in auto_backups(stack, host):
        for svc in covered_services(stack, name):
            out.setdefault(svc, []).append(name)
    return out


# --- who owns a restored path ----------------------------------------------------------------------------

def service_user(stack: Stack, svc_name: str) -> str | None:
    """The fixed account a service's files belong to; None for root (rootful containers) and
    DynamicUser= processes (the check refuses backing up their state directory)."""
    svc = stack.services[svc_name]
    if svc.container:
        return container_place(stack, svc_name).user
    return None if svc.dynamic_user else stack.service_user(svc_name)


def path_owner(stack: Stack, name: str, path: str) -> str | None:
    """The one service user PATH belongs to: it lies in that user's home or in the data of a
    service running as that user. None when no user or several claim it."""
    backup = stack.backups[name]
    users = set()
    for svc in stack.services_on(backup.host):
        user = service_user(stack, svc)
        if user and (inside(path, home(user)) or any(inside(path, d) for d in data_paths(stack, svc))):
            users.add(user)
    return users.pop() if len(users) == 1 else None


def owners(stack: Stack, name: str) -> list[tuple[str, str]]:
    """(path, user) for every path of the backup that belongs to exactly one service user."""
    return [(p, u) for p in stack.backups[name].paths if (u := path_owner(stack, name, p))]


def owner_users(stack: Stack, name: str) -> list[User]:
    """The accounts the restore chowns to, exactly as the services' own manifests declare them."""
    wanted = {u for _, u in owners(stack, name)}
    host = stack.backups[name].host
    found: dict[str, User] = {}
    for svc in sorted(stack.services_on(host)):
        for user in service_manifest(stack, host, svc).users:
            if user.name in wanted:
                found.setdefault(user.name, user)
    return [found[u] for u in sorted(found)]


# --- units ------------------------------------------------------------------------------------------------

def service_units(stack: Stack, svc_name: str) -> tuple[str, str, list[str]]:
    """(scope, unit file name a drop-in attaches to, the unit instances that run)."""
    svc = stack.services[svc_name]
    scope = container_place(stack, svc_name).scope if svc.container else "system"
    if svc.socket:
        return scope, f"{svc_name}@.service", [f"{svc_name}@{i}.service" for i in range(1, svc.socket.instances + 1)]
    if svc.replicas and not svc.is_job:
        return scope, f"{svc_name}@.service", [f"{svc_name}@{p}.service" for p in svc.replicas]
    return scope, f"{svc_name}.service", [f"{svc_name}.service"]


def restore_unit(stack: Stack, name: str, backup: Backup, exec_start: list[str], hardening: list[str]) -> str:
    """The oneshot that runs `outpost-restore-<name> --auto` once per boot, before the services."""
    before = sorted(u for s in covered_services(stack, name)
                    for scope, _, units in [service_units(stack, s)] if scope == "system" for u in units)
    lines = [
        "# Managed by outpost: automatic restore of backup " + name + " (restore: auto).",
        "# Restores each backed-up path that is missing or empty from the newest snapshot, never one",
        "# that holds anything; the services using the paths Require= this unit (drop-ins).",
        "[Unit]",
        f"Description={unit_text(f'outpost: restore backup {name} where its paths are missing or empty')}",
        "Wants=network-online.target",
        "After=network-online.target",
        *([f"Before={' '.join(before)}"] if before else []),
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"ExecStart={exec_line(exec_start)}",
        f"ExecStartPost={exec_line(['/usr/bin/touch', marker(name)])}",
        "RuntimeDirectory=outpost/restore",
        "RuntimeDirectoryMode=0755",
        "RuntimeDirectoryPreserve=yes",
        "TimeoutStartSec=6h",
        *hardening,
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def system_dropin(name: str, svc_name: str) -> str:
    unit = restore_unit_name(name)
    return (f"# Managed by outpost: {svc_name} starts after backup {name} restored its data (or found\n"
            "# nothing to restore); a failed restore keeps it down.\n"
            f"[Unit]\nRequires={unit}\nAfter={unit}\n")


def user_dropin(name: str, svc_name: str, oneshot: bool) -> str:
    done = marker(name)
    script = (f"end=$(($(date +%s) + {WAIT_SECONDS})); while [ ! -e {shlex.quote(done)} ]; do "
              f"if [ $(date +%s) -ge $end ]; then "
              f"echo 'backup {name} has not restored (or found nothing to restore) within {WAIT_SECONDS}s: "
              f"see journalctl -u {restore_unit_name(name)}' >&2; exit 1; fi; sleep 1; done")
    # The wait is part of the start: without this, systemd would cut it short after the unit's
    # TimeoutStartSec= (a oneshot's start timeout is unlimited already).
    timeout = "" if oneshot else f"TimeoutStartSec={WAIT_SECONDS + CONTAINER_START_TIMEOUT + 60}\n"
    return (f"# Managed by outpost: {svc_name} runs in its user's manager, which cannot depend on the\n"
            f"# system unit {restore_unit_name(name)}: it waits (at most {WAIT_SECONDS}s) for the marker\n"
            "# that unit writes once the data is restored (or there was nothing to restore).\n"
            f"[Service]\nExecStartPre=/bin/sh -c {exec_word(script)}\n{timeout}")


def dropins(stack: Stack, name: str) -> list[File]:
    files = []
    for svc in covered_services(stack, name):
        scope, unit_file, _ = service_units(stack, svc)
        if scope == "system":
            files.append(File(f"{UNIT_DIR}/{unit_file}.d/outpost-restore-{name}.conf", system_dropin(name, svc)))
        else:
            user = scope.split(":", 1)[1]
            place = container_place(stack, svc)
            files.append(File(f"{place.unit_dir}/{unit_file}.d/outpost-restore-{name}.conf",
                              user_dropin(name, svc, stack.services[svc].is_job), "0644", user, user))
    return files


def restore_parts(stack: Stack, name: str, backup: Backup, exec_start: list[str],
                  hardening: list[str]) -> tuple[list[File], list[Unit], list[User]]:
    """The unit, drop-ins, the unit entry and the users an `auto` backup adds to its manifest."""
    if backup.restore != "auto":
        return [], [], []
    unit = File(f"{UNIT_DIR}/{restore_unit_name(name)}", restore_unit(stack, name, backup, exec_start, hardening))
    return ([unit, *dropins(stack, name)], [Unit(restore_unit_name(name), report=True, stop=False)],
            owner_users(stack, name))

