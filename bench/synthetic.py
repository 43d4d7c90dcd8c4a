"""The synthetic fleet the scale benchmarks measure: HOSTS hosts (half Hetzner, half static), each
running SERVICES_PER_HOST services of four kinds (two-replica containers behind a route, process
services, socket-activated services, nightly jobs). bench/eval_scale.py evaluates it under mocks;
bench/engine_scale.py previews it with the real engine.

`synthetic_config(hosts, form=...)` returns the stack's config mapping (`outpost:*` keys, the
secrets block holding placeholders); FORMS names each way of writing the same fleet, so a new form
(e.g. a compact fleet form) is one more entry that must render what "long" renders.
`SECRETS` are the values a real run sets for the secrets the config names.
"""

from __future__ import annotations

from collections.abc import Callable

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA0I4Ww4cUKzj8bGqL1TYtDfQ1ybB0fKzmKq5gqAqZ5o bench"
SERVICES_PER_HOST = 10
# Values for a real engine run: a preview reads them, never uses them (it connects nowhere).
SECRETS = {"deploy_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nbench\n-----END OPENSSH PRIVATE KEY-----\n",
           "token": "bench-token"}
# hcloud hosts make the engine configure the hcloud provider; a preview reads no API with them.
KEY_SECRETS = {"hcloud:token": "0" * 64}


def long_form(hosts: int, services_per_host: int = SERVICES_PER_HOST) -> dict:
    """One entry per host in outpost:hosts and one per (host, service) in outpost:services."""
    host_cfg, services, routes = {}, {}, []
    for h in range(hosts):
        name = f"h{h}"
        if h % 2:
            host_cfg[name] = {"provider": "static", "address": f"198.51.100.{h % 250 + 1}", "host_key": KEY}
        else:
            host_cfg[name] = {"provider": "hcloud", "type": "cx22", "location": "hel1", "role": "web"}
        for s in range(services_per_host):
            svc = f"s{s}-{name}"
            kind = s % 4
            if kind == 0:
                services[svc] = {"hosts": [name], "container": {"image": "ghcr.io/x/app", "tag": "1", "port": 8000},
                                 "replicas": [10000 + 2 * s, 10001 + 2 * s], "health": {"path": "/ready"},
                                 "env": {"A": "b"}, "secret_env": {"TOKEN": "token"}}
                routes.append({"host": f"{svc}.example.org", "service": svc})
            elif kind == 1:
                services[svc] = {"hosts": [name], "process": {"exec": "/usr/bin/python3 -m http.server %i"},
                                 "replicas": [10000 + 2 * s]}
            elif kind == 2:
                services[svc] = {"hosts": [name], "process": {"exec": "/usr/bin/python3 /opt/app.py"},
                                 "socket": {"port": 10000 + 2 * s, "instances": 2}}
            else:
                services[svc] = {"hosts": [name], "container": {"image": "ghcr.io/x/etl", "tag": "1"},
                                 "schedule": {"calendar": "*-*-* 04:00:00"}}
    return {
        "outpost:domain": "example.org",
        "outpost:admin": {"user": "admin", "ssh_keys": [KEY], "private_key": "deploy_key"},
        "outpost:hosts": host_cfg,
        "outpost:services": services,
        "outpost:routes": routes,
        "outpost:proxy": {"kind": "caddy", "tls": "internal"},
        "outpost:secrets": {"deploy_key": {"secure": "x"}, "token": {"secure": "x"}},
    }


def service(s: int, hosts: list[str]) -> tuple[dict, dict | None]:
    """Service s{s} on HOSTS, of kind s % 4 as in the long form, and its route (or None)."""
    kind, name = s % 4, f"s{s}"
    if kind == 0:
        return ({"hosts": hosts, "container": {"image": "ghcr.io/x/app", "tag": "1", "port": 8000},
                 "replicas": [10000 + 2 * s, 10001 + 2 * s], "health": {"path": "/ready"},
                 "env": {"A": "b"}, "secret_env": {"TOKEN": "token"}},
                {"host": f"{name}.example.org", "service": name})
    if kind == 1:
        return {"hosts": hosts, "process": {"exec": "/usr/bin/python3 -m http.server %i"},
                "replicas": [10000 + 2 * s]}, None
    if kind == 2:
        return {"hosts": hosts, "process": {"exec": "/usr/bin/python3 /opt/app.py"},
                "socket": {"port": 10000 + 2 * s, "instances": 2}}, None
    return {"hosts": hosts, "container": {"image": "ghcr.io/x/etl", "tag": "1"},
            "schedule": {"calendar": "*-*-* 04:00:00"}}, None


def groups_form(hosts: int, services_per_host: int = SERVICES_PER_HOST) -> dict:
    """The same fleet as a fleet is written (outpost:groups): half the hosts a Hetzner group of
    COUNT servers, half a group of static members each with its address; the services s0, s1, ...
    each run on every host, of the long form's four kinds. Per host the same manifests, the same
    resources; the config stays a few KB whatever the size."""
    static = {f"edge-{h}": {"address": f"198.51.100.{h % 250 + 1}"} for h in range(1, hosts, 2)}
    groups = {"edge": {"host": {"provider": "static", "host_key": KEY}, "members": static}} if static else {}
    if hosts - len(static):
        groups["cloud"] = {"count": hosts - len(static), "host": {"provider": "hcloud", "type": "cx22",
                                                                    "location": "hel1", "role": "web"}}
    services, routes = {}, []
    for s in range(services_per_host):
        services[f"s{s}"], route = service(s, sorted(groups))
        routes += [route] if route else []
    doc = long_form(0)
    doc.pop("outpost:hosts")
    return {**doc, "outpost:groups": groups, "outpost:services": services, "outpost:routes": routes}


FORMS: dict[str, Callable[..., dict]] = {"long": long_form, "groups": groups_form}


def synthetic_config(hosts: int, services_per_host: int = SERVICES_PER_HOST, form: str = "long") -> dict:
    """The synthetic stack of HOSTS hosts written in FORM (a key of FORMS)."""
    return FORMS[form](hosts, services_per_host)
