"""Geo-routed DNS record sets at Gcore or Bunny DNS: one `GeoRecord` per `outpost:geodns` record.

Creates, in an existing zone at Gcore (DNS API v2) or Bunny DNS, ONE record set (name + type A or
AAAA) whose answer depends on where the client is: pools of addresses, rules that send continents
(AF AN AS EU NA OC SA) or ISO 3166-1 alpha-2 countries to a pool, a default pool that answers when
no rule matches, and an optional health check that takes a failing address out of the answers.
No Pulumi provider exists for either service, so this is a `pulumi.dynamic.ResourceProvider`
(`GeoRecordProvider`) talking to the published HTTP APIs with the standard library.

Layout:

- `GeoRecordSpec`: the validated, normalised inputs; `validate()` lists every problem at once;
- `GcoreBackend` / `BunnyBackend`: fetch / create / update / delete one record set, `render` what
  the API should hold, `canonical` to compare it with what it does hold, `to_inputs` to map a live
  set back onto the inputs (for drift);
- `GeoRecordProvider`: check / diff / create / read / update / delete;
- `GeoRecord` + `GeoRecordArgs`: the component (`outpost:dns:GeoRecord`), child `f"{name}-record"`.

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

import ipaddress
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi.dynamic
from pulumi.output import Unknown
from pulumi.runtime.rpc import unwrap_rpc_secret

from .provider_errors import MessageOnlyErrors

TYPE_TOKEN = "outpost:dns:GeoRecord"
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

GCORE_PICKERS = ({"type": "geodns", "strict": False}, {"type": "default", "strict": False})
GCORE_CHECK_FREQUENCY = 30
GCORE_CHECK_TIMEOUT = 5
BUNNY_TYPES = {"A": 0, "AAAA": 1}
BUNNY_GEOLOCATION = 2  # SmartRoutingType: 0 None, 1 Latency, 2 Geolocation
BUNNY_MONITOR = {"none": 0, "ping": 1, "http": 2}  # MonitorType
BUNNY_WEIGHT = 100
BUNNY_PAGE_SIZE = 1000
POOL_NOTE = "outpost pool="
HTTP_TIMEOUT = 30

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


# --------------------------------------------------------------------------------------------
# Inputs


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


def _pool_problems(pools: Any, rtype: Optional[str]) -> list[tuple[str, str]]:
    if _is_unknown(pools):
        return []
    if not isinstance(pools, Mapping) or not pools:
        return [("pools", "pools must map each pool name to a list of addresses, e.g. {eu: [192.0.2.1]}")]
    failures: list[tuple[str, str]] = []
    owner: dict[str, str] = {}
    for pool, addrs in pools.items():
        if _contains_unknown(addrs):
            continue
        if not isinstance(addrs, (list, tuple)) or not addrs:
            failures.append(("pools", f"pool {pool!r} must list at least one address"))
            continue
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
        if _contains_unknown(codes):
            continue
        if not isinstance(codes, (list, tuple)) or not codes:
            failures.append(("rules", f"rule for pool {pool!r} must list at least one continent or country code"))
            continue
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


# --------------------------------------------------------------------------------------------
# HTTP


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _api_message(body: bytes) -> str:
    """The human part of an API error body: Gcore sends {"error": ...}, Bunny {"Message": ...}."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300] or "(empty response)"
    if isinstance(data, Mapping):
        parts = [str(data[k]) for k in ("error", "message", "Message", "detail") if data.get(k)]
        extra = [f"{k}={data[k]}" for k in ("ErrorKey", "Field") if data.get(k)]
        if parts or extra:
            return " ".join(parts + ([f"({', '.join(extra)})"] if extra else []))
    return text[:300]


class HttpApi:
    """A JSON API at BASE_URL, authenticated by HEADERS; errors become ApiError/GeoDNSError."""

    def __init__(self, label: str, base_url: str, headers: Mapping[str, str], token: str) -> None:
        self.label = label
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers)
        self.token = token

    def call(self, method: str, path: str, body: Any = None, ok: Sequence[int] = (200,)) -> Any:
        """METHOD PATH with a JSON BODY; the decoded JSON answer (None when empty)."""
        status, payload = self._send(method, path, body)
        if status not in ok:
            message = _scrub(_api_message(payload), self.token)
            hint = " (check the API token)" if status in (401, 403) else ""
            raise ApiError(f"{self.label} API {method} {path} failed: HTTP {status}: {message}{hint}", status)
        if not payload.strip():
            return None
        try:
            return json.loads(payload)
        except ValueError:
            raise GeoDNSError(f"{self.label} API {method} {path} answered HTTP {status} with non-JSON data") from None

    def _send(self, method: str, path: str, body: Any) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json", **self.headers}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = _scrub(str(getattr(exc, "reason", exc)), self.token)
            raise GeoDNSError(
                f"{self.label} API {method} {path} failed: cannot reach {self.base_url}: {reason}"
            ) from None


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


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


# --------------------------------------------------------------------------------------------
# Gcore


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


# --------------------------------------------------------------------------------------------
# Bunny


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


Backend = GcoreBackend | BunnyBackend


def backend_for(spec: GeoRecordSpec) -> Backend:
    return GcoreBackend(spec) if spec.provider == "gcore" else BunnyBackend(spec)


# --------------------------------------------------------------------------------------------
# Operations (plain functions, no Pulumi engine needed; tested against a local API server)


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


# --------------------------------------------------------------------------------------------
# Dynamic provider


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


# --------------------------------------------------------------------------------------------
# Component


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
        props: dict[str, Any] = {
            "provider": args.provider,
            "api_url": args.api_url,
            "token": pulumi.Output.secret(args.token),
            "zone": args.zone,
            "name": args.name,
            "type": args.type,
            "ttl": args.ttl,
            "pools": args.pools,
            "rules": args.rules,
            "default_pool": args.default_pool,
            "health": args.health,
        }
        self.record_set = _GeoRecordSet(
            f"{name}-record",
            props,
            pulumi.ResourceOptions(
                parent=self,
                protect=opts.protect if opts is not None else None,
                additional_secret_outputs=list(SECRET_KEYS),
            ),
        )
        self.fqdn = pulumi.Output.all(self.record_set.zone, self.record_set.name).apply(
            lambda zn: zn[0] if zn[1] == "@" else f"{zn[1]}.{zn[0]}"
        )
        self.record_type = self.record_set.type
        self.pools = self.record_set.pools
        self.register_outputs({"fqdn": self.fqdn, "record_type": self.record_type, "pools": self.pools})
