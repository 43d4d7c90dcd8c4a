"""Gcore DNS API v2: one geo-routed record set is one RRset, its records' `meta` carrying the
continents and countries of their pool, its own `meta.failover` the health check (see the
package docstring for the mapping).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

from .api import HttpApi, _quote
from .model import (ApiError, GeoDNSError, GeoRecordSpec, _as_int, _parse_pool_note, _pool_note,
                    _split_codes)

GCORE_PICKERS = ({"type": "geodns", "strict": False}, {"type": "default", "strict": False})
GCORE_CHECK_FREQUENCY = 30
GCORE_CHECK_TIMEOUT = 5


class GcoreBackend:
    """One RRset at Gcore DNS API v2 (https://api.gcore.com/docs/dns, RRsets)."""

    def __init__(self, spec: GeoRecordSpec) -> None:
        self.spec = spec
        self.api = HttpApi("gcore", spec.api_url, {"Authorization": f"APIKey {spec.token}"}, spec.token)
        self.path = f"/v2/zones/{_quote(spec.zone)}/{_quote(spec.fqdn)}/{spec.type}"

    def fetch(self) -> Optional[dict[str, Any]]:
        try:
            return self.api.call("GET", self.path)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def create(self) -> None:
        if self.fetch() is not None:
            raise GeoDNSError(f"gcore: record set {self.spec.fqdn} {self.spec.type} already exists in zone "
                              f"{self.spec.zone}; import it (pulumi import) or delete it first")
        self.api.call("POST", self.path, self.render())

    def update(self) -> None:
        if self.fetch() is None:
            self.api.call("POST", self.path, self.render())
        else:
            self.api.call("PUT", self.path, self.render())

    def delete(self) -> None:
        try:
            self.api.call("DELETE", self.path, ok=(200, 204))
        except ApiError as exc:
            if exc.status != 404:
                raise

    def render(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "ttl": spec.ttl,
            "resource_records": [self._record(pool, addr) for pool, addr in spec.answers()],
            "pickers": [dict(p) for p in GCORE_PICKERS],
            "meta": {"failover": self._failover()} if spec.health else {},
        }

    def _record(self, pool: str, addr: str) -> dict[str, Any]:
        default = pool == self.spec.default_pool
        continents, countries = _split_codes(self.spec.rule_map().get(pool, ()))
        meta: dict[str, Any] = {"notes": _pool_note(pool, default)}
        if continents:
            meta["continents"] = [c.lower() for c in continents]
        if countries:
            meta["countries"] = [c.lower() for c in countries]
        if default:
            meta["default"] = True
        return {"content": [addr], "enabled": True, "meta": meta}

    def _failover(self) -> dict[str, Any]:
        health = self.spec.health
        assert health is not None
        check: dict[str, Any] = {
            "protocol": "HTTP" if health.protocol in ("http", "https") else health.protocol.upper(),
            "port": health.port if health.port is not None else 80,  # required by Gcore even for ICMP
            "frequency": GCORE_CHECK_FREQUENCY,
            "timeout": GCORE_CHECK_TIMEOUT,
        }
        if health.protocol in ("http", "https"):
            check.update(method="GET", url=health.path, tls=health.protocol == "https", host=self.spec.fqdn)
        return check

    @staticmethod
    def canonical(rrset: Mapping[str, Any]) -> tuple[Any, ...]:
        """What matters in an RRset, in a comparable form (order and casing ignored)."""
        records = sorted(GcoreBackend._canonical_record(r) for r in rrset.get("resource_records") or [])
        pickers = tuple((p.get("type"), bool(p.get("strict")), _as_int(p.get("limit") or 0))
                        for p in rrset.get("pickers") or rrset.get("filters") or [])
        failover = (rrset.get("meta") or {}).get("failover") or {}
        return (_as_int(rrset.get("ttl")), tuple(records), pickers,
                tuple(sorted((k, str(v)) for k, v in failover.items() if v is not None)))

    @staticmethod
    def _canonical_record(record: Mapping[str, Any]) -> tuple[Any, ...]:
        meta = record.get("meta") or {}
        return (
            tuple(str(c) for c in record.get("content") or []),
            record.get("enabled", True) is not False,
            tuple(sorted(str(c).upper() for c in meta.get("continents") or [])),
            tuple(sorted(str(c).upper() for c in meta.get("countries") or [])),
            bool(meta.get("default")),
            str(meta.get("notes") or ""),
        )

    def to_inputs(self, rrset: Mapping[str, Any]) -> dict[str, Any]:
        """The live RRset mapped back onto this record set's inputs."""
        pools: dict[str, list[str]] = {}
        rules: dict[str, set[str]] = {}
        default_pool = ""
        geo_pools: dict[frozenset[str], str] = {}
        for record in rrset.get("resource_records") or []:
            meta = record.get("meta") or {}
            codes = frozenset(str(c).upper() for c in (meta.get("continents") or []) + (meta.get("countries") or []))
            pool, noted_default = _parse_pool_note(meta.get("notes"))
            if pool is None:
                pool = self.spec.default_pool if meta.get("default") and not codes else \
                    geo_pools.setdefault(codes, f"pool-{len(geo_pools)}")
            pools.setdefault(pool, []).extend(str(c) for c in record.get("content") or [])
            if codes:
                rules.setdefault(pool, set()).update(codes)
            if meta.get("default") or noted_default:
                default_pool = default_pool or pool
        return {
            "ttl": _as_int(rrset.get("ttl")),
            "pools": {p: sorted(a) for p, a in sorted(pools.items())},
            "rules": {p: sorted(c) for p, c in sorted(rules.items())},
            "default_pool": default_pool,
            "health": self._health_from(((rrset.get("meta") or {}).get("failover"))),
        }

    @staticmethod
    def _health_from(failover: Optional[Mapping[str, Any]]) -> Optional[dict[str, Any]]:
        if not failover:
            return None
        protocol = str(failover.get("protocol", "")).lower()
        if protocol == "http":
            protocol = "https" if failover.get("tls") else "http"
            return {"protocol": protocol, "port": _as_int(failover.get("port")), "path": failover.get("url") or "/"}
        return {"protocol": protocol, "port": _as_int(failover.get("port")) if protocol == "tcp" else None,
                "path": None}
