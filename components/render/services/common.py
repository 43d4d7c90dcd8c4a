"""What every kind of service shares: the unit templates, where a service's files live (`Place`),
its secret env file and secret files, limits, health checks and the restart group (drains,
blue-green switch), and the timer and trigger units of a scheduled job.
Pure, like the rest of the render layer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...config.model import Service, Stack
from ...config.problem import KeyProblem
from ...config.repository import repo_file
from ...config.timespan import parse_timespan
from .. import templates
from ..base import AGENT_PATH
from ..manifest import File, Manifest, Unit, secret_ref
from ..systemd import exec_line, single_line, unit_text

REPO = Path(__file__).resolve().parents[3]
TEMPLATES = REPO / "files" / "templates" / "services"
RESTART_TEMPLATE = "outpost-restart@.service"
SYSTEM_UNIT_DIR = "/etc/systemd/system"
SYSTEM_QUADLET_DIR = "/etc/containers/systemd"
SYSTEM_CONFIG_DIR = "/etc/outpost/services"
HAPROXY_ADMIN_SOCKET = "/run/haproxy/admin.sock"
DEFAULT_HEALTH = {"interval": 2, "timeout": 1, "retries": 20}


def _finalize(value: object) -> object:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"refusing to render {value!r} into a unit file")
    if isinstance(value, int):
        return value
    return single_line(value, "rendered value")


def render(template: str, **context: Any) -> str:
    return templates.render(TEMPLATES, _finalize, template, **context)


@dataclass(frozen=True)
class Place:
    """The systemd manager a service's units run in and the directories its files go to."""

    scope: str          # "system" or "user:<name>"
    owner: str          # owner (and group) of its config files
    quadlet_dir: str
    unit_dir: str
    config_dir: str     # env files, image build script and inputs
    target: str         # what long-running units are wanted by

    @property
    def user(self) -> str | None:
        return self.scope.split(":", 1)[1] if self.scope != "system" else None


def home(user: str) -> str:
    return f"/home/{user}"


def container_place(stack: Stack, name: str) -> Place:
    if stack.services[name].rootful:
        return Place("system", "root", SYSTEM_QUADLET_DIR, SYSTEM_UNIT_DIR, SYSTEM_CONFIG_DIR,
                     "multi-user.target")
    user = stack.service_user(name)
    h = home(user)
    return Place(f"user:{user}", user, f"{h}/.config/containers/systemd", f"{h}/.config/systemd/user",
                 f"{h}/.config/outpost", "default.target")


PROCESS_PLACE = Place("system", "root", SYSTEM_QUADLET_DIR, SYSTEM_UNIT_DIR, SYSTEM_CONFIG_DIR,
                      "multi-user.target")


@dataclass
class Parts:
    """What one service contributes to its manifest, collected before sorting."""

    files: list[File] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)
    restart_paths: list[str] = field(default_factory=list)   # `when` of the service's group

    def add(self, f: File, restarts: bool = True) -> File:
        self.files.append(f)
        if restarts:
            self.restart_paths.append(f.path)
        return f


def repo_bytes(relative: str, what: str) -> tuple[bytes, bool]:
    """A repository file's bytes and whether it is executable (config/repository.py checked that
    RELATIVE names a file inside the repository)."""
    path = repo_file(relative)
    assert path is not None, f"{what}: {relative!r} passed check but is not a repository file"
    return path.read_bytes(), os.access(path, os.X_OK)


def secret_env_text(svc: Service, quote: bool) -> str:
    """KEY=<secret:NAME> lines. quote: double quotes for systemd's EnvironmentFile= parser, the
    value escaped inside them on fill-in (format systemd-env); podman's --env-file takes the rest
    of the line literally (format podman-env). See secret_values.py."""
    lines = ["# Managed by outpost: secret environment; values are filled in on apply."]
    for key, secret in sorted(svc.secret_env.items()):
        ref = secret_ref(secret)
        lines.append(f'{key}="{ref}"' if quote else f"{key}={ref}")
    return "\n".join(lines) + "\n"


def secret_parts(svc: Service, place: Place, name: str, parts: Parts, *, owner: str, quote: bool) -> list[str]:
    """The secret env file and secret files (0600); returns the env file paths to read."""
    env_files = []
    if svc.secret_env:
        path = f"{place.config_dir}/{name}.secret.env"
        parts.add(File(path, secret_env_text(svc, quote), "0600", place.owner, place.owner,
                       secret_format="systemd-env" if quote else "podman-env"))
        env_files.append(path)
    for path, secret in sorted(svc.secret_files.items()):
        parts.add(File(path, secret_ref(secret),
                       "0600", owner, owner))
    return env_files


def limit_lines(svc: Service) -> list[str]:
    lines = []
    if svc.limits and svc.limits.cpu:
        lines.append(f"CPUQuota={svc.limits.cpu}")
    if svc.limits and svc.limits.memory:
        lines.append(f"MemoryMax={svc.limits.memory}")
    return lines


def health_settings(svc: Service) -> dict[str, float | int]:
    if svc.health is None:
        return dict(DEFAULT_HEALTH)
    return {"interval": _seconds(svc.health.interval), "timeout": _seconds(svc.health.timeout),
            "retries": svc.health.retries}


def _seconds(span: str) -> float | int:
    """A time span the model accepted (positive, whole ms) in seconds, as the agent reads it."""
    usec = parse_timespan(span)
    return usec // 10**6 if usec % 10**6 == 0 else usec / 10**6


def health_url(svc: Service, port: int | None) -> str | None:
    if svc.health is None or port is None:
        return None
    return f"http://127.0.0.1:{port}{svc.health.path}"


def is_routed(stack: Stack, name: str) -> bool:
    return name in stack.routed_services


def drain(stack: Stack, name: str, port: int, ports: list[int]) -> dict[str, Any] | None:
    """How the agent takes a routed replica out of the proxy's rotation before it restarts it:
    HAProxy through its admin socket (r<port> of backend <svc>); Caddy and nginx, which have no
    runtime API for it, in the kernel: their new connections to 127.0.0.1:<port> go to the next
    replica's port (`to`) until the replica is back, so they never meet a refused connection
    (outpost_agent/restarts.py). A lone replica has no sibling: its new connections are refused."""
    if not is_routed(stack, name):
        return None
    if stack.proxy.kind == "haproxy":
        return {"kind": "haproxy", "socket": HAPROXY_ADMIN_SOCKET, "backend": name, "server": f"r{port}"}
    others = [p for p in ports if p != port]
    if not others:
        return {"kind": "port", "port": port}
    return {"kind": "port", "port": port, "to": ([p for p in ports if p > port] or others)[0]}


def switch(stack: Stack, name: str) -> dict[str, Any] | None:
    """Blue-green: the switch file the agent rewrites ({port} = the live slot), an nftables rule
    that points the proxy's stable address for the service at that slot; loading it is the switch
    (the proxy is not reloaded: see components/render/proxy.py)."""
    if not is_routed(stack, name):
        return None
    # lazily: only stacks with routes need the proxy side; `upstream` is the one the proxy
    # config is rendered from, so the switch file points the address that config uses
    from ..proxy import bluegreen_switch_template, switch_argv, switch_validate_argv
    from ..routes import upstream

    path, template = bluegreen_switch_template(stack.proxy.kind, upstream(stack, name))
    return {"path": path, "template": template, "reload": switch_argv(path),
            "mode": "0644", "owner": "root", "group": "root", "validate": switch_validate_argv(path)}


def service_group(stack: Stack, name: str, place: Place, parts: Parts,
                  instances: list[tuple[str, int | None]], *, drains: bool) -> dict[str, Any]:
    """The restart group of a long-running service: one entry per (unit, port)."""
    svc = stack.services[name]
    strategy = svc.deploy
    bluegreen = switch(stack, name) if strategy == "blue-green" else None
    if strategy == "blue-green" and bluegreen is None:
        strategy = "rolling"  # no route, no proxy to switch: roll the two slots instead
    group: dict[str, Any] = {
        "group": name, "strategy": strategy, "scope": place.scope,
        "when": sorted(set(parts.restart_paths)),
        "instances": [{"unit": unit, "health": health_url(svc, port),
                       "drain": drain(stack, name, port, [p for _, p in instances if p])
                       if drains and port and strategy == "rolling" else None}
                      for unit, port in instances],
        "health": health_settings(svc),
    }
    if bluegreen:
        group["switch"] = bluegreen
    return group


def after_success_units(svc: Service) -> list[str]:
    return [f"outpost-restart@{svc.after_success.restart}.service"] if svc.after_success else []


def restart_template() -> File:
    """Shared by every job manifest with after_success (identical content, so shared safely)."""
    exec_start = exec_line(["/usr/bin/python3", AGENT_PATH, "restart"]) + " svc-%i"
    return File(f"{SYSTEM_UNIT_DIR}/{RESTART_TEMPLATE}", render("restart.service.j2", exec_start=exec_start))


def job_parts(stack: Stack, name: str, place: Place, parts: Parts) -> None:
    """`<svc>.timer` (system, enabled) and, for a rootless container job, the system unit it starts."""
    svc = stack.services[name]
    sched = svc.schedule
    parts.add(File(f"{SYSTEM_UNIT_DIR}/{name}.timer", render(
        "timer.j2", comment=f"schedule of job {name}", description=unit_text(f"{name}: schedule"),
        calendar=unit_text(sched.calendar, f"services.{name}.schedule.calendar"),
        randomized_delay=sched.randomized_delay or "", persistent="true" if sched.persistent else "false")),
        restarts=False)
    parts.units.append(Unit(f"{name}.timer", "system"))
    if place.user:
        exec_start = exec_line(["/usr/bin/systemctl", "--user", "-M", f"{place.user}@", "start",
                                f"{name}.service"])
        parts.add(File(f"{SYSTEM_UNIT_DIR}/{name}.service", render(
            "job-trigger.service.j2", comment=f"job {name}: run it now (the timer starts this)",
            user=place.user, user_unit=f"{name}.service",
            description=unit_text(f"{name}: job (rootless container of {place.user})"),
            on_success=after_success_units(svc), exec_start=exec_start)), restarts=False)
    if svc.after_success:
        parts.add(restart_template(), restarts=False)


def finish(manifest: Manifest, parts: Parts, groups: list[dict[str, Any]]) -> Manifest:
    manifest.files = sorted(parts.files, key=lambda f: f.path)
    paths = [f.path for f in manifest.files]
    duplicates = sorted({p for p in paths if paths.count(p) > 1})
    if duplicates:
        raise KeyProblem(f"services.{manifest.name.removeprefix('svc-')}",
                         f"these paths are shipped twice: {', '.join(duplicates)} (a secret file or artifact "
                         "at a path outpost writes for this service itself?)")
    manifest.units = parts.units
    manifest.restart = groups
    if any((i.get("drain") or {}).get("kind") == "port" for g in groups for i in g["instances"]):
        manifest.packages = sorted({*manifest.packages, "nftables"})   # the agent drains with nft
    return manifest
