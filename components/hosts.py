"""A host outpost manages, and the way in: a Hetzner Cloud server (with its generated, pinned SSH
host key, firewall attached at creation, networks and protection) or a static VPS (pinned host key
from config, admin user created by a first-login bootstrap), plus the SSH connection every
later Command on that host uses.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_hcloud as hcloud
import pulumi_tls as tls
import yaml
from pulumi_command import remote

from .config.model import Host as HostConfig
from .config.model import Stack
from .render.base import authorized_keys, bootstrap_script, sudoers, unbootstrap_script
from .shipping import SECRET_OUTPUTS


@dataclass
class HostArgs:
    name: str
    config: HostConfig
    stack: Stack
    private_key: pulumi.Input[str]                      # the deploy key outpost connects with
    ssh_key_ids: list[pulumi.Input[str]]                # hcloud SSH keys for the admin
    subnet_ids: dict[str, pulumi.Input[str]]            # hcloud network name → its subnet's id
    subnets: list[pulumi.Resource]                      # hcloud subnets servers must wait for
    placement_group_id: Optional[pulumi.Input[str]] = None


def firewall_rules(stack: Stack, host: str) -> list[hcloud.FirewallRuleArgs]:
    """Inbound: 22 from admin.ssh_sources; 80/443 where the host serves routes; WireGuard where meshed."""
    anywhere = ["0.0.0.0/0", "::/0"]
    rules = [hcloud.FirewallRuleArgs(direction="in", protocol="tcp", port="22",
                                     source_ips=list(stack.admin.ssh_sources), description="ssh")]
    if host in stack.routed_hosts():
        for port in ("80", "443"):
            rules.append(hcloud.FirewallRuleArgs(direction="in", protocol="tcp", port=port,
                                                 source_ips=anywhere, description="proxy"))
        rules.append(hcloud.FirewallRuleArgs(direction="in", protocol="udp", port="443",
                                             source_ips=anywhere, description="http3"))
    for net_name in sorted(stack.hosts[host].networks):
        net = stack.networks[net_name]
        if net.kind == "wireguard":
            rules.append(hcloud.FirewallRuleArgs(direction="in", protocol="udp", port=str(net.port),
                                                 source_ips=anywhere, description=f"wireguard {net_name}"))
    return rules


def cloud_init(stack: Stack, host_key: tls.PrivateKey) -> pulumi.Output[str]:
    """Minimal user data (changing it replaces the server): admin user, pinned host key, no root."""
    def render(keys: list[str]) -> str:
        private, public = keys
        doc = {
            "users": [{"name": stack.admin.user, "shell": "/bin/bash", "groups": ["sudo"],
                       "sudo": sudoers(stack.admin.user).splitlines()[1].split(" ", 1)[1],
                       "ssh_authorized_keys": authorized_keys(stack).splitlines()}],
            "disable_root": True,
            "ssh_pwauth": False,
            "ssh_deletekeys": True,
            "ssh_genkeytypes": [],
            "ssh_keys": {"ed25519_private": private, "ed25519_public": public.strip()},
        }
        return "#cloud-config\n" + yaml.safe_dump(doc, sort_keys=True)
    return pulumi.Output.secret(pulumi.Output.all(host_key.private_key_openssh,
                                                  host_key.public_key_openssh).apply(render))


class Host(pulumi.ComponentResource):
    """One managed host and the pinned admin connection to it (`self.connection`)."""

    connection: remote.ConnectionArgs
    public_ipv4: pulumi.Output[Optional[str]]
    public_ipv6: pulumi.Output[Optional[str]]
    ready: list[pulumi.Resource]        # what the base setup must wait for

    def __init__(self, name: str, args: HostArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("outpost:hosts:Host", name, None, opts)
        cfg = args.config
        self.ready = []
        if cfg.provider == "hcloud":
            address, host_key = self._hcloud(name, args)
            port = 22
        else:
            address, host_key, port = cfg.ssh_address or cfg.address, cfg.host_key, cfg.port
            self.public_ipv4 = pulumi.Output.from_input(_ip_of(cfg.address, 4))
            self.public_ipv6 = pulumi.Output.from_input(_ip_of(cfg.address, 6))
            first_login = remote.ConnectionArgs(host=address, port=port, user=cfg.user,
                                                private_key=args.private_key, host_key=host_key)
            self.ready.append(remote.Command(
                f"{name}-bootstrap", connection=first_login, create=bootstrap_script(args.stack),
                delete=unbootstrap_script(args.stack),
                add_previous_output_in_env=False,
                # Keys change later through the base manifest, as the admin: re-running this as
                # the first-login user would fail once the base setup refuses root logins.
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=["create"],
                                            additional_secret_outputs=list(SECRET_OUTPUTS))))
        public = cfg.address if cfg.provider == "static" else address
        self.address = pulumi.Output.from_input(public).apply(lambda a: f"[{a}]" if ":" in a else a)
        self.connection = remote.ConnectionArgs(host=address, port=port, user=args.stack.admin.user,
                                                private_key=args.private_key, host_key=host_key)
        self.private_addresses = dict(cfg.networks)
        self.ssh = pulumi.Output.format("ssh -p {0} {1}@{2}", port, args.stack.admin.user, address)
        self.register_outputs({"public_ipv4": self.public_ipv4, "public_ipv6": self.public_ipv6,
                               "private_addresses": self.private_addresses, "ssh": self.ssh})

    def _hcloud(self, name: str, args: HostArgs) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        cfg, stack = args.config, args.stack
        protect = stack.protect
        host_key = tls.PrivateKey(f"{name}-host-key", algorithm="ED25519",
                                  opts=pulumi.ResourceOptions(parent=self))
        firewall = hcloud.Firewall(f"{name}-firewall", rules=firewall_rules(stack, name),
                                   labels={"outpost-host": name},
                                   opts=pulumi.ResourceOptions(parent=self, protect=protect))
        networks = [hcloud.ServerNetworkArgs(subnet_id=args.subnet_ids[net], ip=ip)
                    for net, ip in sorted(cfg.networks.items())
                    if stack.networks[net].kind == "hcloud"]
        server = hcloud.Server(
            f"{name}-server",
            name=f"{name}{stack.suffix}",
            server_type=cfg.type, location=cfg.location, image=cfg.image,
            labels={**cfg.labels, "outpost-host": name},
            ssh_keys=args.ssh_key_ids,
            firewall_ids=[firewall.id.apply(int)],
            user_data=cloud_init(stack, host_key),
            public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=cfg.ipv4, ipv6_enabled=cfg.ipv6)],
            networks=networks or None,
            placement_group_id=args.placement_group_id,
            delete_protection=protect, rebuild_protection=protect,
            opts=pulumi.ResourceOptions(parent=self, protect=protect, depends_on=args.subnets,
                                        ignore_changes=["ssh_keys"]))
        self.public_ipv4 = server.ipv4_address
        self.public_ipv6 = server.ipv6_address
        self.ready.append(server)
        address = server.ipv4_address if cfg.ipv4 else server.ipv6_address
        return address, host_key.public_key_openssh.apply(lambda k: k.strip())


def _ip_of(address: str, version: int) -> Optional[str]:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return str(ip) if ip.version == version else None
