"""The cached base image of the local VM (tools/vm.py): built once per recipe with debootstrap (no
loop mounts, no bootloader) in ``${XDG_CACHE_HOME:-~/.cache}/outpost/vm/<recipe-hash>/``.

``disk.qcow2`` (the root filesystem, never written by a VM), ``vmlinuz`` and ``initrd.img``
(booted directly by qemu), ``id_ed25519``/``id_ed25519.pub`` (the key root logs in with),
``host_key.pub`` (the image's SSH host key, pinned by every client), ``build.json`` and
``build.log``. The hash covers the package list, the in-image setup script and ``RECIPE_VERSION``,
so a changed recipe builds a new image and an unchanged one is reused. A build happens in a
temporary directory next to the cache and is renamed into place at the end. Needs root
(debootstrap, chroot); `prune` removes the images of other recipes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


# Bump whenever the build steps in this file change what ends up in the image.
RECIPE_VERSION = 1
SUITE = "trixie"
MIRROR = os.environ.get("OUTPOST_VM_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("OUTPOST_VM_SECURITY_MIRROR",
                                 "http://deb.debian.org/debian-security")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DISK_SIZE = "4G"
# Installed with --no-install-recommends: every package the VM needs is named here, because the VM
# has no network and outpost's base setup must find everything already installed.
PACKAGES = [
    "systemd", "systemd-sysv", "udev", "dbus", "libpam-systemd", "systemd-timesyncd",
    "linux-image-amd64", "initramfs-tools", "zstd", "kmod",
    "openssh-server", "sudo", "python3", "curl", "ca-certificates", "netbase", "tzdata",
    "podman", "crun", "conmon", "catatonit", "netavark", "aardvark-dns", "nftables",
    "passt", "slirp4netns", "uidmap", "dbus-user-session",
    "caddy", "haproxy", "nginx",
    "restic", "sqlite3", "unattended-upgrades", "wireguard-tools",
    "iproute2", "iputils-ping", "e2fsprogs", "procps", "less",
]
# Runs inside the debootstrapped tree (chroot) with the package list as arguments.
# MIRROR and SECURITY_MIRROR come from the environment; /root/outpost-build holds the keys.
SETUP_SCRIPT = r"""#!/bin/sh
set -eu
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin
build=/root/outpost-build
apt_install() {
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

# Packages must not start services inside the chroot.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod 0755 /usr/sbin/policy-rc.d

rm -f /etc/apt/sources.list
cat >/etc/apt/sources.list.d/debian.sources <<EOF
Types: deb
URIs: $MIRROR
Suites: trixie trixie-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: trixie-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt-get update -q
apt-get dist-upgrade -y -q

# A small initrd: only what a virtio disk with ext4 needs (faster to load under TCG).
apt_install initramfs-tools zstd
echo MODULES=list >/etc/initramfs-tools/conf.d/outpost-vm.conf
printf '%s\n' virtio_pci virtio_blk ext4 >>/etc/initramfs-tools/modules

apt_install "$@"

echo outpost-vm >/etc/hostname
cat >/etc/hosts <<'EOF'
127.0.0.1	localhost
127.0.1.1	outpost-vm
::1	localhost ip6-localhost ip6-loopback
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
EOF
printf '/dev/vda\t/\text4\tdefaults,errors=remount-ro\t0\t0\n' >/etc/fstab
mkdir -p /etc/systemd/network
cat >/etc/systemd/network/20-outpost-vm.network <<'EOF'
[Match]
Type=ether

[Network]
DHCP=ipv4
IPv6AcceptRA=no
EOF
systemctl enable systemd-networkd.service
printf 'nameserver 10.0.2.3\n' >/etc/resolv.conf

# outpost's base setup enables the proxy a stack configures; none runs by default.
systemctl disable caddy.service haproxy.service nginx.service
# unattended-upgrades.service only guards shutdown, and its python costs ~20 CPU-s per TCG boot.
systemctl disable unattended-upgrades.service
# Generators for hardware this VM has not (GPT autodiscovery, TPM, hibernation, AF_VSOCK ssh).
mkdir -p /etc/systemd/system-generators
for generator in systemd-gpt-auto-generator systemd-tpm2-generator \
        systemd-hibernate-resume-generator systemd-ssh-generator; do
    ln -sf /dev/null "/etc/systemd/system-generators/$generator"
done
# Periodic jobs that only slow a throwaway VM down (disabled, not masked: a stack may enable them).
for unit in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer \
        e2scrub_reap.service fstrim.timer dpkg-db-backup.timer; do
    if [ -e "/usr/lib/systemd/system/$unit" ]; then systemctl disable "$unit"; fi
done

# SSH: one pinned ed25519 host key, root logs in with the build's key only.
rm -f /etc/ssh/ssh_host_*
install -m 0600 "$build/host_key" /etc/ssh/ssh_host_ed25519_key
install -m 0644 "$build/host_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
printf 'HostKey /etc/ssh/ssh_host_ed25519_key\n' >/etc/ssh/sshd_config.d/00-vm-hostkey.conf
install -d -m 0700 /root/.ssh
install -m 0600 "$build/authorized_keys" /root/.ssh/authorized_keys

# Login messages cost seconds per SSH login under TCG (run-parts, a shell per script).
chmod -x /etc/update-motd.d/*

# Rootless podman: useradd allocates subordinate ids when these files exist.
touch /etc/subuid /etc/subgid

# Root's user manager stays up, so an SSH login does not wait for it to start (slow under TCG).
mkdir -p /var/lib/systemd/linger
touch /var/lib/systemd/linger/root
# ldconfig, hwdb and the journal catalog are current: skip the ConditionNeedsUpdate= units at boot.
/usr/lib/systemd/systemd-update-done

# Every boot gets its own machine id (an empty file is not "first boot", so no preset-all).
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id /var/lib/systemd/random-seed

apt-get clean
rm -f /usr/sbin/policy-rc.d
rm -rf "$build" /var/log/apt/* /var/log/*.log /tmp/* /var/tmp/*
"""


class VMError(RuntimeError):
    """A VM could not be built, started or reached; the message is one line for the user."""


def log(message: str) -> None:
    print(f"vm: {message}", file=sys.stderr, flush=True)


def recipe_hash() -> str:
    recipe = {"version": RECIPE_VERSION, "suite": SUITE, "disk_size": DISK_SIZE,
              "packages": PACKAGES, "setup": SETUP_SCRIPT}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "outpost" / "vm"


def image_dir() -> Path:
    return cache_root() / recipe_hash()


def _run(argv: list[str], logfile=None, **kwargs) -> subprocess.CompletedProcess:
    """Run a build command; on failure raise VMError naming it (output is in the build log)."""
    result = subprocess.run(argv, stdout=logfile, stderr=subprocess.STDOUT if logfile else None,
                            **kwargs)
    if result.returncode != 0:
        raise VMError(f"{shlex.join(argv[:3])} ... failed with exit code {result.returncode}")
    return result


def _require(*commands: str) -> None:
    missing = [c for c in commands if shutil.which(c) is None
               and not any(os.access(os.path.join(d, c), os.X_OK) for d in ("/usr/sbin", "/sbin"))]
    if missing:
        raise VMError(f"missing host commands: {' '.join(missing)} (install debootstrap, "
                      "qemu-system-x86, qemu-utils, e2fsprogs, openssh-client)")


def build(force: bool = False) -> Path:
    """Return the cached image directory for the current recipe, building it if needed."""
    final = image_dir()
    if (final / "build.json").exists() and not force:
        return final
    if os.geteuid() != 0:
        raise VMError("building the image needs root (debootstrap and chroot)")
    _require("debootstrap", "unshare", "chroot", "mkfs.ext4", "qemu-img", "ssh-keygen")
    if not Path(KEYRING).exists():
        raise VMError(f"{KEYRING} is missing: install debian-archive-keyring")
    final.parent.mkdir(parents=True, exist_ok=True)
    # One builder per recipe at a time; a second one waits and then reuses the result.
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "build.json").exists() and not force:
            return final
        for stale in final.parent.glob(f".build-{final.name}-*"):
            subprocess.run(["rm", "-rf", "--one-file-system", str(stale)], check=False)
        work = Path(tempfile.mkdtemp(prefix=f".build-{final.name}-", dir=final.parent))
        try:
            try:
                _build_into(work)
            except BaseException:
                failed_log = final.parent / f"{final.name}.failed-build.log"
                with contextlib.suppress(OSError):
                    shutil.copy(work / "build.log", failed_log)
                    log(f"build log kept in {failed_log}")
                raise
            if final.exists():
                subprocess.run(["rm", "-rf", "--one-file-system", str(final)], check=True)
            os.chmod(work, 0o755)
            os.rename(work, final)
        finally:
            if work.exists():
                subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
    log(f"image ready: {final}")
    return final


def prune() -> list[Path]:
    """Remove cached images of other recipes (a running VM keeps its open image until it stops)."""
    current = image_dir()
    removed = []
    for entry in sorted(cache_root().glob("*")):
        if entry.is_dir() and entry != current and (entry / "build.json").exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(entry)], check=True)
            removed.append(entry)
    return removed


def _build_into(work: Path) -> None:
    rootfs = work / "rootfs"
    timings: dict[str, float] = {}
    started_all = time.monotonic()
    with open(work / "build.log", "w") as logfile:

        @contextlib.contextmanager
        def step(name: str):
            started = time.monotonic()
            log(f"{name} ...")
            try:
                yield
            except VMError as error:
                logfile.flush()
                tail = (work / "build.log").read_text(errors="replace").splitlines()[-40:]
                print("\n".join(tail), file=sys.stderr)
                raise VMError(f"{name} failed ({error})") from None
            timings[name] = round(time.monotonic() - started, 1)
            log(f"{name}: {timings[name]}s")

        with step("debootstrap"):
            # A private mount namespace: debootstrap's /proc and /sys mounts vanish with it.
            _run(["unshare", "--mount", "--propagation", "private", "debootstrap",
                  "--variant=minbase", f"--keyring={KEYRING}", SUITE, str(rootfs), MIRROR],
                 logfile)

        with step("keys"):
            for name in ("host_key", "id_ed25519"):
                _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"outpost-vm-{name}",
                      "-f", str(work / name)], logfile)
            os.chmod(work / "id_ed25519", 0o600)
            keys = rootfs / "root" / "outpost-build"
            keys.mkdir(mode=0o700)
            shutil.copy(work / "host_key", keys / "host_key")
            shutil.copy(work / "host_key.pub", keys / "host_key.pub")
            shutil.copy(work / "id_ed25519.pub", keys / "authorized_keys")

        with step("configure (chroot: packages, services, ssh)"):
            script = rootfs / "root" / "outpost-setup.sh"
            script.write_text(SETUP_SCRIPT)
            r = shlex.quote(str(rootfs))
            inner = (f"mount -t proc proc {r}/proc && mount -t sysfs sysfs {r}/sys && "
                     f"mount --bind /dev {r}/dev && mount -t devpts devpts {r}/dev/pts && "
                     f"exec chroot {r} /bin/sh /root/outpost-setup.sh \"$@\"")
            env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8",
                   "MIRROR": MIRROR, "SECURITY_MIRROR": SECURITY_MIRROR}
            _run(["unshare", "--mount", "--propagation", "private",
                  "sh", "-c", inner, "setup", *PACKAGES], logfile, env=env)
            script.unlink()

        with step("kernel and initrd"):
            for pattern, name in (("vmlinuz-*", "vmlinuz"), ("initrd.img-*", "initrd.img")):
                found = sorted((rootfs / "boot").glob(pattern))
                if len(found) != 1:
                    raise VMError(f"expected one /boot/{pattern} in the image, found {len(found)}")
                shutil.copy(found[0], work / name)

        with step("mkfs.ext4 -d"):
            _run(["mkfs.ext4", "-q", "-F", "-L", "outpost-root", "-d", str(rootfs),
                  str(work / "disk.raw"), DISK_SIZE], logfile)
            subprocess.run(["rm", "-rf", "--one-file-system", str(rootfs)], check=True)

        with step("qcow2"):
            _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(work / "disk.raw"),
                  str(work / "disk.qcow2")], logfile)
            (work / "disk.raw").unlink()
            os.chmod(work / "disk.qcow2", 0o444)

    timings["total"] = round(time.monotonic() - started_all, 1)
    (work / "build.json").write_text(json.dumps({
        "recipe_hash": recipe_hash(), "recipe_version": RECIPE_VERSION, "suite": SUITE,
        "packages": PACKAGES, "disk_size": DISK_SIZE,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "timings_s": timings, "image_bytes": (work / "disk.qcow2").stat().st_size,
    }, indent=2) + "\n")
    size_mib = (work / "disk.qcow2").stat().st_size >> 20
    log(f"build total: {timings['total']}s, disk.qcow2 {size_mib} MiB")
