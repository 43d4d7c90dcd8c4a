"""The local VM (tools/vm.py) boots the cached Debian 13 image and is what the e2e tests expect.

Runs first on the session's shared VM (tests/conftest.py; the image is built first if it is not
cached), checks SSH with the pinned host key, the image's content, that `restrict=on` keeps the VM
offline except for the guest forward, and that rootless podman runs a container without any
registry.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import HOST_PAGE
from tools.vm import VM


@pytest.fixture(scope="module")
def vm(shared_vm):
    return shared_vm


def text(result: subprocess.CompletedProcess) -> str:
    return result.stdout.decode().strip()


def run(vm: VM, command: str, **kwargs) -> subprocess.CompletedProcess:
    """A command over one multiplexed connection: the checks below are not about SSH itself."""
    return vm.ssh(command, multiplex=True, **kwargs)


def test_ssh_answers_with_the_pinned_host_key(vm):
    assert text(vm.ssh("hostname")) == "outpost-vm"
    assert text(vm.ssh("id -un")) == "root"
    assert vm.host_key.startswith("ssh-ed25519 AAAA")
    assert vm.known_hosts_path.read_text().split()[1:] == vm.host_key.split()


def test_a_wrong_pinned_host_key_is_refused(vm, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
                   check=True)
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{vm.ssh_port} {other}\n")
    argv = [f"UserKnownHostsFile={wrong}" if a.startswith("UserKnownHostsFile=") else a
            for a in vm.ssh_argv()]
    argv[argv.index("LogLevel=ERROR")] = "LogLevel=INFO"
    result = subprocess.run([*argv, "true"], capture_output=True, timeout=60)
    assert result.returncode == 255
    assert b"Host key verification failed" in result.stderr


def test_system_is_running_without_failed_units(vm):
    state = text(run(vm, "systemctl is-system-running --wait", check=False, timeout=180))
    failed = text(run(vm, "systemctl --failed --no-legend --plain", check=False))
    if state != "running":
        print(f"system is {state}; failed units:\n{failed}")
    assert state == "running", f"{state}; failed units:\n{failed}"


def test_podman_is_5(vm):
    assert re.fullmatch(r"podman version 5\.\d+\.\d+", text(run(vm, "podman --version")))


@pytest.mark.parametrize("command, unit", [
    ("caddy version", "caddy"), ("haproxy -v", "haproxy"), ("nginx -v 2>&1", "nginx")])
def test_proxies_are_installed_but_not_running(vm, command, unit):
    assert text(run(vm, command))
    assert text(run(vm, f"systemctl is-enabled {unit}", check=False)) == "disabled"
    assert text(run(vm, f"systemctl is-active {unit}", check=False)) == "inactive"


def test_tools_outpost_installs_are_present(vm):
    for tool in ("restic version", "sqlite3 --version", "wg --version", "python3 --version",
                 "sudo --version", "pasta --version", "newuidmap --help >/dev/null 2>&1; true",
                 "unattended-upgrade --help"):
        run(vm, tool)
    assert text(run(vm, "grep -w localhost /etc/hosts"))


def test_restrict_keeps_the_vm_offline_except_the_guest_forward(vm, host_page_port):
    outside = run(vm, "curl -sS -m 5 http://deb.debian.org/", check=False, timeout=60)
    assert outside.returncode != 0, outside.stdout
    # The host itself (qemu's gateway) is unreachable too, even on the port guestfwd targets.
    host = run(vm, f"curl -sS -m 5 http://10.0.2.2:{host_page_port}/", check=False, timeout=60)
    assert host.returncode != 0, host.stdout
    # Every connection is forwarded, not only the first (restic and litestream open many).
    for _ in range(3):
        assert run(vm, "curl -sS -m 10 http://10.0.2.100:9000/", timeout=60).stdout == HOST_PAGE


# Rootless podman in this image is proven by tests/e2e/test_local_stack.py, which builds the demo
# image from the VM's own python3 with `podman import` and serves it from two rootless replicas.
