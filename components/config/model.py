"""The stack-config contract as typed models: every `outpost:*` key, its type, its default.

Pure. Shapes and single-field rules live here (types, enums, ranges, name syntax); rules that
relate several keys (cross-references, port clashes, addresses in ranges) live in `checks.py`.
Unknown keys are rejected everywhere (`extra="forbid"`).
"""

from __future__ import annotations

import ipaddress
import re
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .timespan import USEC_INFINITY, check_timespan

# A service, user or host name: a valid unix user name and systemd unit name prefix at once.
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
SERVICE_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CPU_RE = re.compile(r"^\d+%$")
MEMORY_RE = re.compile(r"^\d+[KMGT]?$")
# A route hostname: DNS labels, `{suffix}` allowed inside a label, `*.` allowed in front.
ROUTE_HOST_RE = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]|\{suffix\})*\.)*[a-z0-9]([a-z0-9-]|\{suffix\})*$")
# A wildcard certificate name: `*.` then at least two labels (`{suffix}` allowed inside a label).
WILDCARD_RE = re.compile(r"^\*\.([a-z0-9]([a-z0-9-]|\{suffix\})*\.)+[a-z0-9]([a-z0-9-]|\{suffix\})*$")
URL_PATH_RE = re.compile(r"^/[A-Za-z0-9._~/-]*$")
# A health check path: "/" or segments of URL-safe characters, none of them "." or "..", no
# empty segment: what the agent's HTTP client and every proxy request unchanged.
HEALTH_PATH_RE = re.compile(r"^/$|^(/(?!\.\.?(/|$))[A-Za-z0-9._~-]+)+$")
# A route's path prefix: the same without "/" alone (a route without path takes the whole host).
ROUTE_PATH_RE = re.compile(r"^(/(?!\.\.?(/|$))[A-Za-z0-9._~-]+)+$")
# An S3 endpoint: scheme, host (name, IPv4 or [IPv6]), optional port and path; nothing to quote.
ENDPOINT_RE = re.compile(r"^https?://([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[A-Za-z0-9._~-]*)*$")
ABS_PATH_RE = re.compile(r"^/[A-Za-z0-9._@%+=:,/-]*$")
SSH_KEY_RE = re.compile(r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/=]+( [^\n]*)?$")


TLS_WILDCARD_MODES = ("acme-dns", "internal")   # tls modes in which outpost issues certificates itself


def covering_wildcard(host: str, wildcards: list[str]) -> str | None:
    """The wildcard (`*.b.example.org`) that covers HOST (`a.b.example.org`: one label in place
    of the `*`, never the bare parent), or None."""
    parent = host.partition(".")[2]
    return next((w for w in wildcards if w[2:] == parent), None)


def _matching(pattern: re.Pattern[str], what: str):
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{value!r} is not {what}")
        return value
    return AfterValidator(check)


def _no_newline(value: str) -> str:
    """One line of text that may go into a unit file or a config line: no control character
    (newline, tab, escape, NUL ...), exactly what the renderers' single_line accepts."""
    if re.search(r"[\x00-\x1f\x7f]", value):
        raise ValueError(f"{value!r} must be a single line without control characters")
    return value


def _normalized(value: str) -> str:
    """An absolute path as the host's filesystem sees it: no empty, "." or ".." segment."""
    if value != "/" and any(seg in ("", ".", "..") for seg in value[1:].split("/")):
        raise ValueError(f"{value!r} is not a normalized absolute path (no '.', '..', '//' or trailing '/')")
    return value


def _file_path(value: str) -> str:
    if value == "/":
        raise ValueError("'/' is a directory; name a file like /etc/app/token")
    return value


def _timespan(value: str) -> str:
    check_timespan(value)
    return value


def _probe_span(value: str) -> str:
    """A health interval or timeout: also read by the proxies, in whole milliseconds."""
    usec = check_timespan(value)
    if usec == USEC_INFINITY or not 0 < usec <= 3600 * 10**6 or usec % 1000:
        raise ValueError(f"{value!r} must be longer than 0, at most 1h and a whole number of milliseconds "
                         "(the proxies' health checks count in ms)")
    return value


def _ip_network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a network in CIDR form like 10.0.0.0/16 ({exc})") from None
    return value


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address like 10.0.1.5") from None
    return value


Name = Annotated[str, _matching(NAME_RE, "a valid name: lowercase letter first, then a-z 0-9 _ -, at most 31 characters (it becomes a unix user and systemd unit name)")]
ServiceName = Annotated[str, _matching(SERVICE_NAME_RE, "a valid service name: lowercase letter first, then a-z 0-9 -, at most 31 characters (it becomes a unix user, a systemd unit and a manifest name)")]
HostName = Annotated[str, _matching(HOSTNAME_RE, "a valid host name: a-z 0-9 and -, at most 63 characters")]
SecretName = Annotated[str, _matching(SECRET_NAME_RE, "a secret name (letters, digits, _ . -)")]
Duration = Annotated[str, AfterValidator(_timespan)]
ProbeDuration = Annotated[str, AfterValidator(_probe_span)]
AbsPath = Annotated[str, _matching(ABS_PATH_RE, "an absolute path without spaces or shell characters"), AfterValidator(_normalized)]
FilePath = Annotated[AbsPath, AfterValidator(_file_path)]
Line = Annotated[str, AfterValidator(_no_newline)]
Port = Annotated[int, Field(ge=1, le=65535)]
Network = Annotated[str, AfterValidator(_ip_network)]
Address = Annotated[str, AfterValidator(_ip_address)]
SshKey = Annotated[str, _matching(SSH_KEY_RE, "an OpenSSH public key line like 'ssh-ed25519 AAAA... comment'")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Admin(Strict):
    user: Name = "admin"
    ssh_keys: list[SshKey] = Field(min_length=1)
    ssh_sources: list[Network] = ["0.0.0.0/0", "::/0"]
    private_key: SecretName


class NetworkSpec(Strict):
    kind: Literal["hcloud", "wireguard"]
    ip_range: Network
    subnet: Network | None = None           # hcloud: the subnet servers attach to
    zone: str = "eu-central"                # hcloud network zone
    port: Port = 51820                      # wireguard listen port


class Host(Strict):
    provider: Literal["hcloud", "static"]
    # hcloud
    type: str | None = None
    location: str | None = None
    image: str = "debian-13"
    labels: dict[str, Line] = {}
    ipv4: bool = True                       # a primary IPv4 address
    ipv6: bool = True                       # a primary IPv6 address
    role: Name | None = None                # hosts sharing a role share a placement group
    # static
    address: Line | None = None
    ssh_address: Line | None = None         # where SSH connects when not `address` (a forwarded port, a management LAN)
    port: Port = 22
    user: Name = "root"                     # first login, before outpost's admin user exists
    host_key: SshKey | None = None
    # both
    networks: dict[HostName, Address] = {}
    region: str | None = None


# An image reference without tag: [registry[:port]/]path, lowercase (OCI distribution spec).
IMAGE_RE = re.compile(r"^([a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?/)?[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
IMAGE_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# One word of a command line: no whitespace, quotes, backslashes or shell/systemd separators.
WORD_RE = re.compile(r"^[A-Za-z0-9_@%+=:,./-]+$")
# A volume: SOURCE:TARGET[:OPTIONS] with plain path characters.
VOLUME_RE = re.compile(r"^[A-Za-z0-9_@+=.,/-]+:/[A-Za-z0-9_@+=.,/-]*(:[a-zA-Z,=0-9]+)?$")
REPO_PATH_RE = re.compile(r"^(?!/)(?!.*(^|/)\.\.(/|$))[A-Za-z0-9._@+=,/-]+$")
RepoPath = Annotated[str, _matching(REPO_PATH_RE, "a path relative to the repository root like files/demo/hello.py")]


def command_words(value: str) -> list[str]:
    """The words of a command line outpost splits like a POSIX shell (quotes allowed, no variables
    or pipes); a ValueError saying why when it cannot or there are none."""
    import shlex
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a command line outpost can split into words ({exc})") from None
    if not words:
        raise ValueError(f"{value!r} has no words; give a command, or leave the key out")
    return words


def _command_line(value: str) -> str:
    """A command line outpost splits like a POSIX shell (quotes allowed, no variables or pipes)."""
    _no_newline(value)
    command_words(value)
    return value


class ContainerBuild(Strict):
    """Assemble the image on the host instead of pulling it: a root filesystem of `host_paths`
    (copied with `tar -h`, plus the shared libraries `ldd` lists for their executables and
    libraries) and `files` from the repository (image path → repository path), imported with
    `podman import` as `<image>:<tag>` into the storage of the user that runs the service."""

    host_paths: list[AbsPath] = []
    files: dict[FilePath, RepoPath] = {}


class Container(Strict):
    image: Annotated[str, _matching(IMAGE_RE, "an image name without tag like ghcr.io/owner/app or localhost/app (lowercase)")]
    tag: Annotated[str, _matching(IMAGE_TAG_RE, "an image tag like 2025-05-14 or 1.2.3 (letters, digits, _ . -)")] = "latest"
    port: Port | None = None
    entrypoint: Annotated[str, _matching(WORD_RE, "one absolute program path like /app/.venv/bin/gunicorn (no spaces or quotes)")] | None = None
    command: Annotated[str, AfterValidator(_command_line)] | None = None
    auto_update: Literal["none", "registry", "local"] = "none"
    volumes: list[Annotated[str, _matching(VOLUME_RE, "a volume like /srv/data:/data or /srv/data:/data:ro (no spaces)")]] = []
    build: ContainerBuild | None = None     # build the image on the host (no registry needed)


def _program(value: str) -> str:
    """A process's exec: its first word, the program, is an absolute normalized path."""
    import shlex
    words = shlex.split(value)
    if not words:
        raise ValueError("is empty; give the program to run, like /opt/app/app --port 8080")
    if not ABS_PATH_RE.match(words[0]):
        raise ValueError(f"{words[0]!r} is not an absolute program path like /usr/bin/python3 (no spaces or shell characters)")
    _normalized(words[0])
    return value


class Process(Strict):
    exec: Annotated[str, AfterValidator(_command_line), AfterValidator(_program)]
    artifacts: dict[FilePath, RepoPath] = {}


class Socket(Strict):
    port: Port
    reuse_port: bool = True
    instances: int = Field(default=1, ge=1, le=64)


class Limits(Strict):
    cpu: Annotated[str, _matching(CPU_RE, "a CPU quota like 200%")] | None = None
    memory: Annotated[str, _matching(MEMORY_RE, "a memory size like 512M or 3G")] | None = None


class Health(Strict):
    path: Annotated[str, _matching(HEALTH_PATH_RE, "a URL path like /ready or / (segments of A-Z a-z 0-9 . _ ~ -, none of them '.' or '..', no '//' or trailing '/')")]
    interval: ProbeDuration = "2s"
    timeout: ProbeDuration = "1s"
    retries: int = Field(default=20, ge=1, le=1000)


class Schedule(Strict):
    calendar: Line
    randomized_delay: Duration | None = None
    persistent: bool = False


class AfterSuccess(Strict):
    restart: str


class Service(Strict):
    hosts: list[str] = Field(min_length=1)
    user: Name | None = None                # default: the service name
    rootful: bool = False                   # containers: run under the system podman
    container: Container | None = None
    process: Process | None = None
    replicas: list[Port] = []
    socket: Socket | None = None
    state_directory: Name | None = None
    env: dict[Annotated[str, _matching(ENV_NAME_RE, "an environment variable name")], Line] = {}
    secret_env: dict[Annotated[str, _matching(ENV_NAME_RE, "an environment variable name")], SecretName] = {}
    secret_files: dict[FilePath, SecretName] = {}
    limits: Limits | None = None
    health: Health | None = None
    deploy: Literal["rolling", "blue-green", "restart"] = "rolling"
    schedule: Schedule | None = None
    after_success: AfterSuccess | None = None
    purge: bool = False                     # removing the service deletes its user's home and data

    @property
    def is_job(self) -> bool:
        return self.schedule is not None

    @property
    def dynamic_user(self) -> bool:
        """A process service without `user:` or secret files runs as systemd's DynamicUser=: its
        StateDirectory= /var/lib/<dir> is a symlink into /var/lib/private/ (0700 root)."""
        return self.process is not None and self.user is None and not self.secret_files

    def ports(self) -> list[int]:
        """The 127.0.0.1 ports this service listens on, on each of its hosts."""
        if self.socket:
            return [self.socket.port]
        return list(self.replicas)


class Route(Strict):
    host: Annotated[str, _matching(ROUTE_HOST_RE, "a host name like app{suffix}.example.org")]
    path: Annotated[str, _matching(ROUTE_PATH_RE, "a URL path prefix like /api or /api/v1 (segments of A-Z a-z 0-9 . _ ~ -, none of them '.' or '..', no trailing '/'; leave path out to route the whole host)")] | None = None
    service: str


class Proxy(Strict):
    kind: Literal["caddy", "haproxy", "nginx"] = "caddy"
    tls: Literal["acme", "acme-dns", "internal", "files", "none"] = "acme"
    email: Annotated[str, _matching(re.compile(r"^[A-Za-z0-9._+-]+@[A-Za-z0-9.-]+$"), "a plain e-mail address like ops@example.org")] | None = None
    certificate: SecretName | None = None   # tls: files
    key: SecretName | None = None           # tls: files
    acme_ca: Annotated[str, _matching(re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$"), "an ACME directory URL like https://acme-staging-v02.api.letsencrypt.org/directory (no spaces, quotes, query or fragment)")] | None = None  # ACME directory URL (acme, acme-dns); default Let's Encrypt
    acme_ca_root: SecretName | None = None  # tls: acme: secret holding the PEM root that signs acme_ca's HTTPS certificate
    # acme-dns, internal: wildcard certificates; a route hostname one covers is served with it
    wildcards: list[Annotated[str, _matching(WILDCARD_RE, "a wildcard name like *.example.org")]] = []


class DnsRecord(Strict):
    name: Line                              # relative to the zone, "@" for its apex; {suffix} expanded
    type: Literal["A", "AAAA", "CNAME", "TXT", "MX", "CAA", "SRV", "NS"]
    value: Line                             # {suffix} expanded
    ttl: int | None = Field(default=None, ge=60)


class Dns(Strict):
    provider: Literal["hetzner"] = "hetzner"
    zone: Annotated[str, _matching(re.compile(r"^[a-z0-9.-]+$"), "a DNS zone")]
    token: SecretName | None = None         # tls: acme-dns: secret holding a Hetzner API token for DNS-01
    ttl: int = Field(default=300, ge=60)
    records: list[DnsRecord] = []
    # true: this stack creates (and owns) the zone; false: the zone exists already (another stack's,
    # e.g. prod's, or made by hand) and this stack only writes its own record sets into it.
    create_zone: bool = True


class GeoHealth(Strict):
    path: Annotated[str, _matching(URL_PATH_RE, "a URL path like /")] = "/"
    port: Port = 443
    protocol: Literal["http", "https", "tcp"] = "https"


PoolName = Annotated[str, _matching(re.compile(r"^[A-Za-z0-9_-]{1,63}$"), "a pool name like eu or default (letters, digits, _ and -)")]


class GeoRecordSpec(Strict):
    name: Line
    type: Literal["A", "AAAA"] = "A"
    ttl: int | None = Field(default=None, ge=10)
    pools: dict[PoolName, list[str]] = Field(min_length=1)
    rules: dict[PoolName, list[Annotated[str, _matching(re.compile(r"^[A-Z]{2}$"), "a continent (EU, NA, ...) or ISO country code (DE, US, ...)")]]] = {}
    default: PoolName = "default"           # the pool that answers when no rule matches
    health: GeoHealth | None = None


class GeoDns(Strict):
    provider: Literal["gcore", "bunny"]
    token: SecretName
    zone: Annotated[str, _matching(re.compile(r"^[a-z0-9.-]+$"), "a DNS zone")]
    ttl: int = Field(default=120, ge=10)
    records: list[GeoRecordSpec] = []


class BucketCredentials(Strict):
    access_key: SecretName
    secret_key: SecretName


class Bucket(Strict):
    endpoint: Annotated[str, _matching(ENDPOINT_RE, "a URL like https://hel1.your-objectstorage.com (http or https, a host, an optional port and path; no spaces or quotes)")]
    # Where the hosts reach the same bucket when that differs from where the deploying machine
    # does (a MinIO on a private network; the local VM's guest forward); default: `endpoint`.
    host_endpoint: Annotated[str, _matching(ENDPOINT_RE, "a URL like http://10.0.0.5:9000 (http or https, a host, an optional port and path; no spaces or quotes)")] | None = None
    region: Annotated[str, _matching(re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$"), "a region name like hel1, fr-par or us-east-1")] = "us-east-1"
    versioning: bool = False
    object_lock_days: int | None = Field(default=None, ge=1)
    expire_days: int | None = Field(default=None, ge=1)
    # versioned buckets: delete versions N days after a newer one replaced them (current ones stay)
    noncurrent_expire_days: int | None = Field(default=None, ge=1)
    credentials: BucketCredentials


class Backup(Strict):
    host: str
    paths: list[AbsPath] = Field(min_length=1)
    bucket: str
    tool: Literal["restic", "kopia", "litestream"] = "restic"
    schedule: Line = "daily"
    ping: Annotated[Line, _matching(re.compile(r"^https?://[^\s'\"\\/][^\s'\"\\]*$"), "an http(s) URL without spaces or quotes, like https://hc-ping.com/<uuid>")] | None = None
    password: SecretName | None = None
    # auto: on a host where a backed-up path is missing or empty, restore it from the newest
    # snapshot before the services using it start (docs/backups.md); manual: only by hand.
    restore: Literal["auto", "manual"] = "auto"


class Stack(Strict):
    """One `Pulumi.<stack>.yaml`, validated. `secrets` holds names only, never values."""

    domain: str | None = None
    suffix: Annotated[str, _matching(re.compile(r"^[a-z0-9-]{0,20}$"), "a short host name suffix like -test")] = ""
    protect: bool = False
    purge: bool = False                     # disposable stacks: every service removal deletes data
    admin: Admin
    networks: dict[HostName, NetworkSpec] = {}
    hosts: dict[HostName, Host] = Field(min_length=1)
    services: dict[ServiceName, Service] = {}
    routes: list[Route] = []
    proxy: Proxy = Proxy()
    dns: Dns | None = None
    geodns: GeoDns | None = None
    buckets: dict[Annotated[str, _matching(re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"), "a bucket name (3-63 of a-z 0-9 . -)")], Bucket] = {}
    backups: dict[Annotated[str, _matching(SERVICE_NAME_RE, "a valid backup name: lowercase letter first, then a-z 0-9 -, at most 31 characters (it names the backup's manifest, units and restart group)")], Backup] = {}
    secrets: dict[SecretName, Any] = {}

    def service_user(self, name: str) -> str:
        return self.services[name].user or name

    def purges(self, name: str) -> bool:
        """Whether removing service NAME deletes its user's home and data (else they are kept)."""
        return self.purge or self.services[name].purge

    def services_on(self, host: str) -> dict[str, Service]:
        return {n: self.services[n] for n in self.service_names_by_host.get(host, ())}

    @cached_property
    def service_names_by_host(self) -> dict[str, tuple[str, ...]]:
        """Host → the services that run on it, in config order (built once: every host asks)."""
        index: dict[str, list[str]] = {}
        for name, svc in self.services.items():
            for host in dict.fromkeys(svc.hosts):
                index.setdefault(host, []).append(name)
        return {host: tuple(names) for host, names in index.items()}

    @cached_property
    def routes_by_host(self) -> dict[str, tuple[Route, ...]]:
        """Host → the routes to services that run on it, in config order."""
        index: dict[str, list[Route]] = {}
        for route in self.routes:
            svc = self.services.get(route.service)
            for host in dict.fromkeys(svc.hosts if svc else ()):
                index.setdefault(host, []).append(route)
        return {host: tuple(routes) for host, routes in index.items()}

    @cached_property
    def routed(self) -> frozenset[str]:
        """Hosts that run a service some route points at: they serve 80/443."""
        return frozenset(h for r in self.routes if r.service in self.services for h in self.services[r.service].hosts)

    @cached_property
    def routed_services(self) -> frozenset[str]:
        """Services some route points at."""
        return frozenset(r.service for r in self.routes)

    def routed_hosts(self) -> frozenset[str]:
        return self.routed

    def dns_zone_for(self, name: str) -> "Dns | GeoDns | None":
        """The DNS config (outpost:dns or outpost:geodns) whose zone holds NAME (a hostname or
        `*.`wildcard); the longer zone wins when both do. None when neither does."""
        bare = name.removeprefix("*.")
        holding = [d for d in (self.dns, self.geodns)
                   if d is not None and (bare == d.zone or bare.endswith("." + d.zone))]
        return max(holding, key=lambda d: len(d.zone), default=None)

    def with_suffix(self, text: str) -> str:
        """TEXT (a route hostname, a record name or value) with `{suffix}` replaced."""
        return text.replace("{suffix}", self.suffix)
