"""The proxy side of a host: its routes turned into a `tls` manifest (certificates and keys, when
outpost issues them) and a `proxy` manifest (the proxy package, its config validated on the host
before it replaces the live one, reloaded, never restarted, and only when it changed).

Pure: builds `ProxySpec`s from the stack config and wraps `proxy.render_proxy` output.
"""

from __future__ import annotations

from ..config.model import TLS_WILDCARD_MODES, Stack, covering_wildcard
from ..config.timespan import parse_timespan
from .manifest import Dir, Manifest, Unit
from .proxy import (CERT_FILE_MODES, MAIN_CONFIG, TLS_DIR, ProxySpec, Route, Upstream, bluegreen_upstreams,
                    proxy_dirs, proxy_packages, proxy_unit, render_proxy, validate_argv)


def route_host(stack: Stack, host: str) -> str:
    return stack.with_suffix(host)


def upstream(stack: Stack, service: str) -> Upstream:
    svc = stack.services[service]
    health = svc.health
    return Upstream(service=service, ports=tuple(svc.ports()),
                    health_path=health.path if health else None,
                    health_interval=_ms(health.interval) if health else "2s",
                    health_timeout=_ms(health.timeout) if health else "1s",
                    bluegreen=svc.deploy == "blue-green")


def _ms(span: str) -> str:
    """A health interval or timeout (a systemd time span, whole ms: the model's rule) as "1500ms"."""
    return f"{parse_timespan(span) // 1000}ms"


def proxy_spec(stack: Stack, host: str) -> ProxySpec | None:
    """The proxy HOST runs: every route whose service runs on HOST; None when it serves none."""
    routes = tuple(Route(host=route_host(stack, r.host), path=r.path, upstream=upstream(stack, r.service))
                   for r in stack.routes_by_host.get(host, ()))
    if not routes:
        return None
    proxy = stack.proxy
    return ProxySpec(kind=proxy.kind, tls=proxy.tls, email=proxy.email, routes=routes,
                     acme_ca=proxy.acme_ca, acme_ca_root=proxy.acme_ca_root)


def certificate_hosts(stack: Stack) -> list[str]:
    """Every hostname outpost must issue (or ship) a certificate for."""
    if stack.proxy.tls not in CERT_FILE_MODES:
        return []
    return sorted({route_host(stack, r.host) for r in stack.routes})


def certificate_names(stack: Stack) -> dict[str, list[str]]:
    """Each certificate outpost issues → the route hostnames served with it: its own for each
    hostname, or the wildcard of `outpost:proxy.wildcards` covering it (acme-dns and internal).
    Every hostname still gets its own `tls:<host>.crt/.key`; hosts under one wildcard share them."""
    wildcards = [route_host(stack, w) for w in stack.proxy.wildcards] if stack.proxy.tls in TLS_WILDCARD_MODES else []
    names: dict[str, list[str]] = {}
    for host in certificate_hosts(stack):
        names.setdefault(covering_wildcard(host, wildcards) or host, []).append(host)
    return dict(sorted(names.items()))


def proxy_manifests(stack: Stack, host: str) -> list[Manifest]:
    spec = proxy_spec(stack, host)
    if spec is None:
        return []
    unit = proxy_unit(spec.kind)
    files = render_proxy(spec)
    certs = [f for f in files if f.path.startswith(TLS_DIR + "/")]
    config = [f for f in files if f not in certs]
    manifests = []
    if certs:
        # Shipped before the proxy config, which the validator checks against these live files.
        manifests.append(Manifest(
            name="tls", dirs=[Dir(TLS_DIR, "0755")], files=certs,
            restart=[{"group": "proxy-certificates", "strategy": "reload", "scope": "system",
                      "when": [f.path for f in certs], "instances": [{"unit": unit, "health": None}]}]))
    main = MAIN_CONFIG[spec.kind]
    dropins = [f.path for f in config if f.path.startswith(f"/etc/systemd/system/{unit}.d/")]
    manifests.append(Manifest(
        name="proxy", packages=proxy_packages(spec.kind, bool(bluegreen_upstreams(spec))),
        dirs=proxy_dirs(spec), files=config,
        units=[Unit(unit)],
        validate=[{"argv": validate_argv(spec.kind, f"{{staged:{main}}}")}],
        # A systemd drop-in (Caddy's admin socket directory, HAProxy's master socket) applies on
        # start only: its change restarts the proxy once, before the reload of the rest.
        restart=[*([{"group": "proxy-unit", "strategy": "restart", "scope": "system", "when": dropins,
                     "instances": [{"unit": unit, "health": None}]}] if dropins else []),
                 {"group": "proxy", "strategy": "reload", "scope": "system",
                  "when": [f.path for f in config], "instances": [{"unit": unit, "health": None}]}],
        restarts={unit.removesuffix(".service"): "reload"}))
    return manifests
