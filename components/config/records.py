"""The DNS names a stack publishes, derived from its config: the record sets it writes into the
`outpost:dns` zone (Hetzner) and the pools of its `outpost:geodns` records. Pure.

Shared by the config checks (clashing names, hosts without an address) and the `Dns` component,
which turns each `RecordSet` into a Hetzner RRSet and each geo record into a `GeoRecord`, filling
every `HostAddress` with that host's public address once it is known.

What goes into `outpost:dns.zone`:

- every host H: `H<suffix>` (web1-test.example.org in the test stack), A from its public IPv4 and
  AAAA from its public IPv6 (hcloud: the server's primary addresses as `ipv4`/`ipv6` enable them;
  static: `address` when it is an IP; a static host addressed by a DNS name gets a CNAME to it);
- every route hostname (`{suffix}` expanded) whose most specific zone is the `outpost:dns` zone:
  its name relative to the zone (`@` at the apex), A/AAAA → the public addresses of every host that
  runs a service routed under that hostname. A hostname in the `outpost:geodns` zone is answered
  there and gets no plain record; a hostname in neither zone gets none (a note, not an error);
- every `outpost:dns.records` entry, `{suffix}` expanded in name and value (a TXT value is quoted
  for the API unless it starts with a quote); entries with the same name and type form one set.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Optional, Union

from .model import GeoRecordSpec, Stack

# A record name relative to its zone: "@", or labels (a-z 0-9 - _), optionally behind "*.".
RELATIVE_NAME_RE = re.compile(r"^(@|(\*\.)?[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*|\*)$")
ADDRESS_TYPES = {4: "A", 6: "AAAA"}


@dataclass(frozen=True)
class HostAddress:
    """The public IPv4 (version 4) or IPv6 (version 6) address of a host, known once it exists."""

    host: str
    version: int


Value = Union[str, HostAddress]


@dataclass(frozen=True)
class RecordSet:
    """One name and type in the zone: its values and the config keys that asked for it."""

    name: str                       # relative to the zone; "@" is the apex
    type: str
    ttl: int
    values: tuple[Value, ...]
    origins: tuple[str, ...]        # key paths like "hosts.web1", "routes[0].host", "dns.records[2]"

    def fqdn(self, zone: str) -> str:
        return zone if self.name == "@" else f"{self.name}.{zone}"


def relative_name(fqdn: str, zone: str) -> Optional[str]:
    """FQDN's name relative to ZONE ("@" for the apex), or None when it lies outside ZONE."""
    fqdn = fqdn.rstrip(".").lower()
    if fqdn == zone:
        return "@"
    if fqdn.endswith("." + zone):
        return fqdn[: -len(zone) - 1]
    return None


def _ip(address: Optional[str]) -> Optional[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return ipaddress.ip_address(address or "")
    except ValueError:
        return None


def address_versions(stack: Stack, host: str) -> tuple[int, ...]:
    """The IP versions HOST has a public address of: (4, 6), (4,), (6,) or ()."""
    cfg = stack.hosts[host]
    if cfg.provider == "hcloud":
        return tuple(v for v, enabled in ((4, cfg.ipv4), (6, cfg.ipv6)) if enabled)
    ip = _ip(cfg.address)
    return (ip.version,) if ip else ()


def host_record_name(stack: Stack, host: str) -> str:
    return f"{host}{stack.suffix}"


def zone_of(stack: Stack, fqdn: str) -> Optional[str]:
    """Which outpost-managed zone answers FQDN: "dns", "geodns" or None. The most specific zone
    wins (geo.example.org delegated from example.org answers for app.geo.example.org)."""
    zones = [(kind, cfg.zone) for kind, cfg in (("dns", stack.dns), ("geodns", stack.geodns)) if cfg]
    inside = [(len(zone), kind) for kind, zone in zones if relative_name(fqdn, zone) is not None]
    return max(inside)[1] if inside else None


def route_hostnames(stack: Stack) -> dict[str, list[int]]:
    """Each route hostname ({suffix} expanded) → the indexes of the routes under it, in order."""
    names: dict[str, list[int]] = {}
    for i, route in enumerate(stack.routes):
        names.setdefault(stack.with_suffix(route.host), []).append(i)
    return names


def serving_hosts(stack: Stack, route_indexes: list[int]) -> list[str]:
    """The hosts running any service the given routes point at, sorted (undefined services skipped)."""
    hosts = {h for i in route_indexes if (svc := stack.services.get(stack.routes[i].service))
             for h in svc.hosts if h in stack.hosts}
    return sorted(hosts)


def _address_sets(name: str, hosts: list[str], stack: Stack, ttl: int, origin: str) -> list[RecordSet]:
    sets = []
    for version, rtype in ADDRESS_TYPES.items():
        values = tuple(HostAddress(h, version) for h in hosts if version in address_versions(stack, h))
        if values:
            sets.append(RecordSet(name, rtype, ttl, values, (origin,)))
    return sets


def host_record_sets(stack: Stack) -> list[RecordSet]:
    if stack.dns is None:
        return []
    sets = []
    for host, cfg in stack.hosts.items():
        name = host_record_name(stack, host)
        if cfg.provider == "static" and cfg.address and _ip(cfg.address) is None:
            sets.append(RecordSet(name, "CNAME", stack.dns.ttl, (cfg.address.rstrip(".") + ".",), (f"hosts.{host}",)))
        else:
            sets.extend(_address_sets(name, [host], stack, stack.dns.ttl, f"hosts.{host}"))
    return sets


def route_record_sets(stack: Stack) -> list[RecordSet]:
    if stack.dns is None:
        return []
    sets = []
    for fqdn, indexes in route_hostnames(stack).items():
        if zone_of(stack, fqdn) != "dns":
            continue
        name = relative_name(fqdn, stack.dns.zone)
        sets.extend(_address_sets(name, serving_hosts(stack, indexes), stack, stack.dns.ttl,
                                  f"routes[{indexes[0]}].host"))
    return sets


def extra_record_sets(stack: Stack) -> list[RecordSet]:
    """`outpost:dns.records`, one set per (name, type), in the order names first appear; the
    set's TTL is its first entry's (the checks require the entries to agree)."""
    if stack.dns is None:
        return []
    groups: dict[tuple[str, str], list[int]] = {}
    for i, rec in enumerate(stack.dns.records):
        groups.setdefault((stack.with_suffix(rec.name).lower(), rec.type), []).append(i)
    sets = []
    for (name, rtype), indexes in groups.items():
        records = [stack.dns.records[i] for i in indexes]
        values = tuple(dict.fromkeys(record_value(rtype, stack.with_suffix(r.value)) for r in records))
        sets.append(RecordSet(name, rtype, records[0].ttl or stack.dns.ttl, values,
                              tuple(f"dns.records[{i}]" for i in indexes)))
    return sets


def record_value(rtype: str, value: str) -> str:
    """VALUE as Hetzner's API takes it: TXT as quoted strings of at most 255 characters (a value
    already starting with a quote is taken as written), every other type as given."""
    if rtype != "TXT" or value.startswith('"'):
        return value
    chunks = [value[i:i + 255] for i in range(0, len(value), 255)] or [""]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def record_sets(stack: Stack) -> list[RecordSet]:
    """Every record set the stack writes into the `outpost:dns` zone: hosts, routes, extras."""
    return host_record_sets(stack) + route_record_sets(stack) + extra_record_sets(stack)


def geo_name(stack: Stack, record: GeoRecordSpec) -> str:
    return stack.with_suffix(record.name).rstrip(".").lower()


def geo_fqdn(stack: Stack, record: GeoRecordSpec) -> str:
    name = geo_name(stack, record)
    return stack.geodns.zone if name == "@" else f"{name}.{stack.geodns.zone}"


def geo_pools(stack: Stack, record: GeoRecordSpec) -> dict[str, tuple[HostAddress, ...]]:
    """Pool → the addresses of its hosts, of the record's type (A: IPv4, AAAA: IPv6)."""
    version = 4 if record.type == "A" else 6
    return {pool: tuple(HostAddress(h, version) for h in hosts) for pool, hosts in record.pools.items()}


def notes(stack: Stack) -> list[tuple[str, str]]:
    """Route hostnames outpost publishes no record for, as (key path, message): not errors (the
    name may live at another DNS provider), but worth saying. Empty when the stack manages no DNS."""
    if stack.dns is None and stack.geodns is None:
        return []
    geo = {geo_fqdn(stack, r) for r in stack.geodns.records} if stack.geodns else set()
    found = []
    for fqdn, indexes in route_hostnames(stack).items():
        where = f"routes[{indexes[0]}].host"
        zone = zone_of(stack, fqdn)
        if zone is None:
            zones = " or ".join(z.zone for z in (stack.dns, stack.geodns) if z)
            found.append((where, f"{fqdn} is outside {zones}: outpost publishes no record for it; "
                                 "point it at the hosts serving it wherever that name lives"))
        elif zone == "geodns" and fqdn not in geo:
            found.append((where, f"{fqdn} lies in the GeoDNS zone {stack.geodns.zone} but no "
                                 "outpost:geodns record answers it"))
    return found
