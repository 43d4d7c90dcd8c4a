"""WireGuard meshes: for each `kind: wireguard` network a host belongs to, a `net-<network>`
manifest with a wg-quick config peering it with every other member (full mesh), enabled as
`wg-quick@wg-<network>.service` and reloaded with `wg syncconf` (no tunnel drop) when peers change.

Pure. Keys and addresses only known to the resource layer are placeholders:
`<secret:wg:<net>:<host>.key>` (private key), `<secret:wg:<net>:<host>.pub>` (public key) and
`<secret:host:<host>.address>` (the public address of a Hetzner server).
"""

from __future__ import annotations

import ipaddress

from ..config.model import Stack
from .manifest import Dir, File, Manifest, Unit, secret_ref

KEEPALIVE = 25


def interface(network: str) -> str:
    """wg-<network>, cut to Linux's 15-character interface names."""
    return f"wg-{network}"[:15]


def private_key_ref(network: str, host: str) -> str:
    return secret_ref(f"wg:{network}:{host}.key")


def public_key_ref(network: str, host: str) -> str:
    return secret_ref(f"wg:{network}:{host}.pub")


def public_address(stack: Stack, host: str) -> str:
    cfg = stack.hosts[host]
    if cfg.provider == "static":
        address = cfg.address
        try:
            if ipaddress.ip_address(address).version == 6:
                return f"[{address}]"
        except ValueError:
            pass  # a DNS name
        return address
    return secret_ref(f"host:{host}.address")


def members(stack: Stack, network: str) -> list[str]:
    return [h for h, cfg in stack.hosts.items() if network in cfg.networks]


def wireguard_config(stack: Stack, network: str, host: str) -> str:
    net = stack.networks[network]
    prefix = ipaddress.ip_network(net.ip_range).prefixlen
    lines = ["# Managed by outpost: WireGuard mesh " + network, "[Interface]",
             f"Address = {stack.hosts[host].networks[network]}/{prefix}",
             f"ListenPort = {net.port}", f"PrivateKey = {private_key_ref(network, host)}"]
    for peer in members(stack, network):
        if peer == host:
            continue
        lines += ["", f"# {peer}", "[Peer]", f"PublicKey = {public_key_ref(network, peer)}",
                  f"AllowedIPs = {stack.hosts[peer].networks[network]}/32",
                  f"Endpoint = {public_address(stack, peer)}:{net.port}",
                  f"PersistentKeepalive = {KEEPALIVE}"]
    return "\n".join(lines) + "\n"


def mesh_manifests(stack: Stack, host: str) -> list[Manifest]:
    manifests = []
    for network in sorted(stack.hosts[host].networks):
        if stack.networks[network].kind != "wireguard":
            continue
        path = f"/etc/wireguard/{interface(network)}.conf"
        unit = f"wg-quick@{interface(network)}.service"
        manifests.append(Manifest(
            name=f"net-{network}", packages=["wireguard-tools"],
            dirs=[Dir("/etc/wireguard", "0700")],
            files=[File(path, wireguard_config(stack, network, host), "0600", secret_format="line")],
            units=[Unit(unit)],
            restart=[{"group": f"wireguard-{network}", "strategy": "reload", "scope": "system",
                      "when": [path], "instances": [{"unit": unit, "health": None}]}],
            restarts={interface(network): "reload"}))
    return manifests
