"""The whole environment as one component: networks, hosts and, on each host, one Command that
ships all its rendered manifests (base setup first, then the rest), wired in dependency order.

`__main__.py` only loads the config and builds `Outpost`. Everything here is resources; what the
hosts receive comes from the render layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_hcloud as hcloud
from pulumi_command import remote

from .buckets import Bucket, BucketArgs
from .certificates import Certificates, CertificatesArgs
from .config.model import Stack
from .dns import Dns, DnsArgs
from .hosts import Host, HostArgs
from .mesh import MeshKeys
from .render import render_stack
from .render.restore import restored_services
from .render.routes import certificate_hosts
from .shipping import ship_agent, ship_host


@dataclass
class OutpostArgs:
    stack: Stack
    secrets: Mapping[str, pulumi.Output[str]]   # secret name → value (always secret Outputs)


class Outpost(pulumi.ComponentResource):
    hosts: dict[str, Host]
    commands: dict[str, remote.Command]          # host → the one Command that ships its manifests

    def __init__(self, name: str, args: OutpostArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("outpost:stack:Outpost", name, None, opts)
        stack = self.stack = args.stack
        private_key = args.secrets[stack.admin.private_key]
        child = pulumi.ResourceOptions(parent=self)
        protect = pulumi.ResourceOptions(parent=self, protect=stack.protect)

        uses_hcloud = any(h.provider == "hcloud" for h in stack.hosts.values())
        ssh_key_ids = [
            hcloud.SshKey(f"admin-key-{i}", public_key=key, name=f"{stack.admin.user}-{i}{stack.suffix}",
                          opts=child).id
            for i, key in enumerate(stack.admin.ssh_keys)
        ] if uses_hcloud else []

        subnets: dict[str, hcloud.NetworkSubnet] = {}
        for net_name, net in stack.networks.items():
            if net.kind != "hcloud":
                continue
            network = hcloud.Network(f"net-{net_name}", name=f"{net_name}{stack.suffix}",
                                     ip_range=net.ip_range, opts=protect)
            subnets[net_name] = hcloud.NetworkSubnet(
                f"net-{net_name}-subnet", network_id=network.id.apply(int), type="cloud",
                network_zone=net.zone, ip_range=net.subnet, opts=child)

        placement: dict[str, pulumi.Output[str]] = {}
        roles = [h.role for h in stack.hosts.values() if h.provider == "hcloud" and h.role]
        for role in sorted({r for r in roles if roles.count(r) > 1}):
            placement[role] = hcloud.PlacementGroup(f"placement-{role}", name=f"{role}{stack.suffix}",
                                                    type="spread", opts=child).id


        self.buckets = {
            name: Bucket(f"bucket-{name}", BucketArgs(
                bucket=name, endpoint=cfg.endpoint, region=cfg.region,
                access_key=args.secrets[cfg.credentials.access_key],
                secret_key=args.secrets[cfg.credentials.secret_key],
                versioning=cfg.versioning, object_lock_days=cfg.object_lock_days,
                expire_days=cfg.expire_days, noncurrent_expire_days=cfg.noncurrent_expire_days, force_destroy=not stack.protect), opts=protect)
            for name, cfg in stack.buckets.items()
        }

        self.hosts, self.commands = {}, {}
        for host_name, cfg in stack.hosts.items():
            host = Host(host_name, HostArgs(
                name=host_name, config=cfg, stack=stack, private_key=private_key,
                ssh_key_ids=ssh_key_ids,
                subnet_ids={n: s.id for n, s in subnets.items() if n in cfg.networks},
                subnets=[s for n, s in subnets.items() if n in cfg.networks],
                placement_group_id=placement[cfg.role].apply(int) if cfg.role in placement else None,
            ), opts=child)
            self.hosts[host_name] = host

        self.dns = Dns("dns", DnsArgs(
            stack=stack, addresses={n: {4: h.public_ipv4, 6: h.public_ipv6} for n, h in self.hosts.items()},
            geodns_token=args.secrets[stack.geodns.token] if stack.geodns else None,
        ), opts=child) if stack.dns or stack.geodns else None

        # After the zone and its records: acme-dns answers DNS-01 in a zone this stack may create.
        certificates = Certificates("tls", CertificatesArgs(
            stack=stack, hosts=certificate_hosts(stack), secrets=dict(args.secrets),
            after=[self.dns] if self.dns else []), opts=child)
        secrets = {**args.secrets, **certificates.values}

        # Values only known once resources exist, filled into manifests like secrets.
        secrets.update(MeshKeys("wireguard", stack, opts=child).values)
        for host_name, host in self.hosts.items():
            secrets[f"host:{host_name}.address"] = host.address
        rendered = render_stack(stack)
        for host_name, host in self.hosts.items():
            self.commands[host_name] = self._ship_host(host_name, host, rendered[host_name], secrets)

        self.ca_certificate = certificates.ca_certificate
        self.register_outputs({
            "ca_certificate": self.ca_certificate,
            "hosts": {name: {"public_ipv4": h.public_ipv4, "public_ipv6": h.public_ipv6,
                             "private_addresses": h.private_addresses, "ssh": h.ssh}
                      for name, h in self.hosts.items()},
        })

    def _ship_host(self, host_name: str, host: Host, manifests, secrets) -> remote.Command:
        """The host's one Command (components/shipping.py). Its bundle applies in order: base
        setup; certificates; the proxy; backups (a `restore: auto` backup restores a service's
        data before the service first starts); then the services. It waits for what the host
        needs from elsewhere: the server (or the static host's bootstrap), the buckets its
        backups write to, and the DNS records of the names its proxy serves (ACME finds them)."""
        order = {"base": 0, "tls": 1, "proxy": 2}
        manifests = sorted(manifests, key=lambda m: (order.get(m.name, 3), not m.name.startswith("backup-")))
        admin = self.stack.admin.user
        agent = ship_agent(f"{host_name}-agent", admin, host.connection, host, host.ready)
        needs: list[pulumi.Resource] = [*host.ready, agent]
        if any(m.name.startswith("backup-") for m in manifests):
            needs += list(self.buckets.values())
        if self.dns and any(m.name == "proxy" for m in manifests):
            needs += self.dns.routes_of(host_name)
        return ship_host(f"{host_name}-bundle", host_name, admin, manifests, host.connection, secrets, host, needs)
