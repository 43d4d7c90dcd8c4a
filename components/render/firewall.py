"""The host firewall outpost puts on every host: one nftables table, `inet outpost`, loaded by
`outpost-firewall.service` from `/etc/outpost/firewall.nft`.

Pure: `firewall_files(stack, host)` returns the ruleset and its unit.

* Static hosts get the inbound filter a Hetzner server gets from its cloud firewall
  (`hosts.firewall_rules`): 22 from `admin.ssh_sources`, 80/443 (and UDP 443, HTTP/3) where the
  host serves routes, each WireGuard network's port where it is meshed; everything else new is
  dropped. Like Hetzner's, it filters what arrives from outside only: loopback, the WireGuard
  interfaces and podman's bridges (local containers) pass, and so do replies and ICMP (IPv6 needs
  neighbour discovery). Hetzner servers keep the cloud firewall alone.
* Every host: no process but root's may reach the cloud metadata address 169.254.169.254 (it hands
  out the server's user data, which holds its SSH host key), and no container traffic forwarded
  by the host may either.

The file replaces the table in one transaction (`nft -f`: declare, delete, define), so a reload
never leaves the host without rules, and other tables (podman's, Debian's nftables.service) are
left alone. Validated on the host with `nft -c -f` on the staged copy before it is committed.
"""

from __future__ import annotations

import ipaddress

from ..config.model import Stack
from .manifest import File
from .mesh import interface

RULESET_PATH = "/etc/outpost/firewall.nft"
UNIT = "outpost-firewall.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
NFT = "/usr/sbin/nft"
TABLE = "inet outpost"
METADATA_V4 = "169.254.169.254"


def inbound_rules(stack: Stack, host: str) -> list[str]:
    """The `input` chain's accept rules of a static host (after the common ones)."""
    sources = [ipaddress.ip_network(s) for s in stack.admin.ssh_sources]
    v4 = [str(n) for n in sources if n.version == 4]
    v6 = [str(n) for n in sources if n.version == 6]
    rules = []
    if v4:
        rules.append(f"ip saddr {{ {', '.join(v4)} }} tcp dport 22 accept comment \"ssh\"")
    if v6:
        rules.append(f"ip6 saddr {{ {', '.join(v6)} }} tcp dport 22 accept comment \"ssh\"")
    if host in stack.routed_hosts():
        rules.append('tcp dport { 80, 443 } accept comment "proxy"')
        rules.append('udp dport 443 accept comment "http3"')
    for net_name in sorted(stack.hosts[host].networks):
        net = stack.networks.get(net_name)
        if net is not None and net.kind == "wireguard":
            rules.append(f'udp dport {net.port} accept comment "wireguard {net_name}"')
            rules.append(f'iifname "{interface(net_name)}" accept comment "inside wireguard {net_name}"')
    return rules


def ruleset(stack: Stack, host: str) -> str:
    static = stack.hosts[host].provider == "static"
    lines = [
        f"# Managed by outpost: host firewall of {host} (table {TABLE}; see components/render/firewall.py).",
        f"table {TABLE}",
        f"delete table {TABLE}",
        f"table {TABLE} {{",
    ]
    if static:
        lines += [
            "    chain input {",
            "        type filter hook input priority filter; policy drop;",
            "        ct state established,related accept",
            "        ct state invalid drop",
            '        iif "lo" accept',
            '        iifname "podman*" accept comment "local containers"',
            "        meta l4proto { icmp, ipv6-icmp } accept",
            *[f"        {rule}" for rule in inbound_rules(stack, host)],
            "    }",
        ]
    lines += [
        "    chain output {",
        "        type filter hook output priority filter; policy accept;",
        f'        ip daddr {METADATA_V4} meta skuid != 0 counter reject comment "cloud metadata: root only"',
        "    }",
        "    chain forward {",
        "        type filter hook forward priority filter; policy accept;",
        f'        ip daddr {METADATA_V4} reject comment "cloud metadata: not from containers"',
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def unit_text() -> str:
    return "\n".join([
        "# Managed by outpost: loads the host firewall (table inet outpost) before the network is up.",
        "[Unit]",
        "Description=outpost: host firewall",
        "DefaultDependencies=no",
        "Wants=network-pre.target",
        "Before=network-pre.target shutdown.target",
        "Conflicts=shutdown.target",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"ExecStart={NFT} -f {RULESET_PATH}",
        f"ExecReload={NFT} -f {RULESET_PATH}",
        f"ExecStop={NFT} delete table {TABLE}",
        "",
        "[Install]",
        "WantedBy=sysinit.target",
    ]) + "\n"


def firewall_files(stack: Stack, host: str) -> list[File]:
    return [File(RULESET_PATH, ruleset(stack, host), "0644"), File(UNIT_PATH, unit_text(), "0644")]


def validate_step() -> dict:
    return {"argv": [NFT, "-c", "-f", f"{{staged:{RULESET_PATH}}}"]}


def restart_group() -> dict:
    return {"group": "firewall", "strategy": "reload", "scope": "system", "when": [RULESET_PATH, UNIT_PATH],
            "instances": [{"unit": UNIT, "health": None}]}
