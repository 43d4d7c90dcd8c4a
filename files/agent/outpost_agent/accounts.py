"""Packages and accounts: apt packages a manifest needs (never removed), the service users it
lists (created, unlocked, lingering) and their retirement when no manifest lists them any more.

Only users the agent created (GECOS `outpost`) are ever locked or deleted; by default a retired
user is locked with its home and data kept, deleted only with `purge`. An account the agent did
not create is never taken over: a manifest that lists one, or names one as the user a
DynamicUser= service runs as (`dynamic_users`: systemd then runs it as that account), fails
before anything is written, naming the stack key to change (the config refuses only the accounts
every host has; postgres or mysql exist on some hosts and not on others).
"""

import contextlib
import os
import pwd
import signal
import time

from .base import AgentError
from .manifest import NOLOGIN
from .originals import Originals

USER_MARK = "outpost"  # GECOS comment of users the agent created; only those are ever deleted
USER_MANAGER_WAIT = 90    # loginctl enable-linger → user@UID.service and its bus are up
APT_TIMEOUT = 1800
APT_LOCK_WAIT = 300       # another apt (unattended-upgrades after boot) holds dpkg's lock
UNTOUCHED = "no dir, file or unit was changed; the next apply retries"
DYNAMIC_UIDS = range(61184, 65520)   # systemd's DynamicUser= accounts (nss-systemd, while running)


def account(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def taken(name, key, how):
    where = key or "the service's user:"
    return AgentError(f"user {name} already exists on this host and outpost did not create it: {how}, "
                      f"and outpost does not take over an account it did not create; set {where} to "
                      f"an account of its own ({UNTOUCHED.split(';')[0]})")


def processes_of(uid):
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except FileNotFoundError:
                pass
    return pids


class Accounts(Originals):
    """Ensure packages and users; wait for a user's systemd manager; retire users."""

    def ensure_packages(self, packages):
        if not packages:
            return []
        _, _, out = self.run(["dpkg-query", "-W", "-f=${Package}\t${db:Status-Status}\n", *packages],
                             check=False)
        installed = {line.split("\t")[0] for line in out.splitlines() if line.endswith("\tinstalled")}
        missing = [p for p in packages if p not in installed]
        if missing:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            apt = ["apt-get", "-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT}"]
            with self.step(f"installing packages {' '.join(missing)}"):
                self.run(apt + ["update", "-q"], timeout=APT_TIMEOUT, env=env)
                self.run(apt + ["install", "-y", "-q", *missing], timeout=APT_TIMEOUT, env=env)
            self.log(f"installed {' '.join(missing)}")
        return missing

    @contextlib.contextmanager
    def step(self, what):
        """Name the step an external command failed in. Packages and users come first in an
        apply: a failure there has changed no dir, file or unit, and the error says so."""
        try:
            yield
        except AgentError as e:
            raise AgentError(f"{what} failed ({UNTOUCHED}): {e}") from None

    def check_dynamic_users(self, entries):
        """A DynamicUser= service runs as an existing account of its user's name, if there is one."""
        for d in entries:
            existing = account(d["name"])
            if existing is not None and existing.pw_uid not in DYNAMIC_UIDS:
                raise taken(d["name"], d.get("key"), "its service would run as it (systemd's DynamicUser= "
                            "uses an existing account of that name)")

    def ensure_users(self, users):
        created = []
        for u in users:
            existing = account(u["name"])
            if existing is not None and existing.pw_gecos != USER_MARK:
                raise taken(u["name"], u.get("key"), "the service would own its files and run as it")
            if existing is not None and existing.pw_gecos == USER_MARK and self.locked_by_outpost(u["name"]):
                # kept by an earlier removal: this manifest takes the user and its data back
                with self.step(f"unlocking user {u['name']}"):
                    self.run(["usermod", "--unlock", "--expiredate", "", "--shell", u["shell"], u["name"]])
                created.append(u["name"])
                self.log(f"unlocked user {u['name']}")
            if existing is not None and existing.pw_dir.rstrip("/") != u["home"].rstrip("/"):
                # The manifest's paths below the home were rendered for u["home"]; writing them
                # for an account whose home is elsewhere would put the files beside its real ones.
                raise AgentError(f"user {u['name']} exists with home {existing.pw_dir}, not {u['home']}: "
                                 "outpost does not take over an existing account; give the service a user: of its own")
            if existing is None:
                argv = ["useradd", "--create-home", "--home-dir", u["home"], "--shell", u["shell"],
                        "--comment", USER_MARK, "--user-group"]
                if u["system"]:
                    argv += ["--system", "--add-subids-for-system"]
                with self.step(f"creating user {u['name']}"):
                    self.run(argv + [u["name"]])
                created.append(u["name"])
                self.log(f"created user {u['name']}")
            if u["linger"] and not os.path.exists(self.path(f"/var/lib/systemd/linger/{u['name']}")):
                with self.step(f"enabling linger for {u['name']}"):
                    self.run(["loginctl", "enable-linger", u["name"]])
                self.log(f"enabled linger for {u['name']}")
        return created

    def wait_user_manager(self, user):
        """Wait (bounded) until USER's systemd manager and its bus are up."""
        if user in self.ready_managers:
            return
        uid = self.ids(user, "root", f"scope user:{user}")[0]
        bus = self.path(f"/run/user/{uid}/bus")
        deadline = time.monotonic() + USER_MANAGER_WAIT
        while True:
            state = self.run(["systemctl", "is-active", f"user@{uid}.service"], check=False)[2].strip()
            if state == "active" and os.path.exists(bus):
                break
            if time.monotonic() > deadline:
                raise AgentError(f"the systemd manager of {user} is not up after {USER_MANAGER_WAIT}s "
                                 f"(user@{uid}.service is {state or 'unknown'}, {bus} "
                                 f"{'exists' if os.path.exists(bus) else 'missing'}); the user needs "
                                 "linger: true and the host the dbus-user-session package")
            time.sleep(0.5)
        self.ready_managers.add(user)

    def user_manager_running(self, user):
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            return False
        return self.run(["systemctl", "is-active", f"user@{uid}.service"], check=False)[2].strip() == "active"

    def retire_user(self, user, purge):
        """Stop a user the agent created (linger, manager, processes). Without purge the user
        stays, locked (`usermod --lock --expiredate 1`, shell nologin), with its home and data, so
        file ownership stays meaningful and a later apply can take it back; with purge it is
        deleted with its home and podman storage. Returns "deleted", "kept" or None (a user the
        agent did not create, or none at all)."""
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            return None
        if pw.pw_gecos != USER_MARK:
            self.log(f"kept user {user}: not created by outpost")
            return None
        uid = pw.pw_uid
        self.run(["loginctl", "disable-linger", user], check=False)
        self.run(["systemctl", "stop", f"user@{uid}.service", f"user-runtime-dir@{uid}.service"],
                 check=False)
        self.kill_processes(uid)
        if not purge:
            self.run(["usermod", "--lock", "--expiredate", "1", "--shell", NOLOGIN, user])
            self.log(f"kept user {user} locked, and its data in {pw.pw_dir} (purge: true deletes them)")
            return "kept"
        self.run(["userdel", "--remove", user], check=False)
        try:
            pwd.getpwnam(user)
            raise AgentError(f"userdel could not delete {user}")
        except KeyError:
            pass
        for leftover in (f"/tmp/storage-run-{uid}", f"/tmp/podman-run-{uid}",
                         f"/var/tmp/containers-user-{uid}"):  # podman's places outside the home
            if os.path.isdir(self.path(leftover)):
                self.run(["rm", "-rf", "--one-file-system", "--", self.path(leftover)])
        if os.path.isdir(self.path(pw.pw_dir)):
            self.log(f"warning: userdel left {pw.pw_dir} behind")
        self.log(f"deleted user {user} and its home {pw.pw_dir}")
        return "deleted"

    def locked_by_outpost(self, user):
        """True when USER's account expired on 1970-01-02: how retire_user locks a kept user."""
        try:
            with open(self.path("/etc/shadow"), encoding="utf-8") as fh:
                for line in fh:
                    fields = line.rstrip("\n").split(":")
                    if fields[0] == user and len(fields) > 7:
                        return fields[7] == "1"
        except FileNotFoundError:
            pass
        return False

    def kill_processes(self, uid, wait=15):
        """SIGTERM, then SIGKILL, every process of uid; bounded."""
        deadline, sig = time.monotonic() + wait, signal.SIGTERM
        while pids := processes_of(uid):
            if time.monotonic() > deadline:
                if sig == signal.SIGKILL:
                    raise AgentError(f"processes {pids} of uid {uid} survived SIGKILL")
                sig, deadline = signal.SIGKILL, time.monotonic() + 5
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(0.3)
