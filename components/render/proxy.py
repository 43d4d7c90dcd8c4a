"""The reverse proxy of one host: Caddy, HAProxy or nginx configuration from one route list.

Pure: no Pulumi, no I/O besides reading the Jinja2 templates in `files/templates/proxy/` and the
reload tool in `files/proxy/`.
`render_proxy(spec)` returns every file the proxy needs on the host:

- the main configuration (`/etc/caddy/Caddyfile`, `/etc/haproxy/haproxy.cfg` or
  `/etc/nginx/nginx.conf`, replacing the Debian package's default),
- a systemd drop-in: for HAProxy it keeps the master CLI socket root's alone; for Caddy it gives
  it `/run/caddy` (0700, caddy's) for its admin API, which listens on the unix socket
  `CADDY_ADMIN_SOCKET` only, never on TCP (where any local process, a service user's too, could
  replace the configuration), and reloads go through it; for Caddy and nginx the reload runs
  through `RELOAD_TOOL`; with blue-green upstreams it loads and drops their DNAT rules,
- for Caddy and nginx, `RELOAD_TOOL`; with blue-green upstreams, `BLUEGREEN_RULES`,
- for tls `acme-dns`, `internal` and `files`, one certificate and key per hostname under
  `TLS_DIR` as `<secret:tls:HOST.crt>` / `<secret:tls:HOST.key>` placeholders: HOST.crt and
  HOST.key for nginx, one HOST.pem bundle for HAProxy and Caddy (see `certificate_files`),
- for tls `acme` with `acme_ca_root` (Caddy and a private ACME CA such as Pebble), the CA's root
  certificate from that secret as `ACME_CA_ROOT`, which Caddy trusts for the ACME server only.

Every upstream is load-balanced over its 127.0.0.1 ports, health-checked (actively where the
proxy can), and a request whose backend refused the connection or died is retried on another
replica, so a rolling restart loses no request. HAProxy exposes its admin socket
(`HAPROXY_ADMIN_SOCKET`, 0660 root:haproxy in the haproxy-only /run/haproxy) so the agent can
drain `BACKEND/r<port>` (backend = service name). Local control sockets are for root and the proxy.

No deploy drops a request (docs/zero-loss.md has the races and what closes each, per proxy):

- Blue-green upstreams are reached at a stable local address, `STABLE_ADDRESS:<blue port>`, in
  every proxy; an nftables DNAT rule in table `ip outpost_bluegreen` (one chain per service, the
  switch file `bluegreen_switch`, loaded with `nft -f`) sends new connections there to the live
  slot, and established ones keep theirs (conntrack). A switch never touches the proxy: Caddy and
  nginx close idle client connections on every reload. The proxy opens a new connection to a
  blue-green upstream for every request, so the first request after a switch meets the new slot.
  The proxy unit loads every switch file before it starts (`BLUEGREEN_RULES`) and drops the table
  when it stops. Before the first switch nothing points the stable address anywhere (a service
  that listens on all addresses answers it from its blue slot, one bound to 127.0.0.1 refuses).
- A reload (a route change, new certificates) never closes a client connection under a request:
  HAProxy keeps idle client connections through its soft stop and answers the next request on
  each with `Connection: close` (`option idle-close-on-response`); Caddy and nginx reload through
  `outpost-proxy-reload` (files/proxy/outpost-proxy-reload.py), which first raises `DRAIN_FLAG`,
  which makes them answer every request with `Connection: close`, and waits until each client
  connection open before it has ended, at most the client keep-alive timeout (`CLIENT_IDLE_MS`).
- Caddy and nginx open a new connection to a replica for each request (no upstream keep-alive):
  a replica that stops never closes a pooled connection the proxy is about to send on; before
  it stops, the agent sends their new connections for it to a sibling (components/render/
  services.py `drain`, outpost_agent/restarts.py), so none meets its closing socket.

Every name that reaches a configuration is validated against a strict pattern here (ValueError),
and the template environment refuses to print anything that is not a plain token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from . import templates
from .manifest import Dir, File, secret_ref

KINDS = ("caddy", "haproxy", "nginx")
TLS_MODES = ("acme", "acme-dns", "internal", "files", "none")
CERT_FILE_MODES = ("acme-dns", "internal", "files")  # certificates issued by outpost, shipped as files

TEMPLATES = Path(__file__).resolve().parent.parent.parent / "files" / "templates" / "proxy"
TLS_DIR = "/etc/outpost/tls"
LIVE_DIR = "/etc/outpost/proxy/live"  # blue-green switch files (nft rules), written by the agent
HAPROXY_ADMIN_SOCKET = "/run/haproxy/admin.sock"
HAPROXY_MASTER_SOCKET = "/run/haproxy-master.sock"
CADDY_DROPIN = "/etc/systemd/system/caddy.service.d/outpost.conf"
CADDY_ADMIN_DIR = "/run/caddy"            # RuntimeDirectory=caddy, 0700: root and caddy only
CADDY_ADMIN_SOCKET = f"{CADDY_ADMIN_DIR}/admin.sock"
HAPROXY_DROPIN = "/etc/systemd/system/haproxy.service.d/outpost.conf"
DROPIN = {"caddy": CADDY_DROPIN, "haproxy": HAPROXY_DROPIN,
          "nginx": "/etc/systemd/system/nginx.service.d/outpost.conf"}
# Blue-green: the proxy reaches service S at STABLE_ADDRESS:<S's blue port>; DNAT sends new
# connections to the live slot. A loopback address nothing listens on (127.0.1.1 is Debian's
# hostname address, 127.0.0.53/54 systemd-resolved's).
STABLE_ADDRESS = "127.0.2.1"
BLUEGREEN_TABLE = "outpost_bluegreen"       # family ip
BLUEGREEN_RULES = "/etc/outpost/proxy/bluegreen.nft"   # includes every switch file in LIVE_DIR
NFT = "/usr/sbin/nft"
# Reloads of Caddy and nginx: drain client connections first (files/proxy/outpost-proxy-reload.py).
RELOAD_TOOL = "/usr/local/lib/outpost/outpost-proxy-reload"
HOLD_TABLE = "outpost_proxy_hold"     # family inet: its --hold-new-connections (Caddy's reloads)
RELOAD_TOOL_SOURCE = Path(__file__).resolve().parent.parent.parent / "files" / "proxy" / "outpost-proxy-reload.py"
DRAIN_FLAG = "/run/outpost-proxy/drain"   # while it exists, Caddy and nginx answer Connection: close
CLIENT_IDLE_MS = 10_000                   # every proxy closes a client connection idle this long
CLIENT_PORTS = "80,443"
MAIN_CONFIG = {"caddy": "/etc/caddy/Caddyfile", "haproxy": "/etc/haproxy/haproxy.cfg",
               "nginx": "/etc/nginx/nginx.conf"}
PACKAGES = {"caddy": ["caddy"], "haproxy": ["haproxy"], "nginx": ["nginx"]}
PORT_PLACEHOLDER = "{port}"
ACME_CA_ROOT = f"{TLS_DIR}/acme-ca-root.pem"

# Who reads the private key. Caddy runs as User=caddy and loads keys itself (also on reload);
# HAProxy and nginx load them in their root master process before dropping privileges.
KEY_ACCESS = {"caddy": ("0640", "caddy"), "haproxy": ("0600", "root"), "nginx": ("0600", "root")}

SERVICE_RE = re.compile(r"[a-z][a-z0-9-]{0,62}")
LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOST_RE = re.compile(rf"{LABEL}(?:\.{LABEL})*")
PATH_RE = re.compile(r"(?:/[A-Za-z0-9._~-]+)+")
EMAIL_RE = re.compile(r"[A-Za-z0-9._+-]+@[A-Za-z0-9.-]+")
SECRET_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
URL_RE = re.compile(r"https?://[A-Za-z0-9.-]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/-]*)?")
ROOT_RE = re.compile(r"(?:/[A-Za-z0-9._+-]+)*")
DURATION_PART_RE = re.compile(r"\s*([0-9]+)\s*([a-z]*)")
DURATION_UNITS_MS = {"": 1000, "ms": 1, "msec": 1, "s": 1000, "sec": 1000, "second": 1000,
                     "seconds": 1000, "m": 60_000, "min": 60_000, "minute": 60_000,
                     "minutes": 60_000, "h": 3_600_000, "hr": 3_600_000, "hour": 3_600_000,
                     "hours": 3_600_000}
# What the template environment agrees to print: config-language-neutral tokens only
# (globs allowed for includes; no whitespace, quotes, braces, semicolons, '#', '$', '%' or backslashes).
SAFE_TOKEN_RE = re.compile(r"[A-Za-z0-9._:/@+=,~?&*\[\]-]*")


@dataclass(frozen=True)
class Upstream:
    """One service as the proxy sees it on this host."""

    service: str                # [a-z][a-z0-9-]*: HAProxy backend / nginx upstream name
    ports: tuple[int, ...]      # 127.0.0.1 ports: replica ports or the socket port(s)
    health_path: str | None     # active health check path, e.g. "/ready"; None → passive only
    health_interval: str = "2s"  # systemd-style durations ("2s", "500ms")
    health_timeout: str = "1s"
    bluegreen: bool = False     # ports = (blue, green); the live one is named by a switch file


@dataclass(frozen=True)
class Route:
    host: str                   # final hostname ({suffix} already substituted)
    path: str | None            # path prefix like "/eugene" (kept, not stripped); None = whole host
    upstream: Upstream


@dataclass(frozen=True)
class ProxySpec:
    kind: str                   # "caddy" | "haproxy" | "nginx"
    tls: str                    # "acme" | "acme-dns" | "internal" | "files" | "none"
    email: str | None
    routes: tuple[Route, ...]
    acme_ca: str | None = None  # ACME directory URL override (tests: Pebble); None = Let's Encrypt
    acme_ca_root: str | None = None  # tls acme: name of the secret holding the PEM root acme_ca's
                                     # HTTPS certificate chains to (a private CA); None = system roots


# --- validation -------------------------------------------------------------------------------

def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"proxy kind {kind!r} is not one of {', '.join(KINDS)}")
    return kind


def _matching(value: str, pattern: re.Pattern[str], problem: str) -> str:
    """VALUE when it is a string PATTERN matches whole; ValueError(PROBLEM) otherwise."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(problem)
    return value


def check_service(name: str) -> str:
    return _matching(name, SERVICE_RE, f"service name {name!r} must match [a-z][a-z0-9-]* (at most 63 characters)")


def check_host(host: str) -> str:
    if not isinstance(host, str) or len(host) > 253 or not HOST_RE.fullmatch(host):
        raise ValueError(f"route host {host!r} must be a lowercase DNS name like app.example.org "
                         "(letters, digits, '-' and '.', no wildcard, port or spaces)")
    return host


def check_path(path: str) -> str:
    if not isinstance(path, str) or not PATH_RE.fullmatch(path) \
            or any(seg in (".", "..") for seg in path.split("/")):
        raise ValueError(f"route path {path!r} must be a prefix like /api or /api/v1 "
                         "(segments of letters, digits, '.', '_', '~', '-'; no trailing '/'; "
                         "leave path out to route the whole host)")
    return path


def check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"upstream port {port!r} must be an integer from 1 to 65535")
    return port


def duration_ms(text: str) -> int:
    """A systemd-style duration ("2s", "500ms", "1min 30s"; bare numbers are seconds) in ms."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"duration {text!r} must look like 2s, 500ms or 1min")
    total, pos = 0, 0
    while pos < len(text):
        m = DURATION_PART_RE.match(text, pos)
        if m is None or m.group(2) not in DURATION_UNITS_MS:
            raise ValueError(f"duration {text!r} must look like 2s, 500ms or 1min")
        total += int(m.group(1)) * DURATION_UNITS_MS[m.group(2)]
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    if total <= 0:
        raise ValueError(f"duration {text!r} must be longer than 0")
    return total


def format_duration(ms: int) -> str:
    """Milliseconds as a duration Caddy, HAProxy and nginx all read ("2s", "500ms")."""
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def check_upstream(up: Upstream) -> Upstream:
    check_service(up.service)
    if not isinstance(up.ports, tuple) or not up.ports:
        raise ValueError(f"service {up.service}: ports must be a non-empty tuple")
    for port in up.ports:
        check_port(port)
    if len(set(up.ports)) != len(up.ports):
        raise ValueError(f"service {up.service}: ports {list(up.ports)} repeat a port")
    if up.bluegreen and len(up.ports) != 2:
        raise ValueError(f"service {up.service}: blue-green needs exactly two ports (blue, green), "
                         f"got {list(up.ports)}")
    if up.health_path is not None and up.health_path != "/":  # a health check may probe the root
        check_path(up.health_path)
    duration_ms(up.health_interval)
    duration_ms(up.health_timeout)
    return up


def check_root(root: str) -> str:
    return _matching(root, ROOT_RE, f"root {root!r} must be '' or an absolute path without spaces or quotes")


def check_spec(spec: ProxySpec) -> ProxySpec:
    """Raise ValueError for anything that must not reach a proxy configuration."""
    check_kind(spec.kind)
    if spec.tls not in TLS_MODES:
        raise ValueError(f"proxy tls {spec.tls!r} is not one of {', '.join(TLS_MODES)}")
    if spec.tls == "acme" and spec.kind != "caddy":
        raise ValueError(f"proxy tls 'acme' needs a proxy that obtains certificates itself (caddy); "
                         f"with {spec.kind} use tls 'acme-dns' (outpost issues the certificates and "
                         "ships them as files), 'internal', 'files' or 'none'")
    if spec.email is not None and not EMAIL_RE.fullmatch(spec.email):
        raise ValueError(f"proxy email {spec.email!r} is not a plain address like ops@example.org")
    if spec.acme_ca is not None and not URL_RE.fullmatch(spec.acme_ca):
        raise ValueError(f"proxy acme_ca {spec.acme_ca!r} must be an http(s) URL without spaces, "
                         "quotes, query or fragment")
    if spec.acme_ca_root is not None:
        if spec.tls != "acme" or spec.kind != "caddy":
            raise ValueError("proxy acme_ca_root only applies to tls 'acme' with caddy")
        if not isinstance(spec.acme_ca_root, str) or not SECRET_NAME_RE.fullmatch(spec.acme_ca_root):
            raise ValueError(f"proxy acme_ca_root {spec.acme_ca_root!r} must be a secret name")
    if not isinstance(spec.routes, tuple):
        raise ValueError("proxy routes must be a tuple of Route")
    seen: dict[tuple[str, str | None], str] = {}
    upstreams: dict[str, Upstream] = {}
    for route in spec.routes:
        check_host(route.host)
        if route.path is not None:
            check_path(route.path)
        check_upstream(route.upstream)
        key = (route.host, route.path)
        if key in seen:
            raise ValueError(f"route {route.host}{route.path or ''} is defined twice "
                             f"({seen[key]} and {route.upstream.service})")
        seen[key] = route.upstream.service
        other = upstreams.setdefault(route.upstream.service, route.upstream)
        if other != route.upstream:
            raise ValueError(f"service {route.upstream.service} appears with two different upstreams")
    return spec


def sorted_routes(routes: tuple[Route, ...]) -> list[Route]:
    """By host, then longest path first, the whole-host route last."""
    return sorted(routes, key=lambda r: (r.host, r.path is None, -len(r.path or ""), r.path or ""))


# --- paths ------------------------------------------------------------------------------------

def tls_paths(host: str, root: str = "") -> dict[str, str]:
    base = f"{root}{TLS_DIR}/{check_host(host)}"
    return {"crt": f"{base}.crt", "key": f"{base}.key", "pem": f"{base}.pem"}


def switch_path(kind: str, service: str, root: str = "") -> str:
    """The blue-green switch file of SERVICE: the same nftables rule whichever proxy runs."""
    check_kind(kind)
    return f"{root}{LIVE_DIR}/{check_service(service)}.nft"


def stable_address(up: Upstream) -> str:
    """Where the proxy reaches a blue-green upstream: STABLE_ADDRESS on the blue slot's port."""
    return f"{STABLE_ADDRESS}:{up.ports[0]}"


# --- templates --------------------------------------------------------------------------------

def _safe(value: object) -> object:
    """Jinja finalize hook: only plain tokens may be printed into a proxy configuration."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"refusing to render {value!r} into a proxy configuration")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (value == PORT_PLACEHOLDER or SAFE_TOKEN_RE.fullmatch(value)):
        return value
    raise ValueError(f"refusing to render {value!r} into a proxy configuration")


def _render(name: str, **context: object) -> str:
    return templates.render(TEMPLATES, _safe, name, **context)


def _upstream_context(kind: str, up: Upstream, root: str) -> dict[str, object]:
    return {
        "service": up.service,
        "backend": up.service,
        # (name, address) of each server: the replicas, or a blue-green service's stable address
        "servers": [(f"r{up.ports[0]}", stable_address(up))] if up.bluegreen
        else [(f"r{port}", f"127.0.0.1:{port}") for port in up.ports],
        "bluegreen": up.bluegreen,
        "health_path": up.health_path or "",
        "interval": format_duration(duration_ms(up.health_interval)),
        "timeout": format_duration(duration_ms(up.health_timeout)),
    }


def _sites(spec: ProxySpec, root: str) -> list[dict[str, object]]:
    """Routes grouped per host: path routes longest first, then the whole-host route (or None)."""
    sites: dict[str, dict[str, object]] = {}
    for route in sorted_routes(spec.routes):
        site = sites.setdefault(route.host, {"host": route.host, "paths": [], "default": None,
                                             **tls_paths(route.host, root)})
        up = _upstream_context(spec.kind, route.upstream, root)
        if route.path is None:
            site["default"] = up
        else:
            site["paths"].append({"path": route.path, "upstream": up})  # type: ignore[union-attr]
    return list(sites.values())


def _upstreams(spec: ProxySpec, root: str) -> list[dict[str, object]]:
    by_service = {r.upstream.service: r.upstream for r in spec.routes}
    return [_upstream_context(spec.kind, by_service[s], root) for s in sorted(by_service)]


def _context(spec: ProxySpec, root: str) -> dict[str, object]:
    return {
        "tls": spec.tls,
        "tls_on": spec.tls != "none",
        "cert_files": spec.tls in CERT_FILE_MODES,
        "email": spec.email or "",
        "acme_ca": spec.acme_ca or "",
        "acme_ca_root": f"{root}{ACME_CA_ROOT}" if spec.acme_ca_root else "",
        "sites": _sites(spec, root),
        "upstreams": _upstreams(spec, root),
        "root": root,
        "live_dir": f"{root}{LIVE_DIR}",
        "tls_dir": f"{root}{TLS_DIR}",
        "admin_socket": HAPROXY_ADMIN_SOCKET,
        "master_socket": HAPROXY_MASTER_SOCKET,
        "caddy_admin": f"unix/{root}{CADDY_ADMIN_SOCKET}",
        "main_config": f"{root}{MAIN_CONFIG[spec.kind]}",
        "bluegreen_rules": f"{root}{BLUEGREEN_RULES}" if bluegreen_upstreams(spec) else "",
        "nft": NFT,
        "bluegreen_table": BLUEGREEN_TABLE,
        "hold_table": HOLD_TABLE,
        "reload_tool": f"{root}{RELOAD_TOOL}",
        "drain_flag": f"{root}{DRAIN_FLAG}",
        "drain_dir": f"{root}{Path(DRAIN_FLAG).parent}",
        "drain_name": Path(DRAIN_FLAG).name,
        "client_idle": format_duration(CLIENT_IDLE_MS),
        "drain_limit": format_duration(CLIENT_IDLE_MS + 1000).removesuffix("s"),
        "client_ports": CLIENT_PORTS,
    }


def bluegreen_upstreams(spec: ProxySpec) -> list[Upstream]:
    return sorted({r.upstream for r in spec.routes if r.upstream.bluegreen}, key=lambda u: u.service)


# --- public API -------------------------------------------------------------------------------

def render_proxy(spec: ProxySpec, *, root: str = "") -> list[File]:
    """Every file the proxy needs on the host, sorted by path; deterministic byte for byte.

    `root` prefixes every path outpost owns (file paths and the paths the configuration
    references) so tests can validate a rendered tree in a temporary directory; production
    renders with root="".
    """
    check_spec(spec)
    check_root(root)
    ctx = _context(spec, root)
    main = MAIN_CONFIG[spec.kind]
    files = [File(f"{root}{main}", _render(f"{spec.kind}/{Path(main).name}.j2", **ctx)),
             File(f"{root}{DROPIN[spec.kind]}", _render(f"{spec.kind}/outpost.conf.j2", **ctx))]
    if spec.kind in ("caddy", "nginx"):
        files.append(File(f"{root}{RELOAD_TOOL}", RELOAD_TOOL_SOURCE.read_text(), mode="0755"))
    if bluegreen_upstreams(spec):
        files.append(File(f"{root}{BLUEGREEN_RULES}", _render("bluegreen.nft.j2", **ctx)))
    if spec.tls in CERT_FILE_MODES:
        files += certificate_files(spec.kind, sorted({r.host for r in spec.routes}), root=root)
    if spec.acme_ca_root:
        mode, group = KEY_ACCESS[spec.kind]
        files.append(File(f"{root}{ACME_CA_ROOT}", secret_ref(spec.acme_ca_root), mode=mode, group=group))
    return sorted(files, key=lambda f: f.path)


def certificate_files(kind: str, hosts: list[str], *, root: str = "") -> list[File]:
    """Certificate placeholders per host: .crt + .key (nginx) or one cert+key .pem (HAProxy, and
    Caddy, which loads TLS_DIR as a folder of bundles: Caddy 2.6 selects `tls cert key` pairs by
    tag and keeps only the first tag of identical certificates, so one wildcard or multi-name
    certificate shipped for several hosts would break every host but one)."""
    key_mode, key_group = KEY_ACCESS[check_kind(kind)]
    files = []
    for host in hosts:
        paths = tls_paths(host, root)
        crt, key = secret_ref(f"tls:{host}.crt"), secret_ref(f"tls:{host}.key")
        if kind in ("caddy", "haproxy"):
            files.append(File(paths["pem"], f"{crt}\n{key}", mode=key_mode, group=key_group))
        else:
            files.append(File(paths["crt"], crt, mode="0644"))
            files.append(File(paths["key"], key, mode=key_mode, group=key_group))
    return files


def proxy_dirs(spec: ProxySpec, *, root: str = "") -> list[Dir]:
    """Directories the proxy side needs: LIVE_DIR, where the agent writes blue-green switch files
    (and BLUEGREEN_RULES includes them from), and TLS_DIR when certificates are shipped as files."""
    check_spec(spec)
    check_root(root)
    dirs = [Dir(f"{root}{LIVE_DIR}")]
    if spec.tls in CERT_FILE_MODES or spec.acme_ca_root:
        dirs.append(Dir(f"{root}{TLS_DIR}"))
    return sorted(dirs, key=lambda d: d.path)


def bluegreen_switch_template(kind: str, upstream: Upstream, *, root: str = "") -> tuple[str, str]:
    """(path, template) of a blue-green upstream's switch file, the same for every proxy: an nft
    script that points the stable address at the live slot; the agent writes
    `template.replace("{port}", str(port))` and runs `switch_argv` (no proxy reload)."""
    check_kind(kind)
    check_upstream(upstream)
    check_root(root)
    if not upstream.bluegreen:
        raise ValueError(f"service {upstream.service} is not blue-green")
    text = _render("bluegreen-switch.nft.j2", service=upstream.service, table=BLUEGREEN_TABLE,
                   address=STABLE_ADDRESS, port=upstream.ports[0], live=PORT_PLACEHOLDER)
    return switch_path(kind, upstream.service, root), text


def switch_argv(path: str) -> list[str]:
    """Load a switch file: one nft transaction, so the rule is replaced atomically."""
    return [NFT, "-f", path]


def switch_validate_argv(path: str) -> list[str]:
    """Check a staged switch file against the running ruleset without applying it."""
    return [NFT, "-c", "-f", f"{{staged:{path}}}"]


def bluegreen_switch(kind: str, upstream: Upstream, port: int, *, root: str = "") -> File:
    """The switch file naming `port` (one of upstream.ports) as the live slot."""
    if port not in upstream.ports:
        raise ValueError(f"service {upstream.service}: port {port} is not one of {list(upstream.ports)}")
    path, template = bluegreen_switch_template(kind, upstream, root=root)
    return File(path, template.replace(PORT_PLACEHOLDER, str(check_port(port))))


def validate_argv(kind: str, staged_main_config_path: str, *, root: str = "") -> list[str]:
    """The command that checks a staged main config before it replaces the live one."""
    check_kind(kind)
    check_root(root)
    path = staged_main_config_path
    if kind == "caddy":
        return ["caddy", "validate", "--adapter", "caddyfile", "--config", path]
    if kind == "haproxy":
        return ["haproxy", "-c", "-f", path]
    return ["nginx", "-t", "-c", path]


def proxy_unit(kind: str) -> str:
    return f"{check_kind(kind)}.service"


def reload_argv(kind: str) -> list[str]:
    """Reload, never restart: every proxy here reloads without dropping connections."""
    return ["systemctl", "reload", proxy_unit(kind)]


def proxy_packages(kind: str, bluegreen: bool = False) -> list[str]:
    # Caddy's reloads hold new connections back with nftables (files/proxy/outpost-proxy-reload.py)
    return list(PACKAGES[check_kind(kind)]) + (["nftables"] if bluegreen or kind == "caddy" else [])
