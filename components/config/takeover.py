"""Accounts and paths outpost must never take over on a host.

The agent runs as root: a service whose `user:` names an account the host already has would make
outpost chown files to (and later lock or delete) that account; a `secret_files` or `artifacts`
target under /etc/sudoers.d, a unit directory or /etc/ssh would hand whoever controls that value
root on the host; two manifests writing one path would undo each other on every apply, and removing
one would delete the other's file. Pure: every rule yields (key path, message).
"""

from __future__ import annotations

from collections.abc import Iterator

from .model import Stack

Problem = tuple[str, str]

# Accounts every outpost host has, refused here before anything runs: Debian's base-passwd users
# and groups (`useradd --user-group` needs the group name free too), the accounts systemd and
# OpenSSH create, the users of the three proxies (a stack may switch proxy kind on its hosts) and
# outpost's admin. A service may not run as one of them, and the admin may not be one either.
# Any other name (postgres, mysql, redis, ...) is a real account on some hosts and not on others:
# the agent refuses at apply time to take over an account it did not create, naming the
# service's `user:` key (files/agent: ensure_users), so a host without it is no reason to refuse.
SYSTEM_ACCOUNTS = frozenset({
    # base-passwd: users
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy",
    "www-data", "backup", "list", "irc", "gnats", "nobody", "_apt",
    # base-passwd: groups
    "adm", "tty", "disk", "kmem", "dialout", "fax", "voice", "cdrom", "floppy", "tape", "sudo",
    "audio", "dip", "operator", "src", "shadow", "utmp", "video", "sasl", "plugdev", "staff",
    "users", "nogroup",
    # systemd (sysusers), udev, dbus, OpenSSH, cron
    "systemd-network", "systemd-resolve", "systemd-timesync", "systemd-journal",
    "systemd-journal-remote", "systemd-coredump", "systemd-oom", "messagebus", "input", "kvm",
    "render", "sgx", "netdev", "sshd", "_ssh", "ssh", "crontab",
    # the proxies, and outpost's own admin
    "caddy", "haproxy", "nginx", "admin",
})

# Where a file from `secret_files` or `artifacts` may never go: root's own controls (sudo, sshd,
# PAM, the account databases, cron), every directory systemd or podman read units from, and the
# agent's own program and state. A path equal to one of these or below it is refused.
FORBIDDEN_TARGETS = (
    "/etc/sudoers.d", "/etc/sudoers",
    "/etc/ssh", "/root",
    "/etc/pam.d", "/etc/security", "/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow",
    "/etc/subuid", "/etc/subgid", "/etc/cron.d", "/etc/cron.daily", "/etc/cron.hourly",
    "/etc/cron.weekly", "/etc/cron.monthly", "/etc/crontab", "/var/spool/cron",
    "/etc/ld.so.preload", "/etc/ld.so.conf.d", "/etc/profile.d", "/etc/environment",
    "/etc/apt", "/etc/modprobe.d", "/etc/polkit-1",
    # unit directories (system, user, generators, quadlets)
    "/etc/systemd", "/run/systemd", "/lib/systemd", "/usr/lib/systemd", "/usr/local/lib/systemd",
    "/etc/containers", "/usr/share/containers", "/usr/lib/containers",
    # the agent and its state
    "/usr/local/lib/outpost", "/var/lib/outpost", "/etc/outpost",
)
# Below any home directory: the user's own unit directories (the admin's home is refused whole).
FORBIDDEN_IN_HOME = (".config/systemd", ".config/containers", ".local/share/systemd")

# One rollout restarts replicas one at a time while it holds the host's apply lock.
MAX_REPLICAS = 16


def forbidden_target(path: str, admin: str) -> str | None:
    """The protected location PATH is (or lies under), or None. ADMIN's home is protected whole.
    PATH is normalized: the model refuses '.', '..' and '//' before this check runs."""
    norm = path
    for root in FORBIDDEN_TARGETS:
        if norm == root or norm.startswith(root + "/") or (root == "/etc/sudoers" and norm.startswith(root)):
            return root
    parts = norm.split("/")
    if len(parts) > 2 and parts[1] == "home" and parts[2] == admin:
        return f"/home/{admin} (the admin's home)"
    if len(parts) > 3 and parts[1] == "home":
        inside = "/".join(parts[3:])
        for sub in FORBIDDEN_IN_HOME:
            if inside == sub or inside.startswith(sub + "/"):
                return f"~/{sub}"
    return None


def takeover(stack: Stack) -> Iterator[Problem]:
    yield from _accounts(stack)
    yield from _targets(stack)
    yield from _replicas(stack)


def _accounts(stack: Stack) -> Iterator[Problem]:
    admin = stack.admin.user
    if admin == "root":
        yield "admin.user", ("root cannot be the admin: outpost creates the admin as a login user with sudo and "
                             "turns root logins off; use a name of its own like admin")
    elif admin in SYSTEM_ACCOUNTS - {"admin"}:
        yield "admin.user", f"{admin!r} is a system account of the host; pick a login name of its own like admin"
    from .checks import RESERVED   # a service *named* like a host account is reported there already

    for name, svc in stack.services.items():
        user = stack.service_user(name)
        if not svc.user and (name in RESERVED or name == admin):
            continue
        where = f"services.{name}.user" if svc.user else f"services.{name}"
        what = "user" if svc.user else "the service's user (its name, as no user: is given)"
        if user == admin:
            yield where, f"{what} {user!r} is the admin user; a service runs as an account of its own"
        elif user in SYSTEM_ACCOUNTS:
            yield where, (f"{what} {user!r} is a system account every host has (see SYSTEM_ACCOUNTS in "
                          "components/config/takeover.py); outpost would take it over: give the service a user: of its own")


def _targets(stack: Stack) -> Iterator[Problem]:
    for name, svc in stack.services.items():
        targets = [(f"services.{name}.secret_files.{p}", p) for p in svc.secret_files]
        if svc.process:
            targets += [(f"services.{name}.process.artifacts.{p}", p) for p in svc.process.artifacts]
        for where, path in targets:
            root = forbidden_target(path, stack.admin.user)
            if root is not None:
                if root.startswith("a path"):
                    yield where, f"{path} is {root}"
                else:
                    yield where, (f"{path} is in {root}, which outpost never lets a service file replace "
                                  "(sudo, sshd, account and unit configuration, the agent itself); put it elsewhere, "
                                  "e.g. under /etc/<service>/ or /opt/<service>/")


def _replicas(stack: Stack) -> Iterator[Problem]:
    for name, svc in stack.services.items():
        if len(svc.replicas) > MAX_REPLICAS:
            yield f"services.{name}.replicas", (f"{len(svc.replicas)} replicas; at most {MAX_REPLICAS} (a rollout restarts "
                                                "them one at a time while it holds the host's apply lock)")


def path_clashes(stack: Stack) -> Iterator[Problem]:
    """Two manifests on one host writing one path (or one manifest writing it twice). Renders the
    stack, so `parse` runs it last, once every other rule and the renderers passed. Files several
    manifests ship byte for byte alike (the shared litestream scripts) are not a clash."""
    from ..render import render_stack   # the render layer imports the config layer: import late

    for host, manifests in render_stack(stack).items():
        seen: dict[str, tuple[str, object]] = {}
        for manifest in manifests:
            for f in manifest.files:
                first = seen.get(f.path)
                if first is None:
                    seen[f.path] = (manifest.name, f)
                    continue
                other, other_file = first
                if other != manifest.name and other_file == f:
                    continue
                mine, theirs = _key_for(stack, manifest.name, f.path), _key_for(stack, other, f.path)
                where = mine if mine.startswith("services.") or not theirs.startswith("services.") else theirs
                owners = (f"manifest {other} writes it too" if other != manifest.name
                          else "it is written twice by this service")
                yield where, f"{f.path} on host {host!r}: {owners}; each path has one owner: move one of them"


def _key_for(stack: Stack, manifest: str, path: str) -> str:
    if manifest.startswith("svc-"):
        name = manifest[4:]
        svc = stack.services.get(name)
        if svc is not None:
            if path in svc.secret_files:
                return f"services.{name}.secret_files.{path}"
            if svc.process and path in svc.process.artifacts:
                return f"services.{name}.process.artifacts.{path}"
            return f"services.{name}"
    if manifest.startswith("backup-") and manifest[7:] in stack.backups:
        return f"backups.{manifest[7:]}"
    if manifest == "proxy":
        return "proxy"
    return f"hosts ({manifest})"
