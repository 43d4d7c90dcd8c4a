"""A local stand-in for the Hetzner Cloud API's one read a preview of outpost's cloud stacks makes:
`GET /v1/zones/{id_or_name}`, the lookup behind `hcloud:index/getZone:getZone` (a stack with
`outpost:dns.create_zone: false`). Everything else a preview does with hcloud resources (Check,
Diff) stays inside the provider; any other request is answered 404 `not_found` and kept in
`unexpected`, so a test sees it.

The real provider is pointed here with its `hcloud:endpoint` config (terraform-provider-hcloud
v1.66.1 hcloud/provider.go and hcloud/plugin_provider.go: `endpoint`, default from
HCLOUD_ENDPOINT; pulumi-hcloud v1.39.1 schema.json: config `endpoint`), so the API root is
`<url>/v1`. Shaped from the client the provider links, hcloud-go v2.44.0 (Go module cache):
- hcloud/zone.go `getByIDOrName`: GET /zones/{idOrName}; a `not_found` error means "no such
  zone" (the data source then reports it as not found);
- hcloud/schema/zone.go `ZoneGetResponse` {"zone": Zone} and `Zone`'s fields; the values follow
  hcloud/zone_test.go's example response (docs.hetzner.cloud/reference/cloud#zones-get-a-zone);
- hcloud/schema/error.go `ErrorResponse` {"error": {"code", "message", "details"}};
- hcloud/client.go: `Authorization: Bearer <token>`; a wrong token gets 401 `unauthorized`.
"""

from __future__ import annotations

import itertools
from typing import Any
from urllib.parse import unquote

from tests.dns.fake_geodns_api import FakeApi, Response

NAMESERVERS = ["hydrogen.ns.hetzner.com.", "oxygen.ns.hetzner.com.", "helium.ns.hetzner.de."]


class FakeHcloud(FakeApi):
    """Zones by name; `requests` lists every (method, path) asked, `unexpected` the ones not served."""

    def __init__(self, token: str, zones: tuple[str, ...] = ()) -> None:
        super().__init__(token)
        ids = itertools.count(4711)
        self.zones = {name: self._zone(next(ids), name) for name in zones}
        self.unexpected: list[tuple[str, str]] = []

    @property
    def endpoint(self) -> str:
        return f"{self.url}/v1"

    @staticmethod
    def _zone(zone_id: int, name: str) -> dict[str, Any]:
        return {
            "id": zone_id, "name": name, "created": "2016-01-30T23:55:00+00:00", "mode": "primary",
            "ttl": 10800, "labels": {}, "protection": {"delete": True}, "primary_nameservers": [],
            "authoritative_nameservers": {"assigned": NAMESERVERS, "delegated": NAMESERVERS,
                                          "delegation_last_check": "2016-01-30T23:55:00+00:00",
                                          "delegation_status": "valid"},
            "registrar": "hetzner", "status": "ok", "record_count": 4,
        }

    def authorized(self, headers: Any) -> bool:
        return headers.get("Authorization") == f"Bearer {self.token}"

    def unauthorized(self) -> Response:
        return self.error(401, "unable to authenticate", code="unauthorized")

    def error(self, status: int, message: str, field: str = "", code: str = "") -> Response:
        codes = {400: "invalid_input", 401: "unauthorized", 404: "not_found"}
        return status, {"error": {"code": code or codes.get(status, "service_error"), "message": message,
                                  "details": {}}}

    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Response:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "zones"]:
            wanted = parts[2]
            for zone in self.zones.values():
                if wanted in (zone["name"], str(zone["id"])):
                    return 200, {"zone": zone}
            return self.error(404, "zone not found")
        self.unexpected.append((method, path))
        return self.error(404, f"not served by the stand-in: {method} {path}")
