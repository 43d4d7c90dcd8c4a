"""Rules that relate several stack-config keys: names that must be defined, ports that clash,
addresses that must lie in their network, options that exclude each other.

Pure: `check(stack)` returns every problem as (key path, message); nothing is raised.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterator

from . import records
from .calendar import invalid_calendars
from .model import TLS_WILDCARD_MODES, Stack, covering_wildcard
from .reserved import RESERVED
from .takeover import takeover

Problem = tuple[str, str]


def _choices(names) -> str:
    names = sorted(names)
    return ", ".join(names) if names else "none are defined"


def check(stack: Stack) -> list[Problem]:
    problems: list[Problem] = []
    for rule in (_hosts, _networks, _services, _reserved_names, _container_builds, _ports, _routes, _proxy, _secrets, _dns, _dns_records,
                 _buckets_and_backups, _backup_tools, takeover):
        problems.extend(rule(stack))
    problems.extend(_calendars(stack))
    return problems


def _hosts(stack: Stack) -> Iterator[Problem]:
    for name, host in stack.hosts.items():
        where = f"hosts.{name}"
        if host.provider == "static":
            if not host.address:
                yield f"{where}.address", "required for provider: static (the public IP or DNS name outpost connects to)"
            if not host.host_key:
                yield (f"{where}.host_key", "required for provider: static: the host's public SSH host key "
                       "(`ssh-keyscan -t ed25519 ADDRESS`), pinned on every connection; outpost never trusts on first use")
            for key in ("type", "location", "role"):
                if getattr(host, key) is not None:
                    yield f"{where}.{key}", "only applies to provider: hcloud"
        else:
            for key, example in (("type", "cx22"), ("location", "hel1")):
                if not getattr(host, key):
                    yield f"{where}.{key}", f"required for provider: hcloud (e.g. {example})"
            for key in ("address", "host_key", "ssh_address"):
                if getattr(host, key) is not None:
                    yield f"{where}.{key}", "only applies to provider: static (hcloud hosts get theirs from the program)"


def _networks(stack: Stack) -> Iterator[Problem]:
    used: dict[tuple[str, str], str] = {}
    for name, host in stack.hosts.items():
        for net_name, address in host.networks.items():
            where = f"hosts.{name}.networks.{net_name}"
            net = stack.networks.get(net_name)
            if net is None:
                yield where, f"network {net_name!r} is not defined in outpost:networks (defined: {_choices(stack.networks)})"
                continue
            if net.kind == "hcloud" and host.provider != "hcloud":
                yield where, f"network {net_name!r} is a Hetzner network; only provider: hcloud hosts can join it (use a wireguard network for static hosts)"
            addr = ipaddress.ip_address(address)
            scope = net.subnet or net.ip_range
            if addr not in ipaddress.ip_network(scope):
                yield where, f"{address} is outside {net_name!r}'s {'subnet' if net.subnet else 'range'} {scope}"
            other = used.setdefault((net_name, address), name)
            if other != name:
                yield where, f"{address} is already host {other!r}'s address in {net_name!r}"
    for net_name, net in stack.networks.items():
        where = f"networks.{net_name}"
        if net.kind == "hcloud":
            if net.subnet is None:
                yield f"{where}.subnet", "required for kind: hcloud (e.g. 10.0.1.0/24 inside ip_range)"
            elif not ipaddress.ip_network(net.subnet).subnet_of(ipaddress.ip_network(net.ip_range)):
                yield f"{where}.subnet", f"{net.subnet} is not inside ip_range {net.ip_range}"
        elif net.subnet is not None:
            yield f"{where}.subnet", "only applies to kind: hcloud"


def _services(stack: Stack) -> Iterator[Problem]:
    users: dict[str, str] = {}
    for name, svc in stack.services.items():
        where = f"services.{name}"
        for i, host in enumerate(svc.hosts):
            if host not in stack.hosts:
                yield f"{where}.hosts[{i}]", f"host {host!r} is not defined in outpost:hosts (defined: {_choices(stack.hosts)})"
        if (svc.container is None) == (svc.process is None):
            yield where, "needs exactly one of container: or process:"
        if svc.socket and svc.replicas:
            yield f"{where}.socket", "use either socket: or replicas:, not both"
        if svc.socket and svc.container:
            yield f"{where}.socket", "socket activation applies to process: services only"
        if svc.socket and not svc.socket.reuse_port and svc.socket.instances > 1:
            yield f"{where}.socket.reuse_port", "several instances share one port only with reuse_port: true"
        if len(set(svc.replicas)) != len(svc.replicas):
            yield f"{where}.replicas", "lists a port twice"
        if svc.container and svc.replicas and svc.container.port is None:
            yield f"{where}.container.port", "required with replicas: the port the app listens on inside the container"
        if svc.is_job:
            if svc.replicas or svc.socket:
                yield f"{where}.schedule", "a scheduled job runs once per trigger; it can't have replicas: or socket:"
            if "deploy" in svc.model_fields_set:
                yield f"{where}.deploy", f"{svc.deploy!r} does not apply to a scheduled job (jobs just run the new version next time)"
            if svc.health:
                yield f"{where}.health", "does not apply to a scheduled job"
        else:
            if svc.after_success:
                yield f"{where}.after_success", "only applies to scheduled jobs (schedule:)"
            if svc.deploy == "blue-green" and len(svc.replicas) != 2:
                yield f"{where}.deploy", "blue-green needs exactly two replicas: [blue port, green port]"
            if svc.deploy == "blue-green" and not svc.health:
                yield f"{where}.health", "blue-green needs a health check to decide when to switch"
        if svc.after_success:
            target = svc.after_success.restart
            if target not in stack.services:
                yield f"{where}.after_success.restart", f"service {target!r} is not defined (defined: {_choices(stack.services)})"
            elif target == name or stack.services[target].is_job:
                yield f"{where}.after_success.restart", f"{target!r} must be a long-running service, not a job"
            elif not set(svc.hosts) <= set(stack.services[target].hosts):
                yield f"{where}.after_success.restart", f"{target!r} does not run on every host this job runs on"
        if svc.container is None and svc.rootful:
            yield f"{where}.rootful", "only applies to container: services"
        user = stack.service_user(name)
        owner = users.setdefault(user, name)
        if owner != name and stack.services[owner].rootful != svc.rootful:
            yield f"{where}.user", f"user {user!r} is shared with {owner!r}; both must be rootless or both rootful"


def _reserved_names(stack: Stack) -> Iterator[Problem]:
    for name in stack.services:
        if name in RESERVED or name.startswith(("systemd-", "outpost-", "podman-", "user-")):
            yield f"services.{name}", f"{name!r} would clash with the host's own units or users; pick another name"
        if name == stack.admin.user:
            yield f"services.{name}", f"{name!r} is the admin user's name"


def _container_builds(stack: Stack) -> Iterator[Problem]:
    """container.build: the image is assembled on the host, so it is never pulled or auto-updated
    from a registry, and it needs something to put in it."""
    for name, svc in stack.services.items():
        build = svc.container.build if svc.container else None
        if build is None:
            continue
        where = f"services.{name}.container"
        if not build.host_paths and not build.files:
            yield f"{where}.build", "needs host_paths: and/or files: (what goes into the image)"
        if svc.container.auto_update == "registry":
            yield f"{where}.auto_update", "registry does not apply to an image built on the host (use none or local)"
        if not svc.container.entrypoint and not svc.container.command:
            yield f"{where}.entrypoint", "required with build: an imported image has no default command"


def _ports(stack: Stack) -> Iterator[Problem]:
    claims: dict[tuple[str, int], str] = {}
    reserved = {22: "sshd"}
    routed = stack.routed_hosts()
    for name, svc in stack.services.items():
        for i, port in enumerate(svc.ports()):
            key = f"services.{name}." + (f"socket.port" if svc.socket else f"replicas[{i}]")
            for host in svc.hosts:
                if port in reserved or (host in routed and port in (80, 443)):
                    yield key, f"port {port} on host {host!r} is taken by {reserved.get(port, 'the proxy')}"
                    continue
                owner = claims.setdefault((host, port), name)
                if owner != name:
                    yield key, f"port {port} on host {host!r} is already used by service {owner!r}"


def _routes(stack: Stack) -> Iterator[Problem]:
    seen: dict[tuple[str, str], int] = {}
    for i, route in enumerate(stack.routes):
        where = f"routes[{i}]"
        svc = stack.services.get(route.service)
        if svc is None:
            yield f"{where}.service", f"service {route.service!r} is not defined (defined: {_choices(stack.services)})"
        elif not svc.ports():
            yield (f"{where}.service", f"service {route.service!r} publishes no port: give it replicas: [PORT, ...] "
                   "(with container.port) or socket: {port: PORT}")
        first = seen.setdefault((route.host, route.path or "/"), i)
        if first != i:
            yield where, f"duplicates routes[{first}] (same host and path)"
        if route.host.startswith("*."):
            yield (f"{where}.host", "wildcard routes are not supported (the proxy configurations outpost renders name "
                   "each host); list each hostname: they can share one certificate with outpost:proxy.wildcards")


def _proxy(stack: Stack) -> Iterator[Problem]:
    proxy = stack.proxy
    if not stack.routes:
        return
    if proxy.tls == "acme" and proxy.kind != "caddy":
        yield "proxy.tls", (f"acme means the proxy obtains its own certificates, which only kind: caddy does; {proxy.kind} "
                            "needs its certificates from another mode: acme-dns (outpost issues them from the ACME CA "
                            "through DNS-01), internal (a stack CA), files (certificate and key from outpost:secrets) "
                            "or none (plain HTTP)")
    if proxy.tls in ("acme", "acme-dns") and not proxy.email:
        yield "proxy.email", f"required for tls: {proxy.tls} (the ACME account contact)"
    if proxy.acme_ca is not None:
        if proxy.tls not in ("acme", "acme-dns"):
            yield "proxy.acme_ca", "only applies to tls: acme or acme-dns"
        elif not proxy.acme_ca.startswith("https://"):
            yield "proxy.acme_ca", (f"{proxy.acme_ca!r} is not an ACME directory URL like "
                                    "https://acme-staging-v02.api.letsencrypt.org/directory (ACME needs https)")
    if proxy.acme_ca_root is not None:
        if proxy.tls != "acme":
            yield "proxy.acme_ca_root", ("only applies to tls: acme (Caddy's own ACME client); with acme-dns the machine "
                                         "running `pulumi up` must trust the CA (lego reads LEGO_CA_CERTIFICATES)")
        elif proxy.acme_ca is None:
            yield "proxy.acme_ca_root", "only applies with acme_ca (a private ACME CA); Let's Encrypt is trusted already"
    if proxy.tls == "acme-dns" and stack.dns is None and stack.geodns is None:
        yield "proxy.tls", "acme-dns answers DNS-01 through outpost:dns or outpost:geodns; define one of them"
    if proxy.tls == "files":
        for key in ("certificate", "key"):
            if getattr(proxy, key) is None:
                yield f"proxy.{key}", "required for tls: files (the name of a secret in outpost:secrets)"
    elif proxy.certificate or proxy.key:
        yield "proxy", "certificate: and key: only apply to tls: files"
    yield from _wildcards(stack)
    yield from _acme_dns_zones(stack)


def _final(stack: Stack, name: str) -> str:
    return name.replace("{suffix}", stack.suffix)


def _wildcards(stack: Stack) -> Iterator[Problem]:
    proxy = stack.proxy
    if proxy.wildcards and proxy.tls not in TLS_WILDCARD_MODES:
        yield "proxy.wildcards", f"only applies to tls: {' or '.join(TLS_WILDCARD_MODES)} (certificates outpost issues)"
        return
    hosts = {_final(stack, r.host) for r in stack.routes}
    seen: set[str] = set()
    for j, wildcard in enumerate(proxy.wildcards):
        name = _final(stack, wildcard)
        if name in seen:
            yield f"proxy.wildcards[{j}]", f"{name} is listed twice"
        seen.add(name)
        if not any(covering_wildcard(h, [name]) for h in hosts):
            yield f"proxy.wildcards[{j}]", (f"{name} covers no route hostname (it covers exactly one label in place "
                                            "of the *, e.g. app.example.org for *.example.org); remove it or fix it")


def _acme_dns_zones(stack: Stack) -> Iterator[Problem]:
    """acme-dns: every certificate name lies in a zone outpost:dns or outpost:geodns holds, whose
    provider then answers its DNS-01 challenge with that zone's token."""
    if stack.proxy.tls != "acme-dns" or (stack.dns is None and stack.geodns is None):
        return
    zones = " and ".join(f"outpost:{key} holds {d.zone}" for key, d in (("dns", stack.dns), ("geodns", stack.geodns)) if d)
    wildcards = [_final(stack, w) for w in stack.proxy.wildcards]
    names: dict[str, str] = {}
    for i, route in enumerate(stack.routes):
        host = _final(stack, route.host)
        if covering_wildcard(host, wildcards) is None:
            names.setdefault(host, f"routes[{i}].host")
    for j, name in enumerate(wildcards):
        names.setdefault(name, f"proxy.wildcards[{j}]")
    in_dns = []
    for name, where in names.items():
        zone = stack.dns_zone_for(name)
        if zone is None:
            yield where, (f"{name} is in no zone outpost manages ({zones}): tls: acme-dns answers DNS-01 through the "
                          "provider holding the name's zone; move the name under a zone or use another tls mode")
        elif zone is stack.dns:
            in_dns.append(name)
    if in_dns and stack.dns is not None and stack.dns.token is None:
        yield "dns.token", (f"required for tls: acme-dns ({', '.join(in_dns)} in zone {stack.dns.zone}): the name of the "
                            "secret in outpost:secrets holding a Hetzner API token that may edit the zone (a Cloud API "
                            "token, as for zones in the Hetzner Console; it may hold the same value as hcloud:token)")


def _secret_refs(stack: Stack) -> Iterator[tuple[str, str]]:
    yield "admin.private_key", stack.admin.private_key
    for name, svc in stack.services.items():
        for var, secret in svc.secret_env.items():
            yield f"services.{name}.secret_env.{var}", secret
        for path, secret in svc.secret_files.items():
            yield f"services.{name}.secret_files.{path}", secret
    for key in ("certificate", "key"):
        if getattr(stack.proxy, key):
            yield f"proxy.{key}", getattr(stack.proxy, key)
    if stack.proxy.acme_ca_root:
        yield "proxy.acme_ca_root", stack.proxy.acme_ca_root
    if stack.dns and stack.dns.token:
        yield "dns.token", stack.dns.token
    if stack.geodns:
        yield "geodns.token", stack.geodns.token
    for name, bucket in stack.buckets.items():
        yield f"buckets.{name}.credentials.access_key", bucket.credentials.access_key
        yield f"buckets.{name}.credentials.secret_key", bucket.credentials.secret_key
    for name, backup in stack.backups.items():
        if backup.password:
            yield f"backups.{name}.password", backup.password


def _secrets(stack: Stack) -> Iterator[Problem]:
    for where, secret in _secret_refs(stack):
        if secret not in stack.secrets:
            yield where, (f"secret {secret!r} is not in outpost:secrets (set it with "
                          f"`pulumi config set --secret --path 'outpost:secrets.{secret}' VALUE`)")


def _dns(stack: Stack) -> Iterator[Problem]:
    if stack.geodns:
        for i, rec in enumerate(stack.geodns.records):
            where = f"geodns.records[{i}]"
            for pool, hosts in rec.pools.items():
                for j, host in enumerate(hosts):
                    if host not in stack.hosts:
                        yield f"{where}.pools.{pool}[{j}]", f"host {host!r} is not defined in outpost:hosts (defined: {_choices(stack.hosts)})"
            for pool in rec.rules:
                if pool not in rec.pools:
                    yield f"{where}.rules.{pool}", f"pool {pool!r} is not defined in pools (defined: {_choices(rec.pools)})"
            if rec.default not in rec.pools:
                yield f"{where}.default", f"default pool {rec.default!r} is not defined in pools (defined: {_choices(rec.pools)})"
            if rec.health and rec.health.protocol != "tcp" and not rec.health.path.startswith("/"):
                yield f"{where}.health.path", "must start with /"
        yield from _geodns_records(stack)


def _geodns_records(stack: Stack) -> Iterator[Problem]:
    """Names that are record names, pool hosts that have the address the record needs and serve
    the route the record answers for, one record per name and type."""
    geodns = stack.geodns
    version = {"A": 4, "AAAA": 6}
    routes = records.route_hostnames(stack)
    seen: dict[tuple[str, str], int] = {}
    for i, rec in enumerate(geodns.records):
        where = f"geodns.records[{i}]"
        name = records.geo_name(stack, rec)
        if not records.RELATIVE_NAME_RE.match(name):
            yield f"{where}.name", (f"{rec.name!r} is not a record name relative to {geodns.zone}: '@' for the "
                                    "apex or labels of a-z 0-9 - _ like app{suffix}")
            continue
        first = seen.setdefault((name, rec.type), i)
        if first != i:
            yield f"{where}.name", f"geodns.records[{first}] already defines {rec.type} records for {name!r}"
        fqdn = records.geo_fqdn(stack, rec)
        serving = records.serving_hosts(stack, routes[fqdn]) if fqdn in routes else None
        pool_of: dict[str, str] = {}
        for pool, hosts in rec.pools.items():
            if not hosts:
                yield f"{where}.pools.{pool}", "lists no host; a pool answers with its hosts' addresses"
            if pool != rec.default and pool not in rec.rules:
                yield f"{where}.pools.{pool}", (f"pool {pool!r} has no rule and is not the default pool ({rec.default!r}), "
                                                "so it would never answer; give it continents or countries in rules")
            for j, host in enumerate(hosts):
                if pool_of.setdefault(host, pool) != pool:
                    yield f"{where}.pools.{pool}[{j}]", (f"host {host!r} is already in pool {pool_of[host]!r}; a host may be "
                                                         f"in one pool only (to fall back to a pool, make it the default)")
                if host not in stack.hosts:
                    continue  # reported by _dns
                if version[rec.type] not in records.address_versions(stack, host):
                    yield (f"{where}.pools.{pool}[{j}]", f"host {host!r} has no public IPv{version[rec.type]} "
                           f"address for a {rec.type} record")
                elif serving is not None and host not in serving:
                    yield (f"{where}.pools.{pool}[{j}]", f"host {host!r} does not serve {fqdn} (the routes "
                           f"for it run on {_choices(serving)}): its proxy would not answer")
        region_of: dict[str, str] = {}
        for pool, codes in rec.rules.items():
            for j, code in enumerate(codes):
                if region_of.setdefault(code, pool) != pool:
                    yield f"{where}.rules.{pool}[{j}]", f"{code} already routes to pool {region_of[code]!r}; a region routes to one pool"


def _dns_records(stack: Stack) -> Iterator[Problem]:
    """The `outpost:dns` zone: one provider per zone, well-formed extra records, no two sources
    claiming one name and type, a suffix on every name written into a shared zone, an address for
    every name."""
    dns = stack.dns
    if dns is None:
        return
    if stack.geodns and stack.geodns.zone == dns.zone:
        yield "geodns.zone", (f"{dns.zone!r} is also outpost:dns.zone; one provider serves a zone: give GeoDNS "
                              f"a zone of its own (e.g. geo.{dns.zone}) and delegate it with NS records in outpost:dns.records")
    shared = not dns.create_zone and stack.suffix
    for i, rec in enumerate(dns.records):
        where = f"dns.records[{i}]"
        name = stack.with_suffix(rec.name).lower()
        if name.endswith(".") or name == dns.zone or name.endswith("." + dns.zone):
            yield f"{where}.name", (f"{rec.name!r} is a full name; names are relative to the zone {dns.zone}: "
                                    f"'www' for www.{dns.zone}, '@' for the apex")
        elif not records.RELATIVE_NAME_RE.match(name):
            yield f"{where}.name", f"{rec.name!r} is not a record name: '@' or labels of a-z 0-9 - _ (a leading '*.' is allowed)"
        elif name == "@" and rec.type in ("CNAME", "NS"):
            yield f"{where}.type", (f"a {rec.type} record cannot sit at the zone apex (Hetzner keeps the zone's own "
                                    "SOA and NS records there)")
        if shared and "{suffix}" not in rec.name:
            yield f"{where}.name", _shared_zone_message(stack, rec.name)
    for fqdn, indexes in records.route_hostnames(stack).items():
        if records.zone_of(stack, fqdn) != "dns":
            continue
        where = f"routes[{indexes[0]}].host"
        if shared and "{suffix}" not in stack.routes[indexes[0]].host:
            yield where, _shared_zone_message(stack, stack.routes[indexes[0]].host)
        serving = records.serving_hosts(stack, indexes)
        for host in serving:
            cfg = stack.hosts[host]
            if cfg.provider == "static" and not records.address_versions(stack, host):
                yield where, (f"{fqdn} is served by host {host!r}, whose address {cfg.address!r} is not an IP address; "
                              "an A/AAAA record needs one: give the host's public IP as address (ssh_address may stay a name)")
    yield from _record_clashes(stack)


def _shared_zone_message(stack: Stack, name: str) -> str:
    return (f"{name!r} has no {{suffix}}: outpost:dns.create_zone is false, so the zone {stack.dns.zone} is shared "
            f"with another stack, and without the suffix ({stack.suffix!r}) this stack's record would take over "
            "that stack's name; write it like app{suffix}")


def _record_clashes(stack: Stack) -> Iterator[Problem]:
    """Two sources for one (name, type); a CNAME beside anything else; one TTL per extra set."""
    by_key: dict[tuple[str, str], records.RecordSet] = {}
    by_name: dict[str, list[records.RecordSet]] = defaultdict(list)
    reported: set[tuple[str, str]] = set()
    for rs in records.record_sets(stack):
        first = by_key.setdefault((rs.name, rs.type), rs)
        if first is not rs:
            if (rs.origins[0], first.origins[0]) not in reported:  # once, not once per A and AAAA
                reported.add((rs.origins[0], first.origins[0]))
                yield _origin_key(rs), (f"{rs.fqdn(stack.dns.zone)} already gets {rs.type} records from "
                                        f"outpost:{first.origins[0]}; one name, one source: rename one of them")
            continue
        others = by_name[rs.name]
        if others and "CNAME" in {rs.type} | {o.type for o in others}:
            yield _origin_key(rs), (f"{rs.fqdn(stack.dns.zone)} has a CNAME (outpost:{_cname_origin(others + [rs])}), "
                                    "which cannot stand beside other records of the same name")
        others.append(rs)
        if len(rs.origins) > 1 and rs.origins[0].startswith("dns.records["):
            indexes = [int(o[len("dns.records["):-1]) for o in rs.origins]
            ttls = [stack.dns.records[i].ttl for i in indexes]
            for i, ttl in zip(indexes[1:], ttls[1:]):
                if ttl != ttls[0]:
                    yield f"dns.records[{i}].ttl", (f"differs from {rs.origins[0]}'s: records with the same name and "
                                                     "type form one record set with one TTL")


def _origin_key(rs: records.RecordSet) -> str:
    origin = rs.origins[0]
    return f"{origin}.name" if origin.startswith("dns.records[") else origin


def _cname_origin(sets: list[records.RecordSet]) -> str:
    return next(rs.origins[0] for rs in sets if rs.type == "CNAME")


def _buckets_and_backups(stack: Stack) -> Iterator[Problem]:
    for name, backup in stack.backups.items():
        where = f"backups.{name}"
        if backup.host not in stack.hosts:
            yield f"{where}.host", f"host {backup.host!r} is not defined in outpost:hosts (defined: {_choices(stack.hosts)})"
        if backup.bucket not in stack.buckets:
            yield f"{where}.bucket", f"bucket {backup.bucket!r} is not defined in outpost:buckets (defined: {_choices(stack.buckets)})"
        bucket = stack.buckets.get(backup.bucket)
        if bucket and bucket.expire_days and backup.tool == "restic":
            yield (f"{where}.bucket", f"bucket {backup.bucket!r} expires objects after {bucket.expire_days} days: "
                   "that deletes restic pack files later snapshots still need; drop expire_days or use another bucket")
        if backup.tool in ("restic", "kopia") and not backup.password:
            yield f"{where}.password", f"required for tool: {backup.tool} (the name of the repository password secret)"
        if backup.tool == "litestream" and any(not p.endswith((".db", ".sqlite", ".sqlite3")) for p in backup.paths):
            yield f"{where}.paths", "litestream replicates SQLite databases: list database files (*.db, *.sqlite, *.sqlite3)"
        yield from _private_state(stack, name, backup)
    for name, bucket in stack.buckets.items():
        if bucket.object_lock_days and not bucket.versioning:
            yield f"buckets.{name}.versioning", "Object Lock needs versioning: true"
        if bucket.noncurrent_expire_days and not bucket.versioning:
            yield (f"buckets.{name}.noncurrent_expire_days", "only applies with versioning: true (an unversioned "
                   "bucket has no noncurrent versions); use expire_days, or turn versioning on")


def _private_state(stack: Stack, name: str, backup) -> Iterator[Problem]:
    """A path in the state directory of a DynamicUser= process service: /var/lib/<dir> is then a
    symlink into /var/lib/private/ (0700 root), which litestream's runner (the databases' owner)
    cannot reach, and which a restore would replace by a real directory."""
    for svc_name, svc in stack.services_on(backup.host).items():
        if not (svc.dynamic_user and svc.state_directory):
            continue
        state = f"/var/lib/{svc.state_directory}"
        for path in backup.paths:
            if path == state or path.startswith(state + "/"):
                yield (f"backups.{name}.paths", f"{path} lies in the state directory {state} of service {svc_name!r}, "
                       "which runs as a dynamic user (no user:): systemd keeps that directory in /var/lib/private/ "
                       f"behind a symlink, out of reach of the backup's runner and its restore; set services.{svc_name}.user "
                       "(e.g. to the service's name) so the directory is a real one with a fixed owner")
                break


def _backup_tools(stack: Stack) -> Iterator[Problem]:
    """kopia is accepted by the model but not rendered: Debian (12 and 13) does not package it and
    PyPI ships no binary of it, so outpost has no pinned, verified way to install it on a host."""
    for name, backup in stack.backups.items():
        if backup.tool == "kopia":
            yield (f"backups.{name}.tool", "kopia is not supported yet (Debian does not package it, so outpost "
                   "cannot install it); use restic: encrypted, deduplicated snapshots in the same bucket")


def _calendars(stack: Stack) -> Iterator[Problem]:
    where: dict[str, list[str]] = defaultdict(list)
    for name, svc in stack.services.items():
        if svc.schedule:
            where[svc.schedule.calendar].append(f"services.{name}.schedule.calendar")
    for name, backup in stack.backups.items():
        if backup.tool != "litestream":
            where[backup.schedule].append(f"backups.{name}.schedule")
    for expr, error in invalid_calendars(sorted(where)).items():
        for key in where[expr]:
            yield key, f"{expr!r} is not a systemd calendar expression ({error}); e.g. daily, *-*-* 04:00:00, Mon..Fri 08:00"
