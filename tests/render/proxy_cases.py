"""The proxy specs the render golden tests and the real-validator tests share."""

from components.render.proxy import ProxySpec, Route, Upstream

PEBBLE = "https://127.0.0.1:14000/dir"

# Three replicas with an active health check.
KOLLEKTIVKART = Upstream("kollektivkart", (8000, 8001, 8002), "/ready", "2s", "1s")
# One socket port, no health path: passive checks only.
EUGENE = Upstream("eugene", (8080,), None)
# Blue-green: ports are (blue, green); a switch file names the live one.
PEERBOOK = Upstream("peerbook", (20000, 20001), "/health", "500ms", "250ms", bluegreen=True)

ROUTES = (
    Route("kollektivkart.example.org", None, KOLLEKTIVKART),
    Route("api.example.org", "/eugene", EUGENE),
    Route("api.example.org", "/eugene/v2", KOLLEKTIVKART),
    Route("api.example.org", None, PEERBOOK),
    Route("paths-only.example.org", "/peerbook", PEERBOOK),
)
SIMPLE = (Route("app.example.org", None, KOLLEKTIVKART),)


def _spec(kind: str, tls: str, routes=ROUTES, **kw) -> ProxySpec:
    return ProxySpec(kind=kind, tls=tls, email=kw.pop("email", None), routes=routes, **kw)


CASES: dict[str, ProxySpec] = {
    "caddy-acme": _spec("caddy", "acme", SIMPLE + ROUTES[1:2], email="ops@example.org", acme_ca=PEBBLE),
    "caddy-acme-private-ca": _spec("caddy", "acme", SIMPLE, email="ops@example.org", acme_ca=PEBBLE,
                                   acme_ca_root="pebble_root"),
    "caddy-internal": _spec("caddy", "internal"),
    "caddy-none": _spec("caddy", "none"),
    "caddy-empty": _spec("caddy", "internal", ()),
    "haproxy-internal": _spec("haproxy", "internal"),
    "haproxy-acme-dns": _spec("haproxy", "acme-dns", SIMPLE),
    "haproxy-none": _spec("haproxy", "none"),
    "haproxy-empty": _spec("haproxy", "internal", ()),
    "nginx-internal": _spec("nginx", "internal"),
    "nginx-files": _spec("nginx", "files", SIMPLE),
    "nginx-none": _spec("nginx", "none"),
    "nginx-empty": _spec("nginx", "internal", ()),
}


def bluegreen_upstreams(spec: ProxySpec) -> list[Upstream]:
    return sorted({r.upstream for r in spec.routes if r.upstream.bluegreen}, key=lambda u: u.service)
