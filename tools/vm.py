#!/usr/bin/env python3
"""The local throwaway Debian 13 VM that outpost's end-to-end tests and `make up` deploy to.

What it creates:

* A cached base image, built once per recipe with debootstrap (no loop mounts, no bootloader), in
  ``${XDG_CACHE_HOME:-~/.cache}/outpost/vm/<recipe-hash>/``:
  ``disk.qcow2`` (the root filesystem, never written by a VM), ``vmlinuz`` and ``initrd.img``
  (booted directly by qemu), ``id_ed25519``/``id_ed25519.pub`` (the key root logs in with),
  ``host_key.pub`` (the image's SSH host key, pinned by every client), ``build.json`` and
  ``build.log``. The hash covers the package list, the in-image setup script and
  ``RECIPE_VERSION``, so a changed recipe builds a new image and an unchanged one is reused. A build
  happens in a temporary directory next to the cache and is renamed into place at the end.
  ``.../outpost/vm/kvm-probe.json`` remembers whether KVM really runs guests on this host (nested
  KVM often does not; qemu then uses TCG).
* Per running VM, in a state directory (default ``.vm``): ``overlay.qcow2`` (a fresh copy-on-write
  layer over the cached image, so every start is a clean machine), ``console.log`` (serial
  console), ``known_hosts`` (the pinned host key), ``qemu.pid`` and ``vm.json`` (ports, pid, keys);
  with ``multiplex=True``, SSH master sockets in ``$TMPDIR/outpost-vm-ssh-<hash>/``.

The VM uses qemu user-mode networking with ``restrict=on``: no traffic leaves it except through the
forwards, which bind 127.0.0.1 only (ssh, http, https) and one guest forward
(10.0.2.100:9000 inside the VM -> 127.0.0.1:GUESTFWD on the host).

CLI: ``python tools/vm.py build|start|stop|status|ssh|prune``. Library::

    from tools.vm import VM
    with VM.start(state_dir=".vm", guestfwd_port=8080) as vm:
        vm.ssh("systemctl is-system-running --wait")
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import selectors
import signal
import socket
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
# mitigations=off: speculative-execution mitigations only cost time in an emulated CPU.
KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 quiet mitigations=off"
GUESTFWD_ADDR = "10.0.2.100:9000"
DEFAULT_BOOT_TIMEOUT = float(os.environ.get("OUTPOST_VM_BOOT_TIMEOUT", "300"))

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


# ---------------------------------------------------------------------------------------------
# Running VMs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    """True while pid is a live (not zombie) qemu process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and b"qemu-system" in cmdline


def kvm_works(kernel: Path) -> bool:
    """Boot the kernel under KVM until it panics for lack of a root fs: proves KVM runs guest code.

    Nested KVM here opens /dev/kvm fine and then fails on the first instructions ("KVM internal
    error"), so only running a guest tells. OUTPOST_VM_ACCEL=kvm|tcg skips the probe.
    """
    forced = os.environ.get("OUTPOST_VM_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced == "kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    # The answer is kept per host kernel: probing costs up to 15 s when KVM is broken.
    remembered = cache_root() / "kvm-probe.json"
    host = " ".join(os.uname()[2:4])
    with contextlib.suppress(OSError, ValueError, KeyError):
        return json.loads(remembered.read_text())[host]
    argv = ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults",
            "-display", "none", "-no-reboot", "-serial", "stdio", "-kernel", str(kernel),
            "-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"]
    works = False
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as qemu:
        selector = selectors.DefaultSelector()
        selector.register(qemu.stdout, selectors.EVENT_READ)
        output, deadline = b"", time.monotonic() + 15
        while time.monotonic() < deadline:
            if not selector.select(timeout=1):
                continue
            chunk = os.read(qemu.stdout.fileno(), 65536)
            output += chunk
            if b"Kernel panic" in output:
                works = True
            failed = b"KVM internal error" in output or b"emulation failure" in output
            if not chunk or works or failed:
                break
        qemu.kill()
    remembered.parent.mkdir(parents=True, exist_ok=True)
    remembered.write_text(json.dumps({host: works}) + "\n")
    return works


class VM:
    """A running VM described by its state directory's vm.json."""

    def __init__(self, state_dir: str | os.PathLike, info: dict):
        self.state_dir = Path(state_dir).resolve()
        self.info = info
        self.pid: int = info["pid"]
        self.ssh_port: int = info["ssh_port"]
        self.http_port: int = info["http_port"]
        self.https_port: int = info["https_port"]
        self.guestfwd_port: int | None = info.get("guestfwd_port")
        self.host_key: str = info["host_key"]
        self.private_key_path: str = info["private_key_path"]
        self.public_key: str = info["public_key"]
        self.user: str = info["user"]
        self.known_hosts_path = self.state_dir / "known_hosts"

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    def start(cls, state_dir: str | os.PathLike = ".vm", *, ssh_port: int | None = None,
              http_port: int | None = None, https_port: int | None = None,
              guestfwd_port: int | None = None, memory: int = 2048,
              timeout: float = DEFAULT_BOOT_TIMEOUT,
              link: tuple[int, int, str] | None = None) -> "VM":
        """Boot a clean VM from the cached image (building it first if needed); wait for SSH.

        `link=(local_udp_port, peer_udp_port, mac)` adds a second NIC joined to another VM's
        by a point-to-point UDP tunnel on 127.0.0.1 (qemu's socket netdev): a private wire
        between two test hosts that never leaves loopback."""
        _require("qemu-system-x86_64", "qemu-img", "ssh", *(["socat"] if guestfwd_port else []))
        image = build()
        state = Path(state_dir).resolve()
        state.mkdir(parents=True, exist_ok=True)
        existing = cls.attach(state)
        if existing is not None:
            raise VMError(f"a VM is already running from {state} (pid {existing.pid}); "
                          "stop it first")
        for stale in ("vm.json", "qemu.pid", "overlay.qcow2", "known_hosts"):
            (state / stale).unlink(missing_ok=True)

        ports = {"ssh_port": ssh_port or free_port(), "http_port": http_port or free_port(),
                 "https_port": https_port or free_port()}
        host_key = " ".join((image / "host_key.pub").read_text().split()[:2])
        (state / "known_hosts").write_text(f"[127.0.0.1]:{ports['ssh_port']} {host_key}\n")

        overlay = state / "overlay.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                        "-b", str(image / "disk.qcow2"), str(overlay)], check=True)
        accel = ["-accel", "kvm", "-cpu", "host"] if kvm_works(image / "vmlinuz") \
            else ["-accel", "tcg", "-cpu", "max"]
        forwards = (f"hostfwd=tcp:127.0.0.1:{ports['ssh_port']}-:22,"
                    f"hostfwd=tcp:127.0.0.1:{ports['http_port']}-:80,"
                    f"hostfwd=tcp:127.0.0.1:{ports['https_port']}-:443")
        if guestfwd_port:
            # cmd: is spawned once per connection (a tcp: chardev connects once at boot and then
            # serves a single connection), so every request from the guest reaches the host port.
            forwards += f",guestfwd=tcp:{GUESTFWD_ADDR}-cmd:socat STDIO TCP:127.0.0.1:{int(guestfwd_port)}"
        argv = ["qemu-system-x86_64", "-name", "outpost-vm", "-machine", "q35", *accel,
                "-smp", "2", "-m", str(int(memory)), "-nodefaults", "-display", "none",
                "-serial", f"file:{state / 'console.log'}",
                "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
                "-append", KERNEL_CMDLINE,
                "-drive", f"file={overlay},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
                "-netdev", f"user,id=n0,restrict=on,{forwards}",
                "-device", "virtio-net-pci,netdev=n0", "-device", "virtio-rng-pci",
                "-daemonize", "-pidfile", str(state / "qemu.pid")]
        if link:
            local, peer, mac = link
            argv[-3:-3] = ["-netdev", f"socket,id=n1,udp=127.0.0.1:{int(peer)},localaddr=127.0.0.1:{int(local)}",
                           "-device", f"virtio-net-pci,netdev=n1,mac={mac}"]
        log(f"booting ({accel[1]}), console: {state / 'console.log'}")
        started = time.monotonic()
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=60)
        if result.returncode != 0:
            raise VMError(f"qemu failed to start: {result.stderr.strip().splitlines()[-1:]}")
        info = {"pid": int((state / "qemu.pid").read_text().strip()), **ports,
                "guestfwd_port": guestfwd_port, "host_key": host_key,
                "private_key_path": str(image / "id_ed25519"),
                "public_key": (image / "id_ed25519.pub").read_text().strip(),
                "user": "root", "image": str(image / "disk.qcow2"), "accel": accel[1]}
        (state / "vm.json").write_text(json.dumps(info, indent=2) + "\n")
        vm = cls(state, info)
        try:
            vm.wait_for_ssh(timeout)
        except BaseException:
            vm.kill()
            raise
        info["boot_seconds"] = round(time.monotonic() - started, 1)
        (state / "vm.json").write_text(json.dumps(info, indent=2) + "\n")
        log(f"ssh answers after {info['boot_seconds']}s on 127.0.0.1:{vm.ssh_port}")
        return vm

    @classmethod
    def attach(cls, state_dir: str | os.PathLike = ".vm") -> "VM | None":
        """The VM running from state_dir, or None."""
        path = Path(state_dir) / "vm.json"
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return cls(state_dir, info) if _alive(info.get("pid", -1)) else None

    def wait_for_ssh(self, timeout: float = DEFAULT_BOOT_TIMEOUT) -> None:
        """Poll gently: one connection at a time, a full login only once sshd sends its banner
        (every aborted login would cost the slow guest CPU, and sshd drops excess ones)."""
        deadline = time.monotonic() + timeout
        while True:
            if not _alive(self.pid):
                self._print_console()
                raise VMError("qemu exited before SSH answered (console above)")
            left = deadline - time.monotonic()
            if left <= 0:
                self._print_console()
                raise VMError(f"SSH did not answer within {timeout:.0f}s (console above)")
            if self._ssh_banner(min(left, 60)):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    if self.ssh("true", check=False, timeout=max(left, 30),
                                connect_timeout=60).returncode == 0:
                        return
            time.sleep(2)

    def _ssh_banner(self, timeout: float) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.ssh_port), timeout=timeout) as conn:
                return conn.recv(64).startswith(b"SSH-")
        except OSError:
            return False

    def stop(self, timeout: float = 15) -> None:
        """Power off (over SSH, bounded), then kill qemu; remove the overlay."""
        if _alive(self.pid):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.ssh("systemctl poweroff", check=False, timeout=10, connect_timeout=5)
            deadline = time.monotonic() + timeout
            while _alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.5)
        self.kill()

    def kill(self) -> None:
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if not _alive(self.pid):
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            deadline = time.monotonic() + wait
            while _alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
        for name in ("overlay.qcow2", "qemu.pid", "vm.json"):
            (self.state_dir / name).unlink(missing_ok=True)
        # Multiplexed masters exit when their connection drops with qemu; remove their sockets.
        shutil.rmtree(self.control_dir, ignore_errors=True)

    def __enter__(self) -> "VM":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- commands ---------------------------------------------------------------------------

    @property
    def control_dir(self) -> Path:
        """Where multiplexed SSH masters keep their sockets (short: unix socket paths are)."""
        digest = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"outpost-vm-ssh-{digest}"

    def ssh_argv(self, connect_timeout: int = 10, multiplex: bool = False) -> list[str]:
        """ssh's argv up to and including the destination (host key pinned, key only, batch).

        Every call is a new SSH connection unless multiplex=True, which reuses one master
        connection per user (much faster under TCG; but a reused connection skips the host-key
        check and sshd's current auth settings, so never use it to test those).
        """
        argv = ["ssh", "-F", "none", "-i", self.private_key_path, "-o", "IdentitiesOnly=yes",
                "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts_path}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "HostKeyAlgorithms=ssh-ed25519",
                "-o", "KexAlgorithms=curve25519-sha256,curve25519-sha256@libssh.org",
                "-o", f"ConnectTimeout={connect_timeout}", "-o", "LogLevel=ERROR"]
        if multiplex:
            self.control_dir.mkdir(mode=0o700, exist_ok=True)
            argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={self.control_dir}/%C",
                     "-o", "ControlPersist=60"]
        return [*argv, "-p", str(self.ssh_port), f"{self.user}@127.0.0.1"]

    def ssh(self, command: str, input: bytes | None = None, check: bool = True,
            timeout: float | None = 600, connect_timeout: int = 10,
            multiplex: bool = False) -> subprocess.CompletedProcess:
        """Run a shell command line in the VM as root; capture stdout/stderr as bytes."""
        argv = [*self.ssh_argv(connect_timeout, multiplex), "--", command]
        result = subprocess.run(argv, input=input,
                                stdin=None if input is not None else subprocess.DEVNULL,
                                capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, command, result.stdout,
                                                result.stderr)
        return result

    def _print_console(self, lines: int = 60) -> None:
        path = self.state_dir / "console.log"
        text = path.read_text(errors="replace") if path.exists() else "(no console.log)"
        print(f"--- last {lines} lines of {path} ---", file=sys.stderr)
        print("\n".join(text.splitlines()[-lines:]), file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vm.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build (or reuse) the cached image")
    p_build.add_argument("--force", action="store_true", help="rebuild even if cached")
    sub.add_parser("prune", help="remove cached images of other recipes")
    p_start = sub.add_parser("start", help="boot a clean VM and wait for SSH")
    p_start.add_argument("--state-dir", default=".vm")
    for name in ("ssh", "http", "https", "guestfwd"):
        p_start.add_argument(f"--{name}-port", type=int)
    p_start.add_argument("--memory", type=int, default=2048, help="MiB")
    p_start.add_argument("--timeout", type=float, default=DEFAULT_BOOT_TIMEOUT)
    for name, text in (("stop", "power off and remove the overlay"),
                       ("status", "print vm.json if running"),
                       ("ssh", "ssh into the VM (or run a command)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--state-dir", default=".vm")
        if name == "ssh":
            p.add_argument("remote", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    try:
        if args.command == "build":
            print(build(force=args.force))
        elif args.command == "prune":
            for path in prune():
                print(f"removed {path}")
        elif args.command == "start":
            vm = VM.start(args.state_dir, ssh_port=args.ssh_port, http_port=args.http_port,
                          https_port=args.https_port, guestfwd_port=args.guestfwd_port,
                          memory=args.memory, timeout=args.timeout)
            print((vm.state_dir / "vm.json").read_text(), end="")
            print(f"ssh: python tools/vm.py ssh --state-dir {shlex.quote(str(args.state_dir))}")
        elif args.command == "stop":
            vm = VM.attach(args.state_dir)
            if vm is None:
                log(f"no VM running from {args.state_dir}")
            else:
                vm.stop()
                log("stopped")
        elif args.command == "status":
            vm = VM.attach(args.state_dir)
            if vm is None:
                print(f"not running ({args.state_dir})")
                return 1
            print((vm.state_dir / "vm.json").read_text(), end="")
        elif args.command == "ssh":
            vm = VM.attach(args.state_dir)
            if vm is None:
                raise VMError(f"no VM running from {args.state_dir}")
            argv = vm.ssh_argv()
            if not args.remote:
                argv.insert(1, "-t")
            os.execvp("ssh", [*argv, *args.remote])
    except VMError as error:
        log(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
