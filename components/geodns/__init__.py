"""Geo-routed DNS record sets at Gcore or Bunny DNS: one `GeoRecord` per `outpost:geodns` record.

Creates, in an existing zone at Gcore (DNS API v2) or Bunny DNS, ONE record set (name + type A or
AAAA) whose answer depends on where the client is: pools of addresses, rules that send continents
(AF AN AS EU NA OC SA) or ISO 3166-1 alpha-2 countries to a pool, a default pool that answers when
no rule matches, and an optional health check that takes a failing address out of the answers.
No Pulumi provider exists for either service, so this is a `pulumi.dynamic.ResourceProvider`
(`GeoRecordProvider`) talking to the published HTTP APIs with the standard library.

Layout (the package; the provider and the component stay in this module, where Pulumi states
recorded `GeoRecordProvider` by reference when it was one file, so every state stays loadable
and its serialized provider unchanged):

- `model.py`, the shared record model: `GeoRecordSpec`, the validated, normalised inputs;
  `validate()` lists every problem at once; pool notes and region codes;
- `api.py`: `HttpApi`, the JSON-over-HTTPS client both APIs are spoken through;
- `gcore.py` / `bunny.py`: `GcoreBackend` / `BunnyBackend`, one per DNS API: fetch / create /
  update / delete one record set, `render` what the API should hold, `canonical` to compare it
  with what it does hold, `to_inputs` to map a live set back onto the inputs (for drift);
- here: `GeoRecordProvider`: check / diff / create / read / update / delete;
  `GeoRecord` + `GeoRecordArgs`: the component (`outpost:dns:GeoRecord`), child `f"{name}-record"`.

Inputs (plain values, hosts already resolved): provider (gcore | bunny), api_url (default: the
provider's API), token (secret), zone, name ("@" or a label), type (A | AAAA, default A), ttl
(default 300), pools {pool: [address, ...]}, rules {pool: [code, ...]}, default_pool, health
{path, port, protocol: http | https | tcp | icmp; protocol defaults to https on port 443, else http}.

How the inputs map onto each API:

- Gcore (https://api.gcore.com/dns, `Authorization: APIKey <token>`): one RRset
  `/v2/zones/{zone}/{fqdn}/{type}`; one resource record per address, its `meta` carrying
  `continents`/`countries` (lowercase codes) from its pool's rules, `default: true` for the default
  pool, and `notes: "outpost pool=<pool>"` so the pool names survive a read; pickers
  `geodns` (not strict: no match passes everything on) then `default` (keeps the default pool's
  records when it holds any); the health check is the RRset's `meta.failover` (HTTP with `tls` for
  https, TCP or ICMP; frequency 30 s, timeout 5 s, the record's FQDN as HTTP host; ICMP is sent
  with port 80 because the API requires a port).
- Bunny (https://api.bunny.net, `AccessKey: <token>`): Bunny routes by distance to coordinates
  (SmartRoutingType Geolocation), not by region lists. Each address gets one record per rule code,
  placed at that code's representative point (a fixed point per continent, the country centre from
  the `countryinfo` package per country), so a client is answered by the pool whose nearest point
  wins; the default pool also gets the points of every continent no rule names. Comments carry
  `outpost pool=<pool>`. Bunny's monitor cannot be given a port or a path: a health check on
  port 80 over http becomes MonitorType Http (Bunny counts any non-5xx on port 80 as up, the path
  is not used), any other check becomes MonitorType Ping.

Decisions:

- octoDNS (octodns-gcore 1.0.0, octodns-bunny 1.0.0) was evaluated and not used:
  octodns-bunny has no geo support at all (SUPPORTS_DYNAMIC = False), no monitor settings and a
  hard-coded API root; octodns-gcore can be pointed at another URL but writes either geo pools or
  a failover health check, never both, drops pool names on read and works zone-wide (it creates a
  missing zone and plans whole zones), which does not fit a one-record-set read/diff.
- The resource id is `<provider>:<zone>/<name>/<type>`. `provider`, `zone`, `name` and `type`
  changes replace (create the new set, then delete the old one); everything else updates in place.
- `read` compares what the API holds with what these inputs would write; equal → the inputs
  stand, different → the live set is mapped back onto inputs (pool names from notes/comments), so
  `pulumi refresh` + `pulumi up` shows and repairs drift. A set that is gone reads as gone.
- Creating a set that already exists fails (import it or delete it first); `update` of a set
  deleted behind Pulumi's back recreates it; deleting a set that is already gone succeeds. Zones
  are never created or deleted here.
- An address may be in one pool only and a region code in one rule only (either would make the
  answer ambiguous); every pool other than the default one needs a rule. The seven continent codes
  always mean continents (Namibia NA, Saudi Arabia SA, Afghanistan AF and American Samoa AS cannot
  be named as countries).
- Errors say which API call failed with its HTTP status and the API's message; the token never
  appears in them (messages are scrubbed, and the provider object holds no secret).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi.dynamic
from pulumi.runtime.rpc import unwrap_rpc_secret

from ..dynamic import dynamic_child
from ..provider_errors import MessageOnlyErrors
from .api import HttpApi, _scrub
from .bunny import BunnyBackend
from .gcore import GcoreBackend
from .model import (CONTINENT_POINTS, CONTINENTS, DEFAULT_API_URLS, DEFAULT_TTL, INPUT_KEYS, PROVIDERS,
                    RECORD_TYPES, REPLACE_KEYS, SECRET_KEYS, UPDATE_KEYS, _PROVIDER_KEY, ApiError,
                    GeoDNSError, GeoRecordSpec, Health, _contains_unknown, code_problem, normalize,
                    validate)

__all__ = ["ApiError", "BunnyBackend", "CONTINENTS", "CONTINENT_POINTS", "DEFAULT_API_URLS", "DEFAULT_TTL",
           "GcoreBackend", "GeoDNSError", "GeoRecord", "GeoRecordArgs", "GeoRecordProvider",
           "GeoRecordSpec", "Health", "HttpApi", "INPUT_KEYS", "PROVIDERS", "RECORD_TYPES",
           "REPLACE_KEYS", "SECRET_KEYS", "TYPE_TOKEN", "UPDATE_KEYS", "code_problem",
           "create_record_set", "delete_record_set", "normalize", "read_record_set",
           "update_record_set", "validate"]


TYPE_TOKEN = "outpost:dns:GeoRecord"

Backend = GcoreBackend | BunnyBackend


def backend_for(spec: GeoRecordSpec) -> Backend:
    return GcoreBackend(spec) if spec.provider == "gcore" else BunnyBackend(spec)


def create_record_set(spec: GeoRecordSpec) -> dict[str, Any]:
    """Write the record set; its outputs."""
    backend_for(spec).create()
    return spec.outputs()


def read_record_set(spec: GeoRecordSpec) -> Optional[dict[str, Any]]:
    """The record set as it is at the provider, as outputs; None when it is gone.

    When the live set is what SPEC would write, SPEC's own outputs come back unchanged."""
    backend = backend_for(spec)
    live: Any = backend.fetch()
    if live is None:
        return None
    desired: Any = backend.render()
    if backend.canonical(live) == backend.canonical(desired):
        return spec.outputs()
    return {**spec.outputs(), **backend.to_inputs(live)}


def update_record_set(spec: GeoRecordSpec) -> dict[str, Any]:
    """Make the provider hold exactly SPEC's record set (recreating it if it is gone)."""
    backend_for(spec).update()
    return spec.outputs()


def delete_record_set(spec: GeoRecordSpec) -> None:
    """Remove the record set; one that is already gone is fine."""
    backend_for(spec).delete()


def _clean(props: Mapping[str, Any]) -> dict[str, Any]:
    """PROPS without the serialized provider, secrets unwrapped."""
    return {k: unwrap_rpc_secret(v) for k, v in props.items() if k != _PROVIDER_KEY}


def _guarded(props: Mapping[str, Any], action: str, fn: Any) -> Any:
    """Run FN; any error leaves as GeoDNSError with the token scrubbed from its message."""
    token = str(_clean(props).get("token") or "")
    try:
        return fn()
    except GeoDNSError as exc:
        raise GeoDNSError(_scrub(str(exc), token)) from None
    except Exception as exc:  # noqa: BLE001 - anything else must not leak the token either
        raise GeoDNSError(_scrub(f"{action} failed: {type(exc).__name__}: {exc}", token)) from None


class GeoRecordProvider(MessageOnlyErrors):
    """CRUD for one geo-routed record set; see the module docstring for the rules it follows."""

    serialize_as_secret_always = True

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.CheckResult:
        props = _clean(news)
        failures = [pulumi.dynamic.CheckFailure(k, reason) for k, reason in validate(props)]
        inputs = normalize(props) if not failures else props
        return pulumi.dynamic.CheckResult(inputs, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        old, new = normalize(_clean(olds)), normalize(_clean(news))
        changed = [k for k in INPUT_KEYS if _contains_unknown(news.get(k)) or old.get(k) != new.get(k)]
        return pulumi.dynamic.DiffResult(
            changes=bool(changed),
            replaces=[k for k in changed if k in REPLACE_KEYS],
            stables=[],
            delete_before_replace=False,
        )

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        def run() -> pulumi.dynamic.CreateResult:
            spec = GeoRecordSpec.from_props(_clean(props))
            return pulumi.dynamic.CreateResult(spec.record_id, create_record_set(spec))

        return _guarded(props, "create", run)

    def read(self, id_: str, props: dict[str, Any]) -> pulumi.dynamic.ReadResult:
        def run() -> pulumi.dynamic.ReadResult:
            if not props.get("token") or not props.get("pools"):
                raise GeoDNSError(f"read {id_!r} failed: its state has no token and pools; declare the record "
                                  "in outpost:geodns (same name) instead of importing it bare")
            outs = read_record_set(GeoRecordSpec.from_props(_clean(props)))
            return pulumi.dynamic.ReadResult(id_, outs) if outs is not None else pulumi.dynamic.ReadResult("", {})

        return _guarded(props, "read", run)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
        def run() -> pulumi.dynamic.UpdateResult:
            return pulumi.dynamic.UpdateResult(update_record_set(GeoRecordSpec.from_props(_clean(news))))

        return _guarded(news, "update", run)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _guarded(props, "delete", lambda: delete_record_set(GeoRecordSpec.from_props(_clean(props))))


class _GeoRecordSet(pulumi.dynamic.Resource, module="outpost", name="GeoRecordSet"):
    """The dynamic resource behind `GeoRecord` (type pulumi-python:dynamic/outpost:GeoRecordSet)."""

    provider: pulumi.Output[str]
    zone: pulumi.Output[str]
    name: pulumi.Output[str]
    type: pulumi.Output[str]
    ttl: pulumi.Output[int]
    pools: pulumi.Output[dict[str, list[str]]]
    rules: pulumi.Output[dict[str, list[str]]]
    default_pool: pulumi.Output[str]
    health: pulumi.Output[Optional[dict[str, Any]]]
    token: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__(GeoRecordProvider(), name, props, opts)


@dataclass
class GeoRecordArgs:
    """Inputs of one `GeoRecord` (one `outpost:geodns` record, hosts resolved to addresses)."""

    provider: pulumi.Input[str]
    token: pulumi.Input[str]
    zone: pulumi.Input[str]
    name: pulumi.Input[str]
    pools: pulumi.Input[Mapping[str, Sequence[pulumi.Input[str]]]]
    default_pool: pulumi.Input[str]
    rules: pulumi.Input[Mapping[str, Sequence[str]]]
    type: pulumi.Input[str] = "A"
    ttl: pulumi.Input[int] = DEFAULT_TTL
    health: Optional[pulumi.Input[Mapping[str, Any]]] = None
    api_url: Optional[pulumi.Input[str]] = None


class GeoRecord(pulumi.ComponentResource):
    """A geo-routed A or AAAA record set at Gcore or Bunny.

    Outputs: `fqdn` (the record's name without trailing dot), `record_type`, `pools`.
    """

    fqdn: pulumi.Output[str]
    record_type: pulumi.Output[str]
    pools: pulumi.Output[dict[str, list[str]]]

    def __init__(self, name: str, args: GeoRecordArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        self.record_set = dynamic_child(_GeoRecordSet, f"{name}-record", args, SECRET_KEYS, self, opts)
        self.fqdn = pulumi.Output.all(self.record_set.zone, self.record_set.name).apply(
            lambda zn: zn[0] if zn[1] == "@" else f"{zn[1]}.{zn[0]}"
        )
        self.record_type = self.record_set.type
        self.pools = self.record_set.pools
        self.register_outputs({"fqdn": self.fqdn, "record_type": self.record_type, "pools": self.pools})
