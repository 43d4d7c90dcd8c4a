"""The base setup's sshd drop-in and host firewall: the admin alone may log in, with no forwarding
or tunnels; static hosts filter inbound traffic like a Hetzner cloud firewall; no host lets a
non-root process (or a container) reach the cloud metadata address. tests/validators checks the
same files with the real `nft -c` and `sshd -t`."""

from __future__ import annotations

import copy

import pytest
import yaml

from components.load import load_file, parse
from components.hosts import firewall_rules
from components.render.base import base_manifest
from components.render.firewall import RULESET_PATH, UNIT, UNIT_PATH, ruleset
from tests.conftest import ROOT, STACKS


def files(stack, host):
    return {f.path: f for f in base_manifest(stack, host).files}


@pytest.mark.parametrize("name", STACKS)
def test_sshd_lets_the_admin_alone_in_without_forwarding(name):
    stack = load_file(ROOT / f"Pulumi.{name}.yaml")
    for host in stack.hosts:
        lines = files(stack, host)["/etc/ssh/sshd_config.d/10-outpost.conf"].content.splitlines()
        for setting in (f"AllowUsers {stack.admin.user}", "PermitRootLogin no", "AllowTcpForwarding no",
                        "AllowAgentForwarding no", "AllowStreamLocalForwarding no", "PermitTunnel no",
                        "X11Forwarding no", "PasswordAuthentication no"):
            assert setting in lines, setting


def test_static_host_inbound_matches_the_hetzner_firewall():
    """prod has hcloud hosts (web1, web2) and a static one (vps1) on the same mesh: the static
    host's input chain accepts what the Hetzner rules would, computed the same way."""
    stack = load_file(ROOT / "Pulumi.prod.yaml")
    text = ruleset(stack, "vps1")
    assert "policy drop;" in text
    assert 'ip saddr { 0.0.0.0/0 } tcp dport 22 accept' in text and 'ip6 saddr { ::/0 } tcp dport 22 accept' in text
    assert 'udp dport 51820 accept comment "wireguard mesh"' in text
    assert "dport { 80, 443 }" not in text            # vps1 serves no route
    hetzner = {(r.protocol, r.port) for r in firewall_rules(stack, "web1")}
    assert hetzner == {("tcp", "22"), ("tcp", "80"), ("tcp", "443"), ("udp", "443"), ("udp", "51820")}


def test_a_routed_static_host_opens_80_and_443_and_only_ssh_sources_reach_22():
    stack = load_file(ROOT / "Pulumi.local.yaml")
    text = ruleset(stack, "vm")
    assert 'tcp dport { 80, 443 } accept comment "proxy"' in text and 'udp dport 443 accept' in text
    assert 'ip saddr { 127.0.0.1/32, 10.0.2.2/32 } tcp dport 22 accept comment "ssh"' in text
    assert "ip6 saddr" not in text                     # no IPv6 source may reach 22
    config = yaml.safe_load((ROOT / "Pulumi.local.yaml").read_text())["config"]
    narrow = copy.deepcopy(config)
    narrow["outpost:admin"]["ssh_sources"] = ["198.51.100.0/24", "2001:db8::/32"]
    text = ruleset(parse(narrow, "local"), "vm")
    assert 'ip saddr { 198.51.100.0/24 } tcp dport 22' in text and 'ip6 saddr { 2001:db8::/32 } tcp dport 22' in text


@pytest.mark.parametrize("name", STACKS)
def test_every_host_keeps_non_root_processes_and_containers_from_the_metadata_address(name):
    stack = load_file(ROOT / f"Pulumi.{name}.yaml")
    for host, cfg in stack.hosts.items():
        text = ruleset(stack, host)
        assert "ip daddr 169.254.169.254 meta skuid != 0 counter reject" in text
        assert "hook forward" in text and "ip daddr 169.254.169.254 reject" in text
        assert ("hook input" in text) == (cfg.provider == "static")   # hcloud: the cloud firewall filters inbound


def test_the_firewall_is_a_file_and_a_unit_the_base_setup_starts_and_reloads():
    stack = load_file(ROOT / "Pulumi.prod.yaml")
    m = base_manifest(stack, "vps1")
    f = files(stack, "vps1")
    assert RULESET_PATH in f and UNIT_PATH in f and "nftables" in m.packages
    assert [u.unit for u in m.units] == [UNIT]
    assert {"argv": ["/usr/sbin/nft", "-c", "-f", f"{{staged:{RULESET_PATH}}}"]} in m.validate
    [group] = [g for g in m.restart if g["group"] == "firewall"]
    assert group["strategy"] == "reload" and set(group["when"]) == {RULESET_PATH, UNIT_PATH}
    text = f[RULESET_PATH].content
    # one transaction replaces the table: declared (so delete never fails), deleted, defined
    assert text.splitlines()[1:4] == ["table inet outpost", "delete table inet outpost", "table inet outpost {"]
