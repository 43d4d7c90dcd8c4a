"""The base setup every host gets: packages, hardened sshd (the admin alone, no forwarding), the
admin's keys, time sync, unattended upgrades, the host firewall (firewall.py) and the on-host agent
(`outpost-apply`) the other manifests run through.

Pure: `base_manifest(stack, host)` returns the `base` Manifest; `bootstrap_script(stack)` is the
first-login script that creates the admin user on a static host.
"""

from __future__ import annotations

import shlex

from ..config.model import Stack
from . import firewall
from .agent import AGENT_PATH, agent_zipapp
from .manifest import Dir, File, Manifest, Unit
from .proxy import proxy_packages

ADMIN_MARK = "outpost admin"   # GECOS of an admin user the bootstrap created (and destroy may delete)
BASE_PACKAGES = ["python3", "sudo", "curl", "ca-certificates", "unattended-upgrades",
                 "systemd-timesyncd", "podman", "passt", "uidmap", "dbus-user-session", "nftables"]

SSHD_CONFIG = """\
# Managed by outpost: key-only logins by the admin alone, no root, no forwarding or tunnels.
AllowUsers {admin}
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitEmptyPasswords no
X11Forwarding no
AllowTcpForwarding no
AllowStreamLocalForwarding no
AllowAgentForwarding no
PermitTunnel no
GatewayPorts no
MaxAuthTries 3
"""


def sshd_config(stack: Stack) -> str:
    """The sshd drop-in. The static-host bootstrap logs in as the host's first-login user (often
    root) before this exists; once the base setup installed it, only the admin gets in."""
    return SSHD_CONFIG.format(admin=stack.admin.user)

AUTO_UPGRADES = """\
// Managed by outpost: install security updates every day.
APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
"""


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


def admin_home(stack: Stack) -> str:
    """The admin's home: outpost creates the admin with it (cloud-init, the bootstrap), and the
    bootstrap refuses an existing account whose home is elsewhere."""
    return f"/home/{stack.admin.user}"


def base_manifest(stack: Stack, host: str) -> Manifest:
    admin = stack.admin.user
    home = admin_home(stack)
    sshd = "/etc/ssh/sshd_config.d/10-outpost.conf"
    return Manifest(
        name="base",
        packages=packages_for(stack, host),
        dirs=[Dir("/usr/local/lib/outpost", "0755"), Dir("/var/lib/outpost", "0700")],
        files=[
            File(AGENT_PATH, agent_zipapp(), "0755"),   # bytes: travels base64 (b64: true)
            File(sshd, sshd_config(stack), "0644"),
            File(f"/etc/sudoers.d/90-outpost-{admin}", sudoers(admin), "0440"),
            File(f"{home}/.ssh/authorized_keys", authorized_keys(stack), "0600", admin, admin),
            File("/etc/apt/apt.conf.d/20auto-upgrades", AUTO_UPGRADES, "0644"),
            *firewall.firewall_files(stack, host),
        ],
        units=[Unit(firewall.UNIT)],
        # the staged drop-in itself: plain `sshd -t` would check the live tree, not the new file
        validate=[{"argv": ["/usr/sbin/sshd", "-t", "-f", f"{{staged:{sshd}}}"]}, firewall.validate_step()],
        restart=[{"group": "sshd", "strategy": "reload", "scope": "system", "when": [sshd],
                  "instances": [{"unit": "ssh.service", "health": None}]},
                 firewall.restart_group()],
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
    home = shlex.quote(admin_home(stack))
    keys = shlex.quote(authorized_keys(stack))
    rule = shlex.quote(sudoers(stack.admin.user))
    return "\n".join([
        "set -eu",
        'if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; else SUDO=; fi',
        # A fresh image may have no package lists at all: update them before installing sudo.
        "command -v sudo >/dev/null || { $SUDO apt-get update -q >/dev/null && "
        "DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q sudo >/dev/null; }",
        f"id -u {admin} >/dev/null 2>&1 || $SUDO useradd --create-home --home-dir {home} --shell /bin/bash "
        f"--comment {shlex.quote(ADMIN_MARK)} {admin}",
        # The base setup writes the admin's keys below /home/<admin>: an existing account whose
        # home is elsewhere is not taken over (the home is looked up, not assumed).
        f'actual_home=$(getent passwd {admin} | cut -d: -f6)',
        f'if [ "$actual_home" != {home} ]; then',
        f"  echo \"outpost bootstrap: user {stack.admin.user} exists with home $actual_home, not {home}; "
        "pick another admin.user\" >&2",
        "  exit 1",
        "fi",
        f"$SUDO install -d -m 0700 -o {admin} -g {admin} {home}/.ssh",
        f"printf %s {keys} | $SUDO tee {home}/.ssh/authorized_keys >/dev/null",
        f"$SUDO chown {admin}:{admin} {home}/.ssh/authorized_keys",
        f"$SUDO chmod 0600 {home}/.ssh/authorized_keys",
        f"printf %s {rule} | $SUDO tee /etc/sudoers.d/90-outpost-{admin} >/dev/null",
        f"$SUDO chmod 0440 /etc/sudoers.d/90-outpost-{admin}",
        f"echo 'outpost bootstrap: admin {stack.admin.user} ready'",
    ]) + "\n"
