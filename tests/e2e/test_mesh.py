"""A WireGuard mesh between two real hosts, deployed by the real `pulumi up`: two VMs joined by a
private wire (qemu's UDP socket netdev on 127.0.0.1), each a static host; traffic between their
mesh addresses is measured, and shown to go through the tunnel."""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.report import record
from tools.pulumi_cli import StackCli
from tools.vm import VM, free_port

LINK = {"a": ("192.168.77.1", "52:54:00:77:00:01", "10.99.0.1"),
        "b": ("192.168.77.2", "52:54:00:77:00:02", "10.99.0.2")}


def boot_pair(tmp_path):
    """Two VMs wired together; booted one after the other (an idle VM costs little CPU, two
    booting at once under TCG on two cores take twice as long each)."""
    port_a, port_b = free_port(), free_port()
    links = {"a": (port_a, port_b, LINK["a"][1]), "b": (port_b, port_a, LINK["b"][1])}
    vms: dict[str, VM] = {}
    try:
        for name, link in links.items():
            vms[name] = VM.start(state_dir=tmp_path / name, link=link, timeout=600)
    except BaseException:
        for vm in vms.values():
            vm.kill()
        raise
    return vms


def mesh_config(vms: dict[str, VM]) -> tuple[dict, dict[str, str]]:
    """The stack's config and its secrets' values."""
    any_vm = next(iter(vms.values()))
    key = open(any_vm.private_key_path).read()
    return {
        "outpost:admin": {"user": "admin", "ssh_keys": [any_vm.public_key], "ssh_sources": ["127.0.0.1/32", "10.0.2.2/32"],
                          "private_key": "deploy_key"},
        "outpost:networks": {"mesh": {"kind": "wireguard", "ip_range": "10.99.0.0/24", "port": 51820}},
        "outpost:hosts": {name: {"provider": "static", "address": LINK[name][0], "ssh_address": "127.0.0.1",
                                 "port": vm.ssh_port, "host_key": vm.host_key,
                                 "networks": {"mesh": LINK[name][2]}} for name, vm in vms.items()},
        "outpost:secrets": {"deploy_key": None},
    }, {"deploy_key": key}


@pytest.mark.mesh
def test_wireguard_mesh_passes_traffic(tmp_path):
    started = time.monotonic()
    vms = boot_pair(tmp_path)
    try:
        for name, vm in vms.items():
            address, mac, _ = LINK[name]
            vm.ssh(f"printf '[Match]\\nMACAddress={mac}\\n\\n[Network]\\nAddress={address}/24\\n' "
                   f"> /etc/systemd/network/10-link.network && networkctl reload && sleep 2")
        record("mesh: boot two VMs", time.monotonic() - started)

        stack = StackCli("mesh", tmp_path / "pulumi")
        stack.lay(*mesh_config(vms))
        deployed = time.monotonic()
        steps = stack.up(timeout=1800).steps
        assert sorted(s.name for s in steps if s.name.endswith("net-mesh")) == ["a-net-mesh", "b-net-mesh"]
        record("mesh: deploy base + WireGuard", time.monotonic() - deployed, f"{len(steps)} commands")

        a, b = vms["a"], vms["b"]
        # Root logins are refused now; the admin logs in with the same key.
        a.user = b.user = "admin"
        ping = a.ssh("sudo ping -c 5 -i 0.5 -W 3 10.99.0.2", timeout=60).stdout.decode()
        loss = re.search(r"(\d+)% packet loss", ping).group(1)
        rtt = re.search(r"= [\d.]+/([\d.]+)/", ping).group(1)
        assert loss == "0", ping

        # The server runs as its own unit (an SSH session's background child may not outlive it),
        # and curl retries until it listens: no guessed sleep.
        b.ssh("head -c 4000000 /dev/urandom > /tmp/blob && sha256sum /tmp/blob > /tmp/blob.sum && "
              "sudo systemd-run --quiet --unit outpost-mesh-http -p RuntimeMaxSec=180 "
              "python3 -m http.server --bind 10.99.0.2 8099 --directory /tmp")
        got = a.ssh("curl -fsS --retry 30 --retry-delay 1 --retry-connrefused -o /tmp/blob "
                    "-w '%{size_download} %{speed_download}\\n' http://10.99.0.2:8099/blob "
                    "&& sha256sum /tmp/blob", timeout=180).stdout.decode().split()
        size, speed, digest = int(got[0]), float(got[1]), got[2]
        assert size == 4000000
        assert digest == b.ssh("cat /tmp/blob.sum").stdout.decode().split()[0]
        # Through the tunnel: the peer handshook and WireGuard counted the bytes.
        transfer = a.ssh("sudo wg show wg-mesh transfer").stdout.decode().split()
        assert int(transfer[1]) > size, transfer          # bytes received from b
        handshake = a.ssh("sudo wg show wg-mesh latest-handshakes").stdout.decode().split()
        assert int(handshake[1]) > 0
        record("mesh: traffic a → b over WireGuard", 0,
               f"ping 0% loss, avg rtt {rtt} ms; 4 MB in {size / speed:.1f} s ({speed / 1e6:.2f} MB/s, TCG)")
        print(f"wireguard: rtt {rtt} ms, {speed / 1e6:.2f} MB/s")
    finally:
        for vm in vms.values():
            vm.kill()
