"""The shared record model of a geo-routed record set: the inputs validated (every problem at
once) and normalised into a `GeoRecordSpec`, the region codes (continents and countries) and the
pool notes that let a read recover pool names. Pure: no network, no Pulumi engine.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Optional

from pulumi.output import Unknown

PROVIDERS = ("gcore", "bunny")
DEFAULT_API_URLS = {"gcore": "https://api.gcore.com/dns", "bunny": "https://api.bunny.net"}
RECORD_TYPES = ("A", "AAAA")
HEALTH_PROTOCOLS = ("http", "https", "tcp", "icmp")
DEFAULT_TTL = 300
# Inputs whose change needs a new record set; every other input is updated in place.
REPLACE_KEYS = ("provider", "zone", "name", "type")
UPDATE_KEYS = ("api_url", "token", "ttl", "pools", "rules", "default_pool", "health")
INPUT_KEYS = REPLACE_KEYS + UPDATE_KEYS
SECRET_KEYS = ("token",)
# Representative points (latitude, longitude) for Bunny's distance-based routing.
CONTINENT_POINTS: dict[str, tuple[float, float]] = {
    "AF": (7.19, 21.09),
    "AN": (-80.0, 0.0),
    "AS": (34.05, 100.62),
    "EU": (50.0, 10.0),
    "NA": (45.0, -100.0),
    "OC": (-25.27, 133.78),
    "SA": (-15.6, -56.1),
}
CONTINENTS = tuple(sorted(CONTINENT_POINTS))
POOL_NOTE = "outpost pool="
_PROVIDER_KEY = "__provider"
_UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # pulumi.runtime.rpc.UNKNOWN (preview placeholder)
_LABEL_RE = re.compile(r"^(\*|[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$")
_ZONE_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")


class GeoDNSError(Exception):
    """A GeoDNS operation failed; the message says which call, on which record set, and why."""


class ApiError(GeoDNSError):
    """The API answered with an error status (kept in `status`)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Health:
    """A normalised health check: protocol, port (None for icmp), path (http/https only)."""

    protocol: str
    port: Optional[int]
    path: Optional[str]

    @classmethod
    def from_props(cls, raw: Optional[Mapping[str, Any]]) -> Optional["Health"]:
        if not raw:
            return None
        port = _as_int(raw.get("port"))
        protocol = str(raw.get("protocol") or ("https" if port == 443 else "http")).lower()
        if protocol == "icmp":
            return cls("icmp", None, None)
        if protocol == "tcp":
            return cls("tcp", port, None)
        return cls(protocol, port if port is not None else (443 if protocol == "https" else 80),
                   str(raw.get("path") or "/"))

    def as_props(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "port": self.port, "path": self.path}


@dataclass(frozen=True)
class GeoRecordSpec:
    """The validated, normalised inputs of one geo-routed record set."""

    provider: str
    api_url: str
    token: str
    zone: str
    name: str
    type: str
    ttl: int
    pools: tuple[tuple[str, tuple[str, ...]], ...]
    rules: tuple[tuple[str, tuple[str, ...]], ...]
    default_pool: str
    health: Optional[Health] = None

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> "GeoRecordSpec":
        """Build from engine props; raises GeoDNSError listing every problem."""
        failures = validate(props)
        if failures:
            raise GeoDNSError("invalid GeoDNS record: " + "; ".join(f"{k}: {r}" for k, r in failures))
        norm = normalize(props)
        return cls(
            provider=norm["provider"],
            api_url=norm["api_url"],
            token=str(norm["token"]),
            zone=norm["zone"],
            name=norm["name"],
            type=norm["type"],
            ttl=norm["ttl"],
            pools=tuple((p, tuple(a)) for p, a in norm["pools"].items()),
            rules=tuple((p, tuple(c)) for p, c in norm["rules"].items()),
            default_pool=norm["default_pool"],
            health=Health.from_props(norm["health"]),
        )

    @property
    def fqdn(self) -> str:
        return self.zone if self.name == "@" else f"{self.name}.{self.zone}"

    @property
    def record_id(self) -> str:
        return f"{self.provider}:{self.zone}/{self.name}/{self.type}"

    def pool_map(self) -> dict[str, tuple[str, ...]]:
        return dict(self.pools)

    def rule_map(self) -> dict[str, tuple[str, ...]]:
        return dict(self.rules)

    def answers(self) -> list[tuple[str, str]]:
        """(pool, address) for every address, in a stable order."""
        return [(pool, addr) for pool, addrs in self.pools for addr in addrs]

    def outputs(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "api_url": self.api_url,
            "token": self.token,
            "zone": self.zone,
            "name": self.name,
            "type": self.type,
            "ttl": self.ttl,
            "pools": {p: list(a) for p, a in self.pools},
            "rules": {p: list(c) for p, c in self.rules},
            "default_pool": self.default_pool,
            "health": self.health.as_props() if self.health else None,
        }


def _as_int(value: Any) -> Any:
    """Integral floats (how protobuf carries numbers) → int; anything else unchanged."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _is_unknown(value: Any) -> bool:
    """True for a value the engine does not know yet (during preview)."""
    return isinstance(value, Unknown) or (isinstance(value, str) and value == _UNKNOWN)


def _contains_unknown(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(_contains_unknown(k) or _contains_unknown(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_contains_unknown(v) for v in value)
    return _is_unknown(value)


def _address(value: str, rtype: Optional[str]) -> str:
    """VALUE as a canonical address of record type RTYPE (None: either); ValueError when it is not one."""
    try:
        addr = ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    if rtype is not None and (rtype == "A") != (addr.version == 4):
        raise ValueError(f"{value!r} is an IPv{addr.version} address, a {rtype} record needs "
                         f"IPv{4 if rtype == 'A' else 6}")
    return addr.compressed


def _country(code: str) -> Optional[tuple[float, float]]:
    """The centre of ISO alpha-2 country CODE, or None when CODE is no such country."""
    from countryinfo import CountryInfo  # imported lazily: it loads its data files on first use

    try:
        info = CountryInfo(code)
    except (LookupError, ValueError):
        return None
    if info.iso(2) != code:  # countryinfo also resolves names and spellings ("UK" → GB)
        return None
    lat, lng = info.latlng()[:2]
    return float(lat), float(lng)


def code_problem(code: Any) -> Optional[str]:
    """Why CODE is not a continent or country code, or None when it is one."""
    if not isinstance(code, str) or not re.fullmatch(r"[A-Za-z]{2}", code.strip()):
        return f"{code!r} is not a two-letter continent ({' '.join(CONTINENTS)}) or ISO country code"
    upper = code.strip().upper()
    if upper in CONTINENT_POINTS or _country(upper) is not None:
        return None
    return f"{code!r} is neither a continent ({' '.join(CONTINENTS)}) nor an ISO 3166-1 alpha-2 country"


def _sorted_addresses(addrs: Iterable[str]) -> list[str]:
    return sorted(set(addrs), key=lambda a: ipaddress.ip_address(a).packed)


def _norm_pools(pools: Any, rtype: Any) -> Any:
    if not isinstance(pools, Mapping) or _contains_unknown(pools):
        return pools
    try:
        return {str(p): _sorted_addresses(_address(a, str(rtype)) for a in addrs)
                for p, addrs in sorted(pools.items())}
    except (ValueError, TypeError):
        return pools


def _norm_rules(rules: Any) -> Any:
    if not isinstance(rules, Mapping) or _contains_unknown(rules):
        return rules
    try:
        return {str(p): sorted({str(c).strip().upper() for c in codes}) for p, codes in sorted(rules.items())}
    except TypeError:
        return rules


def _norm_health(health: Any) -> Any:
    if not isinstance(health, Mapping) or _contains_unknown(health):
        return health or None
    try:
        spec = Health.from_props(health)
    except (TypeError, ValueError):
        return health
    return spec.as_props() if spec else None


def normalize(props: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs in their canonical form (defaults filled, codes uppercase, lists sorted).

    Anything unknown (preview) or malformed is passed through unchanged for `validate` to report."""
    provider = props.get("provider")
    name = props.get("name")
    api_url = props.get("api_url") or DEFAULT_API_URLS.get(str(provider))
    return {
        "provider": provider,
        "api_url": api_url.rstrip("/") if isinstance(api_url, str) and not _is_unknown(api_url) else api_url,
        "token": props.get("token"),
        "zone": props["zone"].strip().rstrip(".").lower() if isinstance(props.get("zone"), str) else props.get("zone"),
        "name": name.strip().rstrip(".").lower() if isinstance(name, str) else name,
        "type": props.get("type") or "A",
        "ttl": _as_int(props.get("ttl") if props.get("ttl") is not None else DEFAULT_TTL),
        "pools": _norm_pools(props.get("pools"), props.get("type") or "A"),
        "rules": _norm_rules(props.get("rules") if props.get("rules") is not None else {}),
        "default_pool": props.get("default_pool"),
        "health": _norm_health(props.get("health")),
    }


def _scalar_problems(props: Mapping[str, Any]) -> list[tuple[str, str]]:
    failures: list[tuple[str, str]] = []
    provider, rtype, ttl = props.get("provider"), props.get("type") or "A", _as_int(props.get("ttl"))
    if not _is_unknown(provider) and provider not in PROVIDERS:
        failures.append(("provider", f"provider must be one of {', '.join(PROVIDERS)} (got {provider!r})"))
    if not _is_unknown(rtype) and rtype not in RECORD_TYPES:
        failures.append(("type", f"type must be A or AAAA (got {rtype!r})"))
    if ttl is not None and not _is_unknown(ttl) and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1):
        failures.append(("ttl", f"ttl must be a whole number of seconds, at least 1 (got {ttl!r})"))
    token = props.get("token")
    if not _is_unknown(token) and (not isinstance(token, str) or not token.strip()):
        failures.append(("token", "token is required (the provider's API token, from outpost:secrets)"))
    api_url = props.get("api_url")
    if api_url is not None and not _is_unknown(api_url):
        parts = urllib.parse.urlsplit(str(api_url))
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            failures.append(("api_url", f"api_url must be an http(s) URL without credentials (got {api_url!r})"))
    return failures


def _name_problems(props: Mapping[str, Any]) -> list[tuple[str, str]]:
    failures: list[tuple[str, str]] = []
    zone, name = props.get("zone"), props.get("name")
    if not _is_unknown(zone) and (not isinstance(zone, str) or not _ZONE_RE.match(zone.strip().rstrip(".").lower())):
        failures.append(("zone", f"zone must be a domain name such as example.org (got {zone!r})"))
    if not _is_unknown(name) and (
        not isinstance(name, str) or (name.strip() != "@" and not _LABEL_RE.match(name.strip().rstrip(".").lower()))
    ):
        failures.append(("name", f"name must be '@' for the zone apex or a label such as www (got {name!r})"))
    return failures


def _listed(value: Any, key: str, empty: str) -> tuple[list[Any], list[tuple[str, str]]]:
    """One pool's list under KEY: (its items, no problem); nothing to check yet while the engine
    does not know it; ([], [(KEY, EMPTY)]) when it is not a non-empty list."""
    if _contains_unknown(value):
        return [], []
    if not isinstance(value, (list, tuple)) or not value:
        return [], [(key, empty)]
    return list(value), []


def _pool_problems(pools: Any, rtype: Optional[str]) -> list[tuple[str, str]]:
    if _is_unknown(pools):
        return []
    if not isinstance(pools, Mapping) or not pools:
        return [("pools", "pools must map each pool name to a list of addresses, e.g. {eu: [192.0.2.1]}")]
    failures: list[tuple[str, str]] = []
    owner: dict[str, str] = {}
    for pool, addrs in pools.items():
        addrs, problems = _listed(addrs, "pools", f"pool {pool!r} must list at least one address")
        failures += problems
        for raw in addrs:
            try:
                addr = _address(raw, rtype)
            except ValueError as exc:
                failures.append(("pools", f"pool {pool!r}: {exc}"))
                continue
            if owner.get(addr, pool) != pool:
                failures.append(("pools", f"address {addr} is in pools {owner[addr]!r} and {pool!r}; an address "
                                 "may be in one pool only (to fall back to a pool, name it as default_pool)"))
            owner[addr] = pool
    return failures


def _rule_problems(rules: Any, pools: Any) -> list[tuple[str, str]]:
    if _is_unknown(rules) or rules is None:
        return []
    if not isinstance(rules, Mapping):
        return [("rules", "rules must map pool names to lists of continent or country codes")]
    failures: list[tuple[str, str]] = []
    owner: dict[str, str] = {}
    for pool, codes in rules.items():
        if isinstance(pools, Mapping) and pool not in pools:
            failures.append(("rules", f"rule for pool {pool!r}, which is not in pools ({', '.join(map(str, pools))})"))
        codes, problems = _listed(codes, "rules",
                                  f"rule for pool {pool!r} must list at least one continent or country code")
        failures += problems
        for code in codes:
            if (problem := code_problem(code)) is not None:
                failures.append(("rules", f"pool {pool!r}: {problem}"))
                continue
            upper = code.strip().upper()
            if owner.get(upper, pool) != pool:
                failures.append(("rules", f"{upper} is in the rules of pools {owner[upper]!r} and {pool!r}; "
                                 "each region may route to one pool only"))
            owner[upper] = pool
    return failures


def _default_problems(props: Mapping[str, Any]) -> list[tuple[str, str]]:
    pools, rules, default = props.get("pools"), props.get("rules") or {}, props.get("default_pool")
    if _is_unknown(default) or _is_unknown(pools) or not isinstance(pools, Mapping):
        return []
    failures: list[tuple[str, str]] = []
    if not isinstance(default, str) or default not in pools:
        failures.append(("default_pool", f"default_pool must name one of the pools ({', '.join(map(str, pools))}), "
                         f"got {default!r}"))
    if isinstance(rules, Mapping) and not _contains_unknown(rules):
        for pool in pools:
            if pool != default and pool not in rules:
                failures.append(("rules", f"pool {pool!r} has no rule and is not the default_pool, so it would "
                                 "never answer; give it continents or countries"))
    return failures


def _health_problems(health: Any) -> list[tuple[str, str]]:
    if health is None or _contains_unknown(health):
        return []
    if not isinstance(health, Mapping):
        return [("health", "health must be a mapping such as {path: /, port: 443}")]
    failures: list[tuple[str, str]] = []
    unknown = sorted(set(health) - {"path", "port", "protocol"})
    if unknown:
        failures.append(("health", f"unknown health keys {', '.join(unknown)}; known: path, port, protocol"))
    protocol = health.get("protocol")
    if protocol is not None and str(protocol).lower() not in HEALTH_PROTOCOLS:
        failures.append(("health", f"health.protocol must be one of {', '.join(HEALTH_PROTOCOLS)} (got {protocol!r})"))
    port = _as_int(health.get("port"))
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        failures.append(("health", f"health.port must be a port number 1-65535 (got {port!r})"))
    if port is None and str(protocol).lower() == "tcp":
        failures.append(("health", "health.port is required for a tcp check"))
    path = health.get("path")
    if path is not None and (not isinstance(path, str) or not path.startswith("/")):
        failures.append(("health", f"health.path must start with '/' (got {path!r})"))
    return failures


def validate(props: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every problem with the inputs, as (property, reason). Unknown values (preview) pass."""
    failures = [(k, f"unknown property {k!r}; known: {', '.join(INPUT_KEYS)}")
                for k in props if k not in INPUT_KEYS and k != _PROVIDER_KEY]
    rtype = props.get("type") or "A"
    failures += _scalar_problems(props)
    failures += _name_problems(props)
    failures += _pool_problems(props.get("pools"), rtype if rtype in RECORD_TYPES else None)
    failures += _rule_problems(props.get("rules"), props.get("pools"))
    failures += _default_problems(props)
    failures += _health_problems(props.get("health"))
    return failures


def _pool_note(pool: str, default: bool) -> str:
    return f"{POOL_NOTE}{pool}" + (" default" if default else "")


def _parse_pool_note(note: Any) -> tuple[Optional[str], bool]:
    """(pool, is_default) from an `outpost pool=<pool>[ default]` note, (None, False) otherwise."""
    if not isinstance(note, str) or not note.startswith(POOL_NOTE):
        return None, False
    rest = note[len(POOL_NOTE):]
    if rest.endswith(" default"):
        return rest[: -len(" default")], True
    return rest, False


def _split_codes(codes: Iterable[str]) -> tuple[list[str], list[str]]:
    """(continents, countries), each sorted."""
    codes = sorted(set(codes))
    return [c for c in codes if c in CONTINENT_POINTS], [c for c in codes if c not in CONTINENT_POINTS]
