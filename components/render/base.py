"""The base setup every host gets: packages, hardened sshd, the admin's keys, time sync,
unattended upgrades and the on-host agent (`outpost-apply`) the other manifests run through.

Pure: `base_manifest(stack, host)` returns the `base` Manifest; `bootstrap_script(stack)` is the
first-login script that creates the admin user on a static host.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from ..config.model import Stack
from .manifest import Dir, File, Manifest
from .proxy import proxy_packages

FILES = Path(__file__).resolve().parent.parent.parent / "files"
ADMIN_MARK = "outpost admin"   # GECOS of an admin user the bootstrap created (and destroy may delete)
AGENT_PATH = "/usr/local/lib/outpost/outpost-apply.py"
BASE_PACKAGES = ["python3", "sudo", "curl", "ca-certificates", "unattended-upgrades",
                 "systemd-timesyncd", "podman", "passt", "uidmap", "dbus-user-session"]

SSHD_CONFIG = """\
# Managed by outpost: key-only logins, no root.
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitEmptyPasswords no
X11Forwarding no
MaxAuthTries 3
"""

AUTO_UPGRADES = """\
// Managed by outpost: install security updates every day.
APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
"""


def agent_source() -> str:
    return (FILES / "agent" / "outpost-apply.py").read_text()


def sudoers(admin: str) -> str:
    return f"# Managed by outpost.\n{admin} ALL=(ALL:ALL) NOPASSWD: ALL\n"


def authorized_keys(stack: Stack) -> str:
    return "".join(f"{key}\n" for key in stack.admin.ssh_keys)


def packages_for(stack: Stack, host: str) -> list[str]:
    packages = list(BASE_PACKAGES)
    if host in stack.routed_hosts():
        packages += proxy_packages(stack.proxy.kind)
    if any(stack.networks[n].kind == "wireguard" for n in stack.hosts[host].networks if n in stack.networks):
        packages.append("wireguard-tools")
    if any(b.host == host and b.tool == "restic" for b in stack.backups.values()):
        packages.append("restic")
    return sorted(set(packages))


def base_manifest(stack: Stack, host: str) -> Manifest:
    admin = stack.admin.user
    home = f"/home/{admin}"
    sshd = "/etc/ssh/sshd_config.d/10-outpost.conf"
    return Manifest(
        name="base",
        packages=packages_for(stack, host),
        dirs=[Dir("/usr/local/lib/outpost", "0755"), Dir("/var/lib/outpost", "0700")],
        files=[
            File(AGENT_PATH, agent_source(), "0755"),
            File(sshd, SSHD_CONFIG, "0644"),
            File(f"/etc/sudoers.d/90-outpost-{admin}", sudoers(admin), "0440"),
            File(f"{home}/.ssh/authorized_keys", authorized_keys(stack), "0600", admin, admin),
            File("/etc/apt/apt.conf.d/20auto-upgrades", AUTO_UPGRADES, "0644"),
        ],
        units=[],
        # the staged drop-in itself: plain `sshd -t` would check the live tree, not the new file
        validate=[{"argv": ["/usr/sbin/sshd", "-t", "-f", f"{{staged:{sshd}}}"]}],
        restart=[{"group": "sshd", "strategy": "reload", "scope": "system", "when": [sshd],
                  "instances": [{"unit": "ssh.service", "health": None}]}],
    )


def unbootstrap_script(stack: Stack) -> str:
    """The bootstrap's `delete` (`pulumi destroy`): the admin user and its sudo rule go again.

    It runs after the base setup's removal, which restored the host's own sshd settings, so the
    first-login user can connect again. Only an admin the bootstrap created (its GECOS says so) is
    deleted, never the user this runs as; the admin's last processes (its user manager outlives
    the session by a moment) are waited for, then killed, so `userdel` finds none."""
    admin = shlex.quote(stack.admin.user)
    mark = shlex.quote(ADMIN_MARK)
    return "\n".join([
        "set -eu",
        'if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; else SUDO=; fi',
        f"$SUDO rm -f /etc/sudoers.d/90-outpost-{admin}",
        f'if [ "$(getent passwd {admin} | cut -d: -f5)" = {mark} ] && [ "$(id -un)" != {admin} ]; then',
        f"  $SUDO loginctl terminate-user {admin} 2>/dev/null || true",
        "  tries=0",
        f"  while id -u {admin} >/dev/null 2>&1; do",
        f"    $SUDO userdel --remove {admin} 2>/dev/null || true",
        f"    id -u {admin} >/dev/null 2>&1 || break",
        "    tries=$((tries + 1))",
        f'    if [ "$tries" -ge 30 ]; then $SUDO userdel --remove {admin}; exit 1; fi',
        f"    $SUDO pkill -KILL -u {admin} 2>/dev/null || true",
        "    sleep 1",
        "  done",
        f"  echo 'outpost bootstrap: admin {stack.admin.user} removed'",
        "else",
        f"  echo 'outpost bootstrap: admin {stack.admin.user} kept (not created by outpost)'",
        "fi",
    ]) + "\n"


def bootstrap_script(stack: Stack) -> str:
    """POSIX sh run once as a static host's first-login user: the admin user, its keys, sudo.

    Everything after this runs as the admin through `outpost-apply`; the base manifest then
    takes over the same files, so later key changes never need the first-login user again.
    """
    admin = shlex.quote(stack.admin.user)
    keys = shlex.quote(authorized_keys(stack))
    rule = shlex.quote(sudoers(stack.admin.user))
    return "\n".join([
        "set -eu",
        'if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; else SUDO=; fi',
        "command -v sudo >/dev/null || $SUDO apt-get install -y -q sudo >/dev/null",
        f"id -u {admin} >/dev/null 2>&1 || $SUDO useradd --create-home --shell /bin/bash --comment {shlex.quote(ADMIN_MARK)} {admin}",
        f"$SUDO install -d -m 0700 -o {admin} -g {admin} /home/{admin}/.ssh",
        f"printf %s {keys} | $SUDO tee /home/{admin}/.ssh/authorized_keys >/dev/null",
        f"$SUDO chown {admin}:{admin} /home/{admin}/.ssh/authorized_keys",
        f"$SUDO chmod 0600 /home/{admin}/.ssh/authorized_keys",
        f"printf %s {rule} | $SUDO tee /etc/sudoers.d/90-outpost-{admin} >/dev/null",
        f"$SUDO chmod 0440 /etc/sudoers.d/90-outpost-{admin}",
        f"echo 'outpost bootstrap: admin {stack.admin.user} ready'",
    ]) + "\n"
