"""Local stand-ins for the Gcore DNS API v2 and the Bunny DNS API, enough for components/geodns/.

Each fake is a stdlib `http.server` in a daemon thread on 127.0.0.1 (free port) with in-memory
state, checking authentication and rejecting malformed bodies with HTTP 400 and a message, the
way the real APIs do. Shaped from these published sources (not from guesses):

Gcore (base https://api.gcore.com/dns):
- Gcore API reference, RRsets: GET/POST/PUT/DELETE /dns/v2/zones/{zoneName}/{rrsetName}/{rrsetType}
  (gcore.com/docs/api-reference/dns/rrsets/create-rrset, .../update-rrset, .../get-rrset);
  "Authorization: APIKey <token>" (the reference: "include the word apikey, followed by a single
  space and then your token").
- G-Core/gcore-python src/gcore/types/dns/zones/rrset_create_params.py and dns_output_rrset.py
  (generated from Gcore's OpenAPI): resource_records[{content, enabled, meta}], record meta keys
  asn/continents/countries/latlong/backup/notes/weight/ip/default, RRset meta `failover`
  {protocol HTTP|TCP|UDP|ICMP, port 1-65535, frequency 10-3600, timeout 1-10, method/url/tls/
  host/http_status_code/regexp for HTTP only, command for TCP/UDP}, pickers type enum
  geodns/asn/country/continent/region/ip/geodistance/weighted_shuffle/default/first_n.
- G-Core/gcore-dns-sdk-go client.go / client_dto.go: paths under /v2/zones, error body
  {"error": "..."}, DELETE of a missing RRset is 404.
- dnscontrol docs (provider/gcore): continent codes as,na,an,sa,oc,eu,af; countries ISO alpha-2.

Bunny (base https://api.bunny.net):
- docs.bunny.net API reference, DNS Zone: GET /dnszone (Items, CurrentPage, TotalItems,
  HasMoreItems; page/perPage), GET /dnszone/{id} (zone with Records), PUT /dnszone/{id}/records
  (add, 201 + record), POST /dnszone/{id}/records/{recordId} (update, 204),
  DELETE /dnszone/{id}/records/{recordId} (204); header "AccessKey: <api-key>"; error body
  {"ErrorKey", "Field", "Message"}.
- BunnyWay/terraform-provider-bunnynet internal/api/dnsrecord.go, dnszone.go, errors.go (record
  fields, status codes, Message in errors); StackExchange/dnscontrol providers/bunnydns
  (record Type numbers A=0 AAAA=1 ... NS=12, apex Name ""); enums SmartRoutingType
  None=0/Latency=1/Geolocation=2, MonitorType None=0/Ping=1/Http=2(/Monitor=3).

Not documented and chosen here: the exact text of 401 bodies, Gcore's status for creating an RRset
that exists (409 here) and Bunny's TTL and weight ranges (not enforced beyond being integers).
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import re
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, unquote, urlsplit

Response = tuple[int, Any]


class BadRequest(Exception):
    """Raised by validators; becomes HTTP 400 with the message."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the default stderr log
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        status, payload = self.server.api.dispatch(self.command, parts.path, parse_qs(parts.query), self.headers, raw)
        body = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: "FakeApi") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api


class FakeApi:
    """Base: a server thread, a request log, a lock around the in-memory state."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []
        self._server: Optional[_Server] = None

    def __enter__(self) -> "FakeApi":
        self._server = _Server(self)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "use the fake as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def dispatch(self, method: str, path: str, query: dict[str, list[str]], headers: Any, raw: bytes) -> Response:
        with self.lock:
            self.requests.append((method, path))
            if not self.authorized(headers):
                return self.unauthorized()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                return self.error(400, "request body is not valid JSON")
            try:
                return self.route(method, path, query, body)
            except BadRequest as exc:
                return self.error(400, str(exc), exc.field)

    # subclasses
    def authorized(self, headers: Any) -> bool:
        raise NotImplementedError

    def unauthorized(self) -> Response:
        raise NotImplementedError

    def error(self, status: int, message: str, field: str = "") -> Response:
        raise NotImplementedError

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Response:
        raise NotImplementedError


def _ip(value: Any, version: int, where: str) -> str:
    try:
        addr = ipaddress.ip_address(str(value))
    except ValueError:
        raise BadRequest(f"{where}: {value!r} is not a valid IP address", where) from None
    if addr.version != version:
        raise BadRequest(f"{where}: {value!r} is not an IPv{version} address", where)
    return str(value)


def _int_in(value: Any, low: int, high: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise BadRequest(f"{where} must be an integer", where)
    if not low <= value <= high:
        raise BadRequest(f"{where} must be between {low} and {high}", where)
    return int(value)


# ------------------------------------------------------------------------------------------------
# Gcore DNS API v2


GCORE_PICKERS = {"geodns", "asn", "country", "continent", "region", "ip", "geodistance",
                 "weighted_shuffle", "default", "first_n"}
GCORE_RECORD_META = {"asn", "continents", "countries", "latlong", "backup", "notes", "weight", "ip",
                     "default", "fallback"}
GCORE_CONTINENTS = {"af", "an", "as", "eu", "na", "oc", "sa"}
GCORE_FAILOVER_PROTOCOLS = {"HTTP", "TCP", "UDP", "ICMP"}
GCORE_HTTP_ONLY = {"method", "url", "tls", "host", "http_status_code"}
_RRSET_PATH = re.compile(r"^/v2/zones/([^/]+)/([^/]+)/([^/]+)$")


class FakeGcore(FakeApi):
    """Gcore DNS API v2: zones hold RRsets keyed by (fqdn, type)."""

    def __init__(self, token: str, zones: tuple[str, ...] = ()) -> None:
        super().__init__(token)
        self.zones: dict[str, dict[tuple[str, str], dict[str, Any]]] = {z: {} for z in zones}
        self._ids = itertools.count(1)

    # --- test helpers ---------------------------------------------------------------------------

    def rrset(self, zone: str, fqdn: str, rtype: str) -> Optional[dict[str, Any]]:
        with self.lock:
            return self.zones.get(zone, {}).get((fqdn, rtype))

    def put_rrset(self, zone: str, fqdn: str, rtype: str, body: dict[str, Any]) -> None:
        """Store an RRset directly (as if made in Gcore's panel), validated like a POST."""
        with self.lock:
            self.zones[zone][(fqdn, rtype)] = self._stored(fqdn, rtype, self._validated(body, rtype))

    # --- protocol -------------------------------------------------------------------------------

    def authorized(self, headers: Any) -> bool:
        scheme, _, token = str(headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "apikey" and token == self.token

    def unauthorized(self) -> Response:
        return 401, {"error": "invalid api key"}

    def error(self, status: int, message: str, field: str = "") -> Response:
        return status, {"error": message}

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Response:
        match = _RRSET_PATH.match(path)
        if not match:
            return self.error(404, f"no route {method} {path}")
        zone, fqdn, rtype = (unquote(p) for p in match.groups())
        if zone not in self.zones:
            return self.error(404, f"zone {zone} not found")
        if fqdn != zone and not fqdn.endswith("." + zone):
            raise BadRequest(f"rrset name {fqdn} is not inside zone {zone}")
        if rtype not in ("A", "AAAA", "NS", "CNAME", "MX", "TXT", "SRV", "CAA", "HTTPS", "SVCB"):
            raise BadRequest(f"unsupported rrset type {rtype}")
        handler: dict[str, Callable[..., Response]] = {
            "GET": self._get, "POST": self._create, "PUT": self._replace, "DELETE": self._delete,
        }
        if method not in handler:
            return self.error(405, f"method {method} not allowed")
        return handler[method](self.zones[zone], fqdn, rtype, body)

    def _get(self, rrsets: dict, fqdn: str, rtype: str, _body: Any) -> Response:
        found = rrsets.get((fqdn, rtype))
        return (200, found) if found is not None else self.error(404, "record is not found")

    def _create(self, rrsets: dict, fqdn: str, rtype: str, body: Any) -> Response:
        if (fqdn, rtype) in rrsets:
            return self.error(409, f"rrset {fqdn} {rtype} already exists")
        rrsets[(fqdn, rtype)] = self._stored(fqdn, rtype, self._validated(body, rtype))
        return 200, rrsets[(fqdn, rtype)]

    def _replace(self, rrsets: dict, fqdn: str, rtype: str, body: Any) -> Response:
        if (fqdn, rtype) not in rrsets:
            return self.error(404, "record is not found")
        rrsets[(fqdn, rtype)] = self._stored(fqdn, rtype, self._validated(body, rtype))
        return 200, rrsets[(fqdn, rtype)]

    def _delete(self, rrsets: dict, fqdn: str, rtype: str, _body: Any) -> Response:
        if rrsets.pop((fqdn, rtype), None) is None:
            return self.error(404, "record is not found")
        return 200, {}

    def _stored(self, fqdn: str, rtype: str, body: dict[str, Any]) -> dict[str, Any]:
        records = [{"id": next(self._ids), "enabled": r.get("enabled", True), "meta": r.get("meta") or {},
                    "content": r["content"]} for r in body["resource_records"]]
        return {
            "name": fqdn, "type": rtype, "ttl": body.get("ttl", 3600), "resource_records": records,
            "pickers": body.get("pickers") or [], "meta": body.get("meta") or {}, "filter_set_id": None,
            "updated_at": datetime.now(timezone.utc).isoformat(), "warning": "", "warnings": [],
        }

    # --- validation -----------------------------------------------------------------------------

    def _validated(self, body: Any, rtype: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        unknown = set(body) - {"ttl", "resource_records", "pickers", "meta"}
        if unknown:
            raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}")
        if "ttl" in body:
            _int_in(body["ttl"], 0, 2147483647, "ttl")
        records = body.get("resource_records")
        if not isinstance(records, list) or not records:
            raise BadRequest("resource_records is required and must not be empty")
        contents = [self._check_record(r, rtype, i) for i, r in enumerate(records)]
        if len(set(contents)) != len(contents):
            raise BadRequest("resource_records contain duplicate content")
        for i, picker in enumerate(body.get("pickers") or []):
            self._check_picker(picker, i)
        self._check_rrset_meta(body.get("meta") or {})
        return body

    @staticmethod
    def _check_record(record: Any, rtype: str, i: int) -> str:
        where = f"resource_records[{i}]"
        if not isinstance(record, dict) or not isinstance(record.get("content"), list) or not record["content"]:
            raise BadRequest(f"{where}.content is required and must be a non-empty array")
        if rtype in ("A", "AAAA"):
            if len(record["content"]) != 1:
                raise BadRequest(f"{where}.content must hold one address for {rtype}")
            _ip(record["content"][0], 4 if rtype == "A" else 6, f"{where}.content")
        if "enabled" in record and not isinstance(record["enabled"], bool):
            raise BadRequest(f"{where}.enabled must be a boolean")
        FakeGcore._check_record_meta(record.get("meta") or {}, where)
        return json.dumps(record["content"])

    @staticmethod
    def _check_record_meta(meta: Any, where: str) -> None:
        if not isinstance(meta, dict):
            raise BadRequest(f"{where}.meta must be an object")
        unknown = set(meta) - GCORE_RECORD_META
        if unknown:
            raise BadRequest(f"{where}.meta: unknown keys {', '.join(sorted(unknown))}")
        continents = meta.get("continents", [])
        if not isinstance(continents, list) or any(str(c).lower() not in GCORE_CONTINENTS for c in continents):
            raise BadRequest(f"{where}.meta.continents: invalid continent in {continents!r}")
        countries = meta.get("countries", [])
        if not isinstance(countries, list) or any(not re.fullmatch(r"[A-Za-z]{2}", str(c)) for c in countries):
            raise BadRequest(f"{where}.meta.countries: invalid country code in {countries!r}")
        if "default" in meta and not isinstance(meta["default"], bool):
            raise BadRequest(f"{where}.meta.default must be a boolean")
        if "notes" in meta and not isinstance(meta["notes"], str):
            raise BadRequest(f"{where}.meta.notes must be a string")

    @staticmethod
    def _check_picker(picker: Any, i: int) -> None:
        if not isinstance(picker, dict) or picker.get("type") not in GCORE_PICKERS:
            raise BadRequest(f"pickers[{i}].type must be one of {', '.join(sorted(GCORE_PICKERS))}")
        if "strict" in picker and not isinstance(picker["strict"], bool):
            raise BadRequest(f"pickers[{i}].strict must be a boolean")
        if "limit" in picker:
            _int_in(picker["limit"], 0, 2147483647, f"pickers[{i}].limit")

    @staticmethod
    def _check_rrset_meta(meta: Any) -> None:
        if not isinstance(meta, dict) or set(meta) - {"failover", "geodns_link"}:
            raise BadRequest("meta: only failover and geodns_link are allowed on an rrset")
        failover = meta.get("failover")
        if failover is None:
            return
        if not isinstance(failover, dict) or failover.get("protocol") not in GCORE_FAILOVER_PROTOCOLS:
            raise BadRequest("meta.failover.protocol is required: HTTP, TCP, UDP or ICMP")
        _int_in(failover.get("port"), 1, 65535, "meta.failover.port")
        _int_in(failover.get("frequency"), 10, 3600, "meta.failover.frequency")
        _int_in(failover.get("timeout"), 1, 10, "meta.failover.timeout")
        if failover["protocol"] != "HTTP" and GCORE_HTTP_ONLY & set(failover):
            raise BadRequest(f"meta.failover: {', '.join(sorted(GCORE_HTTP_ONLY & set(failover)))} "
                             "only apply to protocol HTTP")
        if "tls" in failover and not isinstance(failover["tls"], bool):
            raise BadRequest("meta.failover.tls must be a boolean")


# ------------------------------------------------------------------------------------------------
# Bunny DNS API


BUNNY_TYPES = {"A": 0, "AAAA": 1, "CNAME": 2, "TXT": 3, "MX": 4, "Redirect": 5, "Flatten": 6, "PullZone": 7,
               "SRV": 8, "CAA": 9, "PTR": 10, "Script": 11, "NS": 12}
BUNNY_MONITOR_TYPES = {"None": 0, "Ping": 1, "Http": 2, "Monitor": 3}
BUNNY_SMART_ROUTING = {"None": 0, "Latency": 1, "Geolocation": 2}
_ZONES_PATH = re.compile(r"^/dnszone/?$")
_ZONE_PATH = re.compile(r"^/dnszone/(\d+)$")
_RECORDS_PATH = re.compile(r"^/dnszone/(\d+)/records$")
_RECORD_PATH = re.compile(r"^/dnszone/(\d+)/records/(\d+)$")


def _enum(value: Any, names: dict[str, int], where: str) -> int:
    """Bunny accepts enums as numbers or as their names."""
    if isinstance(value, str) and value in names:
        return names[value]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value in names.values():
        return int(value)
    raise BadRequest(f"{where} must be one of {', '.join(names)} (or its number)", where)


class FakeBunny(FakeApi):
    """Bunny DNS: numbered zones, each with a list of records."""

    def __init__(self, token: str, zones: tuple[str, ...] = (), max_page_size: int = 1000) -> None:
        super().__init__(token)
        self.zones: dict[int, dict[str, Any]] = {}
        self.max_page_size = max_page_size
        self._zone_ids = itertools.count(101)
        self._record_ids = itertools.count(5001)
        for domain in zones:
            self.add_zone(domain)

    # --- test helpers ---------------------------------------------------------------------------

    def add_zone(self, domain: str) -> int:
        with self.lock:
            zone_id = next(self._zone_ids)
            self.zones[zone_id] = {"Id": zone_id, "Domain": domain, "Records": [], "Nameserver1": "kiki.bunny.net",
                                   "Nameserver2": "coco.bunny.net", "DnsSecEnabled": False}
            return zone_id

    def zone_by_domain(self, domain: str) -> dict[str, Any]:
        with self.lock:
            return next(z for z in self.zones.values() if z["Domain"] == domain)

    def records(self, domain: str, name: str, rtype: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.zone_by_domain(domain)["Records"]
                    if r["Name"] == name and r["Type"] == BUNNY_TYPES[rtype]]

    def add_record(self, domain: str, body: dict[str, Any]) -> dict[str, Any]:
        """Add a record directly (as if made in Bunny's panel), validated like a PUT."""
        with self.lock:
            zone = self.zone_by_domain(domain)
            record = self._record(body, next(self._record_ids))
            zone["Records"].append(record)
            return record

    # --- protocol -------------------------------------------------------------------------------

    def authorized(self, headers: Any) -> bool:
        return headers.get("AccessKey") == self.token

    def unauthorized(self) -> Response:
        return 401, {"Message": "Authorization has been denied for this request."}

    def error(self, status: int, message: str, field: str = "") -> Response:
        key = "validation_error" if status == 400 else "not_found" if status == 404 else "error"
        return status, {"ErrorKey": key, "Field": field, "Message": message}

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Response:
        if _ZONES_PATH.match(path) and method == "GET":
            return self._list_zones(query)
        if (m := _ZONE_PATH.match(path)) and method == "GET":
            zone = self.zones.get(int(m.group(1)))
            return (200, zone) if zone else self.error(404, "The requested DNS zone was not found", "Id")
        if (m := _RECORDS_PATH.match(path)) and method == "PUT":
            return self._add(int(m.group(1)), body)
        if m := _RECORD_PATH.match(path):
            if method == "POST":
                return self._update(int(m.group(1)), int(m.group(2)), body)
            if method == "DELETE":
                return self._delete(int(m.group(1)), int(m.group(2)))
        return self.error(404, f"no route {method} {path}")

    def _list_zones(self, query: dict[str, list[str]]) -> Response:
        page = int((query.get("page") or ["1"])[0])
        per_page = min(int((query.get("perPage") or ["1000"])[0]), self.max_page_size)
        zones = [{k: v for k, v in z.items()} for _, z in sorted(self.zones.items())]
        items = zones[(page - 1) * per_page: page * per_page]
        return 200, {"Items": items, "CurrentPage": page, "TotalItems": len(zones),
                     "HasMoreItems": page * per_page < len(zones)}

    def _add(self, zone_id: int, body: Any) -> Response:
        zone = self.zones.get(zone_id)
        if zone is None:
            return self.error(404, "The requested DNS zone was not found", "Id")
        record = self._record(body, next(self._record_ids))
        zone["Records"].append(record)
        return 201, record

    def _update(self, zone_id: int, record_id: int, body: Any) -> Response:
        zone = self.zones.get(zone_id)
        found = [r for r in zone["Records"] if r["Id"] == record_id] if zone else []
        if not found:
            return self.error(404, "The requested DNS record was not found", "Id")
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        merged = {**found[0], **{k: v for k, v in body.items() if k != "Id"}}
        found[0].update(self._record(merged, record_id))
        return 204, None

    def _delete(self, zone_id: int, record_id: int) -> Response:
        zone = self.zones.get(zone_id)
        before = len(zone["Records"]) if zone else 0
        if zone:
            zone["Records"] = [r for r in zone["Records"] if r["Id"] != record_id]
        if not zone or len(zone["Records"]) == before:
            return self.error(404, "The requested DNS record was not found", "Id")
        return 204, None

    @staticmethod
    def _record(body: Any, record_id: int) -> dict[str, Any]:
        """A validated, complete record as GET /dnszone/{id} lists it."""
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        rtype = _enum(body.get("Type"), BUNNY_TYPES, "Type")
        value = body.get("Value")
        if not isinstance(value, str) or not value:
            raise BadRequest("Value is required", "Value")
        if rtype in (0, 1):
            _ip(value, 4 if rtype == 0 else 6, "Value")
        name = body.get("Name", "")
        if not isinstance(name, str) or name.endswith("."):
            raise BadRequest("Name must be a host label relative to the zone", "Name")
        smart = _enum(body.get("SmartRoutingType", 0), BUNNY_SMART_ROUTING, "SmartRoutingType")
        lat, lng = body.get("GeolocationLatitude"), body.get("GeolocationLongitude")
        if smart == BUNNY_SMART_ROUTING["Geolocation"]:
            if not isinstance(lat, (int, float)) or not -90 <= lat <= 90:
                raise BadRequest("GeolocationLatitude must be between -90 and 90", "GeolocationLatitude")
            if not isinstance(lng, (int, float)) or not -180 <= lng <= 180:
                raise BadRequest("GeolocationLongitude must be between -180 and 180", "GeolocationLongitude")
        return {
            "Id": record_id, "Type": rtype, "Ttl": _int_in(body.get("Ttl", 300), 0, 2147483647, "Ttl"),
            "Value": value, "Name": name, "Weight": _int_in(body.get("Weight", 0), 0, 100, "Weight"),
            "Priority": 0, "Port": 0, "Flags": 0, "Tag": "", "Accelerated": False, "AcceleratedPullZoneId": 0,
            "LinkName": "", "IPGeoLocationInfo": None, "GeolocationInfo": None, "MonitorStatus": 0,
            "MonitorType": _enum(body.get("MonitorType", 0), BUNNY_MONITOR_TYPES, "MonitorType"),
            "GeolocationLatitude": float(lat or 0), "GeolocationLongitude": float(lng or 0),
            "EnviromentalVariables": [], "LatencyZone": None, "SmartRoutingType": smart,
            "Disabled": bool(body.get("Disabled", False)), "Comment": str(body.get("Comment") or ""),
            "AutoSslIssuance": False, "AccelerationStatus": 0,
        }
