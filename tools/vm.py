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

The image itself is built by tools/vm_image.py (the recipe, debootstrap); this module runs VMs
from it. CLI: ``python tools/vm.py build|start|stop|status|ssh|prune``. Library::

    from tools.vm import VM
    with VM.start(state_dir=".vm", guestfwd_port=8080) as vm:
        vm.ssh("systemctl is-system-running --wait")
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):   # run as a script (python tools/vm.py ...): the repository on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.vm_image import VMError, _require, build, cache_root, log, prune  # noqa: E402

__all__ = ["VM", "VMError", "build", "free_port", "kvm_works", "main", "prune"]


# mitigations=off: speculative-execution mitigations only cost time in an emulated CPU.
KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 quiet mitigations=off"
GUESTFWD_ADDR = "10.0.2.100:9000"
DEFAULT_BOOT_TIMEOUT = float(os.environ.get("OUTPOST_VM_BOOT_TIMEOUT", "300"))


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
