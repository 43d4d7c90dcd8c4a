"""The stacks the services golden tests and the real-tool validator tests share.

Every `Pulumi.*.yaml` of the repository, plus edge-case stacks built here: rootful containers and
jobs, HAProxy drains, blue-green processes with secret files, a socket service, a worker without
ports, and values full of quotes, `%`, `$` and backslashes that must come out escaped, never as an
extra unit line.
"""

from __future__ import annotations

from components.load import load_file, parse
from components.config.model import Stack
from components.render.manifest import Manifest
from components.render.services import service_manifests
from tests.conftest import ROOT, STACKS

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA0I4Ww4cUKzj8bGqL1TYtDfQ1ybB0fKzmKq5gqAqZ5o ops@laptop"

# Values that must reach the app unchanged and never break a unit line.
TRICKY_ENV = {
    "QUOTE": 'say "hi"',
    "PERCENT": "100% sure %n %i",
    "DOLLAR": "$HOME and ${TAG}",
    "BACKSLASH": "a\\b\\\\c",
    "SPACES": "  two  spaces  ",
    "SINGLE": "it's",
    "SEMICOLON": "a ; b",
}
TRICKY_COMMAND = """serve --greeting "hello world" --motto "it's 100% $real" --path 'a\\b' --x=%i"""


def _base(services: dict, **extra) -> dict:
    config = {
        "outpost:domain": "example.org",
        "outpost:admin": {"user": "admin", "ssh_keys": [KEY], "private_key": "deploy_key"},
        "outpost:hosts": {"h1": {"provider": "static", "address": "203.0.113.7", "host_key": KEY}},
        "outpost:services": services,
        "outpost:secrets": {"deploy_key": {"secure": "x"}, "api_key": {"secure": "x"},
                            "token": {"secure": "x"}, "db_password": {"secure": "x"}},
    }
    config.update({f"outpost:{k}": v for k, v in extra.items()})
    return config


EDGE = _base(
    {
        "web": {
            "hosts": ["h1"], "rootful": True,
            "container": {"image": "registry.example.org:5000/team/web", "tag": "v1.2_rc-3", "port": 8080,
                          "entrypoint": "/usr/local/bin/web", "command": TRICKY_COMMAND,
                          "auto_update": "registry", "volumes": ["/srv/web:/data:ro", "/srv/cache:/cache"]},
            "replicas": [7000, 7001, 7002],
            "env": TRICKY_ENV,
            "secret_env": {"API_KEY": "api_key", "DB_PASSWORD": "db_password"},
            "secret_files": {"/etc/web/token": "token"},
            "limits": {"cpu": "150%", "memory": "512M"},
            "health": {"path": "/healthz", "interval": "500ms", "timeout": "250ms", "retries": 5},
        },
        "web-reindex": {
            "hosts": ["h1"], "rootful": True, "user": "web",
            "container": {"image": "registry.example.org:5000/team/web", "tag": "v1.2_rc-3",
                          "command": "reindex --all"},
            "schedule": {"calendar": "Mon..Fri 02:15", "persistent": False},
            "after_success": {"restart": "web"},
        },
        "api": {
            "hosts": ["h1"],
            "process": {"exec": "/opt/api/api --port %i --motto \"it's 100% $real\"",
                        "artifacts": {"/opt/api/api": "files/demo/peerbook.py",
                                      "/opt/api/hello.py": "files/demo/hello.py"}},
            "replicas": [7100, 7101], "deploy": "blue-green",
            "env": {"MODE": "blue green", "PCT": "50%"},
            "secret_env": {"API_KEY": "api_key"},
            "secret_files": {"/etc/api/key.pem": "api_key"},
            "state_directory": "api",
            "limits": {"memory": "256M"},
            "health": {"path": "/health", "interval": "1s"},
        },
        "api-vacuum": {
            "hosts": ["h1"], "user": "api",
            "process": {"exec": "/usr/bin/python3 /opt/api/hello.py --once"},
            "schedule": {"calendar": "daily", "randomized_delay": "1h", "persistent": True},
            "after_success": {"restart": "api"},
        },
        "echo": {
            "hosts": ["h1"],
            "process": {"exec": "/usr/bin/python3 /opt/echo/app.py",
                        "artifacts": {"/opt/echo/app.py": "files/demo/wsgi_app.py"}},
            "socket": {"port": 7200, "instances": 2},
        },
        "worker": {
            "hosts": ["h1"],
            "container": {"image": "docker.io/library/busybox", "tag": "1.36",
                          "command": "sh -c 'while sleep 3600; do :; done'"},
            "limits": {"cpu": "10%"},
        },
        "httpd": {
            "hosts": ["h1"],
            "process": {"exec": "/usr/bin/python3 -m http.server --bind 127.0.0.1 7300"},
            "env": {"PYTHONUNBUFFERED": "1"},
        },
    },
    routes=[{"host": "web.example.org", "service": "web"}, {"host": "api.example.org", "service": "api"},
            {"host": "api.example.org", "path": "/echo", "service": "echo"}],
    proxy={"kind": "haproxy", "tls": "none"},
)

# A rootless registry service behind nginx with blue-green containers.
BLUEGREEN = _base(
    {
        "shop": {
            "hosts": ["h1"],
            "container": {"image": "ghcr.io/acme/shop", "tag": "2025-06-01", "port": 3000},
            "replicas": [3000, 3001], "deploy": "blue-green",
            "health": {"path": "/up"},
        },
    },
    routes=[{"host": "shop.example.org", "service": "shop"}],
    proxy={"kind": "nginx", "tls": "none"},
)

EDGE_CASES = {"edge-haproxy": EDGE, "bluegreen-nginx": BLUEGREEN}


def edge_stack(name: str) -> Stack:
    return parse(EDGE_CASES[name], name)


def stack(case: str) -> Stack:
    return edge_stack(case) if case in EDGE_CASES else load_file(ROOT / f"Pulumi.{case}.yaml")


CASES = [*STACKS, *EDGE_CASES]


def rendered(case: str) -> dict[str, list[Manifest]]:
    """Every host's service manifests of a case."""
    st = stack(case)
    return {host: service_manifests(st, host) for host in st.hosts}
