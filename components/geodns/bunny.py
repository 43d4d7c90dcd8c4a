"""Bunny DNS: one geo-routed record set is the records of one name and type in a zone, each
placed at a point (Geolocation routing by distance), with a monitor for the health check (see the
package docstring for the mapping).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

from .api import HttpApi
from .model import (CONTINENT_POINTS, CONTINENTS, ApiError, GeoDNSError, GeoRecordSpec, _as_int,
                    _country, _parse_pool_note, _pool_note, _sorted_addresses)

BUNNY_TYPES = {"A": 0, "AAAA": 1}
BUNNY_GEOLOCATION = 2  # SmartRoutingType: 0 None, 1 Latency, 2 Geolocation
BUNNY_MONITOR = {"none": 0, "ping": 1, "http": 2}  # MonitorType
BUNNY_WEIGHT = 100
BUNNY_PAGE_SIZE = 1000


def _point(code: str) -> tuple[float, float]:
    if code in CONTINENT_POINTS:
        return CONTINENT_POINTS[code]
    point = _country(code)
    if point is None:
        raise GeoDNSError(f"bunny: no coordinates known for country {code!r}")
    return point


def _round_point(lat: Any, lng: Any) -> tuple[float, float]:
    return round(float(lat or 0), 4), round(float(lng or 0), 4)


class BunnyBackend:
    """The records of one name + type in a Bunny DNS zone (https://docs.bunny.net, DNS Zone API)."""

    def __init__(self, spec: GeoRecordSpec) -> None:
        self.spec = spec
        self.api = HttpApi("bunny", spec.api_url, {"AccessKey": spec.token}, spec.token)
        self.label = "" if spec.name == "@" else spec.name
        self.type_code = BUNNY_TYPES[spec.type]
        self._zone_id: Optional[int] = None

    # --- zone and records -------------------------------------------------------------------

    def zone_id(self) -> Optional[int]:
        """The id of the zone, or None when the account has no such zone."""
        if self._zone_id is None:
            page = 1
            while True:
                answer = self.api.call("GET", f"/dnszone?page={page}&perPage={BUNNY_PAGE_SIZE}") or {}
                for zone in answer.get("Items") or []:
                    if str(zone.get("Domain", "")).rstrip(".").lower() == self.spec.zone:
                        self._zone_id = int(zone["Id"])
                        return self._zone_id
                if not answer.get("HasMoreItems"):
                    return None
                page += 1
        return self._zone_id

    def _require_zone(self) -> int:
        zone_id = self.zone_id()
        if zone_id is None:
            raise GeoDNSError(f"bunny: zone {self.spec.zone} does not exist in this Bunny account; "
                              "create the DNS zone first (outpost does not create zones)")
        return zone_id

    def fetch(self) -> Optional[list[dict[str, Any]]]:
        """The records of the set, or None when there are none (or the zone is gone)."""
        zone_id = self.zone_id()
        if zone_id is None:
            return None
        try:
            zone = self.api.call("GET", f"/dnszone/{zone_id}") or {}
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        records = [r for r in zone.get("Records") or [] if self._in_set(r)]
        return records or None

    def _in_set(self, record: Mapping[str, Any]) -> bool:
        rtype = record.get("Type")
        name = str(record.get("Name") or "").rstrip(".").lower()
        same_type = rtype == self.type_code or rtype == self.spec.type
        return same_type and (name if name != "@" else "") == self.label

    # --- writes -----------------------------------------------------------------------------

    def create(self) -> None:
        zone_id = self._require_zone()
        if self.fetch() is not None:
            raise GeoDNSError(f"bunny: record set {self.spec.fqdn} {self.spec.type} already exists in zone "
                              f"{self.spec.zone}; import it (pulumi import) or delete it first")
        added: list[int] = []
        try:
            for record in self.render():
                created = self.api.call("PUT", f"/dnszone/{zone_id}/records", record, ok=(200, 201)) or {}
                added.append(int(created["Id"]))
        except (GeoDNSError, KeyError, TypeError, ValueError) as exc:
            if not added:
                raise
            self._remove(zone_id, added)
            raise GeoDNSError(f"{exc}; the {len(added)} record(s) already added were removed again") from None

    def update(self) -> None:
        """Bring the set to the rendered records: edit in place, then add, then remove extras."""
        zone_id = self._require_zone()
        live = self.fetch() or []
        stale, missing = self._mismatches(live, self.render())
        for old, new in zip(stale, missing, strict=False):  # pairs first, then the longer list's rest
            self.api.call("POST", f"/dnszone/{zone_id}/records/{old['Id']}", {**new, "Id": old["Id"]}, ok=(200, 204))
        for new in missing[len(stale):]:
            self.api.call("PUT", f"/dnszone/{zone_id}/records", new, ok=(200, 201))
        self._remove(zone_id, [int(old["Id"]) for old in stale[len(missing):]])

    def delete(self) -> None:
        zone_id = self.zone_id()
        records = self.fetch() if zone_id is not None else None
        if zone_id is not None and records:
            self._remove(zone_id, [int(r["Id"]) for r in records])

    def _remove(self, zone_id: int, record_ids: Iterable[int]) -> None:
        for record_id in record_ids:
            try:
                self.api.call("DELETE", f"/dnszone/{zone_id}/records/{record_id}", ok=(200, 204))
            except ApiError as exc:
                if exc.status != 404:
                    raise

    @classmethod
    def _mismatches(cls, live: list[dict[str, Any]], desired: list[dict[str, Any]]
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(live records matching nothing desired, desired records matching nothing live)."""
        stale = list(live)
        missing: list[dict[str, Any]] = []
        for record in desired:
            key = cls._key(record)
            match = next((i for i, old in enumerate(stale) if cls._key(old) == key), None)
            if match is None:
                missing.append(record)
            else:
                del stale[match]
        return stale, missing

    # --- mapping ----------------------------------------------------------------------------

    def points(self) -> dict[str, list[tuple[str, tuple[float, float]]]]:
        """Pool → [(code, point)]: each rule's points, plus uncovered continents for the default pool."""
        rules = self.spec.rule_map()
        covered = {c for codes in rules.values() for c in codes if c in CONTINENT_POINTS}
        result: dict[str, list[tuple[str, tuple[float, float]]]] = {}
        for pool, _ in self.spec.pools:
            codes = set(rules.get(pool, ()))
            if pool == self.spec.default_pool:
                codes |= set(CONTINENTS) - covered
            result[pool] = [(code, _point(code)) for code in sorted(codes)]
        self._check_points(result)
        return result

    @staticmethod
    def _check_points(points: Mapping[str, list[tuple[str, tuple[float, float]]]]) -> None:
        seen: dict[tuple[float, float], str] = {}
        for entries in points.values():
            for code, point in entries:
                key = _round_point(*point)
                if seen.get(key, code) != code:
                    raise GeoDNSError(f"bunny: {seen[key]} and {code} have the same coordinates {key}; "
                                      "Bunny routes by distance and cannot tell them apart")
                seen[key] = code

    def render(self) -> list[dict[str, Any]]:
        monitor = self._monitor()
        records = []
        for pool, entries in self.points().items():
            default = pool == self.spec.default_pool
            for addr in self.spec.pool_map()[pool]:
                for _code, (lat, lng) in entries:
                    records.append({
                        "Type": self.type_code, "Ttl": self.spec.ttl, "Value": addr, "Name": self.label,
                        "Weight": BUNNY_WEIGHT, "MonitorType": monitor, "SmartRoutingType": BUNNY_GEOLOCATION,
                        "GeolocationLatitude": lat, "GeolocationLongitude": lng,
                        "Comment": _pool_note(pool, default), "Disabled": False,
                    })
        return records

    def _monitor(self) -> int:
        health = self.spec.health
        if health is None:
            return BUNNY_MONITOR["none"]
        if health.protocol == "http" and health.port == 80:
            return BUNNY_MONITOR["http"]
        return BUNNY_MONITOR["ping"]

    @staticmethod
    def _key(record: Mapping[str, Any]) -> tuple[Any, ...]:
        lat, lng = _round_point(record.get("GeolocationLatitude"), record.get("GeolocationLongitude"))
        return (str(record.get("Value")), _as_int(record.get("Ttl")), lat, lng,
                _as_int(record.get("SmartRoutingType") or 0), _as_int(record.get("MonitorType") or 0),
                _as_int(record.get("Weight") or 0), str(record.get("Comment") or ""), bool(record.get("Disabled")))

    @classmethod
    def canonical(cls, records: Sequence[Mapping[str, Any]]) -> tuple[Any, ...]:
        return tuple(sorted(cls._key(r) for r in records))

    def to_inputs(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The live records mapped back onto this record set's inputs."""
        by_point = {_round_point(*point): code for entries in self.points().values() for code, point in entries}
        pools: dict[str, set[str]] = {}
        codes: dict[str, set[str]] = {}
        default_pool = ""
        for record in records:
            pool, is_default = _parse_pool_note(record.get("Comment"))
            pool = pool or "unnamed"
            pools.setdefault(pool, set()).add(str(record.get("Value")))
            point = _round_point(record.get("GeolocationLatitude"), record.get("GeolocationLongitude"))
            codes.setdefault(pool, set()).add(by_point.get(point, f"{point[0]},{point[1]}"))
            default_pool = default_pool or (pool if is_default else "")
        return {
            "ttl": _as_int(records[0].get("Ttl")) if records else None,
            "pools": {p: _sorted_addresses(a) if all(_is_ip(x) for x in a) else sorted(a)
                      for p, a in sorted(pools.items())},
            "rules": self._rules_from(codes, default_pool),
            "default_pool": default_pool,
            "health": self._health_from(_as_int(records[0].get("MonitorType") or 0) if records else 0),
        }

    def _rules_from(self, codes: Mapping[str, set[str]], default_pool: str) -> dict[str, list[str]]:
        """Pool → codes, without the uncovered continents `points` added to the default pool
        (a continent stays in the default pool's rule only when the inputs named it there)."""
        own = set(self.spec.rule_map().get(default_pool, ()))
        rules: dict[str, list[str]] = {}
        for pool, found in sorted(codes.items()):
            if pool == default_pool:
                found = {c for c in found if c not in CONTINENT_POINTS or c in own}
            if found:
                rules[pool] = sorted(found)
        return rules

    def _health_from(self, monitor: int) -> Optional[dict[str, Any]]:
        if monitor == self._monitor():
            return self.spec.health.as_props() if self.spec.health else None
        if monitor == BUNNY_MONITOR["http"]:
            return {"protocol": "http", "port": 80, "path": "/"}
        if monitor == BUNNY_MONITOR["ping"]:
            return {"protocol": "icmp", "port": None, "path": None}
        return None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False
