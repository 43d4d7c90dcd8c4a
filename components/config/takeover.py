"""Accounts and paths outpost must never take over on a host.

The agent runs as root: a service whose `user:` names an account the host already has would make
outpost chown files to (and later lock or delete) that account; a `secret_files` or `artifacts`
target under /etc/sudoers.d, a unit directory or /etc/ssh would hand whoever controls that value
root on the host. Pure: every rule yields (key path, message). (Two manifests writing one path,
which needs the rendered stack, is `path_clashes` in components/load.py; the names and paths
themselves are in reserved.py.)
"""

from __future__ import annotations

from collections.abc import Iterator

from .model import Stack
from .reserved import FORBIDDEN_IN_HOME, FORBIDDEN_TARGETS, RESERVED, SYSTEM_ACCOUNTS

Problem = tuple[str, str]

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
    # a service *named* like a host account (RESERVED) is reported by checks.py already
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
                          "components/config/reserved.py); outpost would take it over: give the service a user: of its own")


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
