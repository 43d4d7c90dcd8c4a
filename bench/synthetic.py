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


FORMS: dict[str, Callable[..., dict]] = {"long": long_form}


def synthetic_config(hosts: int, services_per_host: int = SERVICES_PER_HOST, form: str = "long") -> dict:
    """The synthetic stack of HOSTS hosts written in FORM (a key of FORMS)."""
    return FORMS[form](hosts, services_per_host)
