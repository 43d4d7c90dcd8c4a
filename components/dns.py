"""The stack's DNS names: the `outpost:dns` zone at Hetzner with one record set per name and type
(hosts, route hostnames, extra records) and the `outpost:geodns` geo-routed records at Gcore or
Bunny, every host named by its public addresses.

Which names exist and what they point at is decided by `config.records` (pure); this module only
turns that into resources:

- the zone: `hcloud.Zone` `dns-zone` (Pulumi `protect` and Hetzner delete protection with
  `outpost:protect`) when `create_zone` is true; otherwise the existing zone is looked up by name
  (`hcloud.get_zone`, while the program runs), so a preview already fails when it is missing,
  with one line naming `outpost:dns.zone`, and nothing of it is owned;
- `hcloud.ZoneRrset` `dns-<fqdn>-<type>` per record set, labelled `outpost-stack: <stack>`. Record
  sets are not protected: they are rebuilt from config and follow a replaced server's address;
- `GeoRecord` `dns-geo-<fqdn>-<type>` per `outpost:geodns` record (Pulumi `protect` in a protected
  stack), its pools holding the addresses of their hosts, its token a secret Output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_hcloud as hcloud

from .config import records
from .config.model import Stack
from .geodns import GeoRecord, GeoRecordArgs


@dataclass
class DnsArgs:
    stack: Stack
    # host → {4: its public IPv4, 6: its public IPv6} (Host.public_ipv4 / public_ipv6)
    addresses: Mapping[str, Mapping[int, pulumi.Input[Optional[str]]]]
    geodns_token: Optional[pulumi.Input[str]] = None        # the outpost:geodns.token secret


class Dns(pulumi.ComponentResource):
    """Every DNS name of the stack. `record_sets` and `geo_records` are keyed by (fqdn, type)."""

    zone_name: Optional[pulumi.Output[str]]
    record_sets: dict[tuple[str, str], hcloud.ZoneRrset]
    geo_records: dict[tuple[str, str], GeoRecord]

    def __init__(self, name: str, args: DnsArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("outpost:dns:Dns", name, None, opts)
        stack = args.stack
        self._name, self._stack = name, stack
        self._served: Optional[dict[str, list[pulumi.Resource]]] = None
        self.zone_name, self.record_sets, self.geo_records = None, {}, {}
        if stack.dns:
            self.zone_name = self._zone(name, stack)
            labels = {"outpost-stack": pulumi.get_stack()}
            for rs in records.record_sets(stack):
                fqdn = rs.fqdn(stack.dns.zone)
                self.record_sets[(fqdn, rs.type)] = hcloud.ZoneRrset(
                    f"{name}-{fqdn}-{rs.type}", zone=self.zone_name, name=rs.name, type=rs.type, ttl=rs.ttl,
                    records=[hcloud.ZoneRrsetRecordArgs(value=self._value(v, args)) for v in rs.values],
                    labels=labels, opts=pulumi.ResourceOptions(parent=self))
        if stack.geodns:
            self._geodns(args)
        for key, message in records.notes(stack):
            pulumi.log.info(f"outpost:{key}: {message}", resource=self)
        self.register_outputs({
            "zone": self.zone_name,
            "names": sorted({fqdn for fqdn, _ in [*self.record_sets, *self.geo_records]}),
        })

    def routes_of(self, host: str) -> list[pulumi.Resource]:
        """The record sets of the route hostnames HOST serves: its proxy waits for them, so an ACME
        HTTP-01 challenge finds the name already pointing at the host."""
        if self._served is None:      # fqdn → record sets, and host → fqdns, worked out once
            by_fqdn: dict[str, list[pulumi.Resource]] = {}
            for (fqdn, _), res in [*self.record_sets.items(), *self.geo_records.items()]:
                by_fqdn.setdefault(fqdn, []).append(res)
            self._served = {}
            for fqdn, indexes in records.route_hostnames(self._stack).items():
                for h in records.serving_hosts(self._stack, indexes):
                    self._served.setdefault(h, []).extend(by_fqdn.get(fqdn, []))
        return list(self._served.get(host, []))

    def _zone(self, name: str, stack: Stack) -> pulumi.Input[str]:
        dns = stack.dns
        if not dns.create_zone:
            return self._existing_zone(dns.zone)
        zone = hcloud.Zone(f"{name}-zone", name=dns.zone, mode="primary", ttl=dns.ttl,
                           delete_protection=stack.protect, labels={"outpost-stack": pulumi.get_stack()},
                           opts=pulumi.ResourceOptions(parent=self, protect=stack.protect))
        return zone.name

    def _existing_zone(self, zone: str) -> str:
        """The name of ZONE as Hetzner has it, looked up now: a zone that can't be read (missing,
        a wrong token, no API) ends the program with one line naming the key, not with the
        traceback an unreadable lookup Output ends it in."""
        try:
            return hcloud.get_zone(name=zone, opts=pulumi.InvokeOptions(parent=self)).name
        except Exception as error:  # noqa: BLE001 - the SDK raises a bare Exception for a failed invoke
            reason = " ".join(str(error).split(" returned an error: ", 1)[-1].split())
            raise pulumi.RunError(
                f"Pulumi.{pulumi.get_stack()}.yaml: outpost:dns.zone: zone {zone!r} could not be read at "
                f"Hetzner ({reason}); with create_zone: false it must already exist (the stack that owns "
                "it creates it first), or set create_zone: true for this stack to own it") from None

    @staticmethod
    def _value(value: records.Value, args: DnsArgs) -> pulumi.Input[str]:
        if isinstance(value, records.HostAddress):
            return args.addresses[value.host][value.version]
        return value

    def _geodns(self, args: DnsArgs) -> None:
        stack, geodns = args.stack, args.stack.geodns
        for rec in geodns.records:
            fqdn = records.geo_fqdn(stack, rec)
            pools = {pool: [self._value(a, args) for a in addresses]
                     for pool, addresses in records.geo_pools(stack, rec).items()}
            health = rec.health.model_dump() if rec.health else None
            self.geo_records[(fqdn, rec.type)] = GeoRecord(
                f"{self._name}-geo-{fqdn}-{rec.type}", GeoRecordArgs(
                    provider=geodns.provider, token=pulumi.Output.secret(args.geodns_token),
                    zone=geodns.zone, name=records.geo_name(stack, rec), type=rec.type,
                    ttl=rec.ttl or geodns.ttl, pools=pools, rules={p: list(c) for p, c in rec.rules.items()},
                    default_pool=rec.default, health=health),
                opts=pulumi.ResourceOptions(parent=self, protect=stack.protect))
