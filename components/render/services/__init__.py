"""Services: every `outpost:services` entry on a host → the units a careful operator writes by hand.

Pure: `service_manifests(stack, host)` returns one `svc-<service>` Manifest per service on the host
(sorted by name); nothing here touches the network, the clock or the host. Templates live in
`files/templates/services/` (Jinja2, StrictUndefined; a finalize hook refuses any value with a
control character, so no value can start a new unit line). Every value is validated or escaped for
its context before it reaches a template: `%` → `%%` where systemd expands specifiers (only `%i`
stays, in `command`/`exec` of templated units: the replica's port), `$` → `$$` on command lines,
words quoted per systemd.syntax(7). `env` values are always literal (no specifier, no variable).

What each kind of service becomes:

* container (rootless, the default): a lingering system user `<user>` and, owned by it,
  podman quadlets in `~<user>/.config/containers/systemd/`: `<svc>@.container` (replicas, published
  on `127.0.0.1:%i`) or `<svc>.container`. The image tag lives in `~/.config/outpost/<svc>.env`
  (`TAG=`, 0600, read by systemd: `Image=<image>:${TAG}`), secret env vars in
  `~/.config/outpost/<svc>.secret.env` (0600, podman `--env-file`), secret files 0600. A oneshot
  `<svc>-image.service` builds (`container.build`) or pulls the image and is the manifest's first
  restart group, so a bad tag fails the apply before any replica restarts. `rootful: true` → the
  same under `/etc/containers/systemd/` and `/etc/outpost/services/`, owned by root.
* process: a native system unit `<svc>.service` / `<svc>@.service` (replicas, `%i` = port), hardened
  to a `systemd-analyze security` exposure of at most 3.0, running as a `DynamicUser=` (or a fixed
  system user when the service owns secret files or names `user:`), its artifacts shipped as bytes.
* socket: N socket units `<svc>@1.socket` ... `<svc>@N.socket` on one port with `ReusePort=true`,
  each activating its own `<svc>@<n>.service`.
* schedule: `<svc>.timer` (system) + the oneshot job; `after_success` → `OnSuccess=` of
  `outpost-restart@<target>.service`, which runs the agent's `restart svc-<target>`. A rootless
  container job runs in its user's systemd, started by a system `<svc>.service` through
  `systemctl --user -M <user>@` so that the OnSuccess= handler runs as root.

Each long-running service gets a restart group (strategy from `deploy`, `when` = every file whose
change needs a restart, health URL per instance, HAProxy drain, blue-green switch) and
`Manifest.restarts[<svc>]`.

Layout: `container.py` and `process.py` render each kind (a socket is a process's); `common.py`
holds what every kind shares (templates, where files go, secrets, health, the restart group, jobs);
this module names the service, picks its kind and checks that no two services define one unit.
"""

from __future__ import annotations

import os
import re

from ...config.model import Stack
from ...config.problem import KeyProblem
from ...config.reserved import RESERVED_NAMES, RESERVED_PREFIXES
from ..manifest import File, Manifest
from .common import _seconds, container_place, home
from .container import CONTAINER_START_TIMEOUT, container_manifest
from .process import HARDENING, process_manifest

__all__ = ["CONTAINER_START_TIMEOUT", "HARDENING", "_seconds", "check_service_name", "check_unit_names", "container_manifest",
           "container_place", "defined_units", "home", "process_manifest", "service_manifest",
           "service_manifests"]


# The manifest, its restart groups and units are named after services: the agent accepts
# [a-z0-9][a-z0-9-]* there (no '_').
SERVICE_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")


def check_service_name(name: str) -> None:
    if not SERVICE_NAME_RE.fullmatch(name):
        raise KeyProblem(f"services.{name}", f"its manifest (svc-{name}) and restart group need a name "
                         "of a-z, 0-9 and '-' (no '_')")
    if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
        raise KeyProblem(f"services.{name}", f"a unit named {name}.service would replace the host's own "
                         "(ssh, the proxy, podman, systemd ...); choose another name")


def service_manifest(stack: Stack, host: str, name: str) -> Manifest:
    check_service_name(name)
    svc = stack.services[name]
    if svc.container is not None:
        return container_manifest(stack, host, name)
    return process_manifest(stack, host, name)


UNIT_SUFFIXES = (".service", ".socket", ".timer", ".container")


def defined_units(manifest: Manifest) -> list[tuple[str, str, File]]:
    """(scope, unit name, file) for every unit or quadlet file of a manifest."""
    out = []
    for f in manifest.files:
        directory, base = os.path.split(f.path)
        if not base.endswith(UNIT_SUFFIXES) or directory.endswith(".d"):
            continue
        unit = base.removesuffix(".container") + ".service" if base.endswith(".container") else base
        user = next((u.name for u in manifest.users if directory.startswith(home(u.name) + "/")), None)
        out.append(("system" if user is None else f"user:{user}", unit, f))
    return out


def check_unit_names(manifests: list[Manifest]) -> None:
    """No two services may define the same unit (e.g. a service `a-image` next to `a`'s image
    unit); the shared restart template is the one unit several manifests ship, identically."""
    seen: dict[tuple[str, str], tuple[str, File]] = {}
    for m in manifests:
        for scope, unit, f in defined_units(m):
            other = seen.setdefault((scope, unit), (m.name, f))
            if other[0] != m.name and other[1] != f:
                raise KeyProblem(f"services.{m.name.removeprefix('svc-')}", f"unit {unit} ({scope}) is defined by both "
                                 f"{other[0]} and {m.name}; rename one of the services")


def service_manifests(stack: Stack, host: str) -> list[Manifest]:
    """One `svc-<service>` Manifest per service that runs on `host`, sorted by service name."""
    manifests = [service_manifest(stack, host, name) for name in sorted(stack.services_on(host))]
    check_unit_names(manifests)
    return manifests
