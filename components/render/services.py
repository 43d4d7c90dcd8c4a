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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from ..config.model import Service, Stack
from ..config.problem import KeyProblem
from ..config.repository import repo_file
from ..config.timespan import parse_timespan
from .base import AGENT_PATH
from .manifest import File, Manifest, Unit, User, secret_ref
from .systemd import (env_assignment, exec_line, exec_word, single_line, specifiers,
                      split_command, unit_text)

REPO = Path(__file__).resolve().parent.parent.parent
TEMPLATES = REPO / "files" / "templates" / "services"
IMAGE_SCRIPT = TEMPLATES / "image.sh"

RESTART_TEMPLATE = "outpost-restart@.service"
SYSTEM_UNIT_DIR = "/etc/systemd/system"
SYSTEM_QUADLET_DIR = "/etc/containers/systemd"
SYSTEM_CONFIG_DIR = "/etc/outpost/services"
HAPROXY_ADMIN_SOCKET = "/run/haproxy/admin.sock"
CONTAINER_STOP_TIMEOUT = 30          # seconds podman waits after SIGTERM before SIGKILL
CONTAINER_START_TIMEOUT = 120        # seconds systemd gives a long-running container to start
ROOTLESS_PACKAGES = ["podman", "passt", "uidmap", "dbus-user-session"]
DEFAULT_HEALTH = {"interval": 2, "timeout": 1, "retries": 20}

# The manifest, its restart groups and units are named after services: the agent accepts
# [a-z0-9][a-z0-9-]* there (no '_').
SERVICE_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
# Units of the host that a service's unit of the same name would shadow in /etc/systemd/system.
RESERVED_NAMES = frozenset({
    "ssh", "sshd", "caddy", "haproxy", "nginx", "podman", "podman-auto-update", "dbus", "cron",
    "getty", "networking", "user", "default", "multi-user", "sockets", "timers", "basic", "sysinit",
    "network", "network-online", "unattended-upgrades", "apt-daily", "wg-quick", "restic", "init",
})
RESERVED_PREFIXES = ("systemd-", "outpost-", "user-", "podman-")

# Process services: every sandbox setting that doesn't get in the way of a network daemon.
HARDENING = [
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "PrivateUsers=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "ProcSubset=pid",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "RemoveIPC=yes",
    "DevicePolicy=closed",
    "KeyringMode=private",
    "UMask=0077",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged @resources",
    "SystemCallErrorNumber=EPERM",
]


# --- templates ----------------------------------------------------------------------------------

def _finalize(value: object) -> object:
    if isinstance(value, bool) or value is None:
        raise ValueError(f"refusing to render {value!r} into a unit file")
    if isinstance(value, int):
        return value
    return single_line(value, "rendered value")


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                              undefined=jinja2.StrictUndefined, autoescape=False,
                              keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                              finalize=_finalize)


def render(template: str, **context: Any) -> str:
    return _env().get_template(template).render(**context)


# --- where a service's files live -----------------------------------------------------------------

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


# --- the pieces every service kind shares -----------------------------------------------------------

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
    from .proxy import bluegreen_switch_template, switch_argv, switch_validate_argv
    from .routes import upstream

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


# --- containers ---------------------------------------------------------------------------------------

def image_ref(svc: Service) -> str:
    """`<image>:${TAG}`: systemd fills TAG in from the service's env file."""
    return f"{svc.container.image}:${{TAG}}"


def tag_env_file(name: str, svc: Service, place: Place) -> File:
    text = (f"# Managed by outpost: the image tag of {name} ({svc.container.image}).\n"
            "# Roll back by putting the previous tag here and restarting the service.\n"
            f"TAG={svc.container.tag}\n")
    return File(f"{place.config_dir}/{name}.env", text, "0600", place.owner, place.owner)


def build_inputs(name: str, svc: Service, place: Place, parts: Parts) -> list[str]:
    """Ship container.build's repository files (under `<svc>-image/` at their image paths); return
    the script's arguments after the image: a digest of everything that goes into the image (the
    script skips the build when the stored image carries the same digest), the files directory
    and the host paths."""
    build = svc.container.build
    files_dir = f"{place.config_dir}/{name}-image"
    digest_of = {}
    for image_path, source in sorted(build.files.items()):
        data, executable = repo_bytes(source, f"services.{name}.container.build.files.{image_path}")
        mode = "0755" if executable else "0644"
        parts.add(File(f"{files_dir}{image_path}", data, mode, place.owner, place.owner))
        digest_of[image_path] = [hashlib.sha256(data).hexdigest(), mode]
    host_paths = sorted(build.host_paths)
    doc = {"host_paths": host_paths, "files": digest_of, "format": 1}
    inputs = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]
    return [inputs, files_dir, *host_paths]


def image_parts(stack: Stack, name: str, place: Place, parts: Parts, tag_env: File) -> tuple[str, dict[str, Any]]:
    """`<svc>-image.service` (build or pull) and its restart group; returns (unit, group)."""
    svc = stack.services[name]
    c = svc.container
    unit = f"{name}-image.service"
    first = len(parts.files)
    script = parts.add(File(f"{place.config_dir}/{name}-image.sh", IMAGE_SCRIPT.read_text(), "0644",
                            place.owner, place.owner))
    if c.build:
        mode, tail, what, network = "build", build_inputs(name, svc, place, parts), f"build {c.image}", []
    else:
        mode, tail, what = "pull", [], f"pull {c.image}"
        network = ["network-online.target" if place.scope == "system"
                   else "podman-user-wait-network-online.service"]
    exec_start = " ".join([exec_line(["/bin/sh", script.path, mode]), image_ref(svc), exec_line(tail)]).strip()
    text = render("image.service.j2", comment=f"image of service {name}: {what}",
                  service=name, build=bool(c.build),
                  description=unit_text(f"{name}: {what} (TAG from {tag_env.path})"),
                  network=network, tag_env=tag_env.path, exec_start=exec_start)
    parts.add(File(f"{place.unit_dir}/{unit}", text, "0644", place.owner, place.owner))
    when = [tag_env.path] + [f.path for f in parts.files[first:]]
    group = {"group": f"{name}-image", "strategy": "restart", "scope": place.scope,
             "when": sorted(when), "instances": [{"unit": unit, "health": None, "drain": None}],
             "health": dict(DEFAULT_HEALTH)}
    return unit, group


def container_environment(name: str, svc: Service, templated: bool) -> list[str]:
    lines = [env_assignment(k, v, instance=False, on_command_line=True) for k, v in sorted(svc.env.items())]
    # What the app may report as its version: the image reference with the tag systemd filled in.
    lines.append(f"OUTPOST_IMAGE={svc.container.image}:${{TAG}}")
    if templated:
        lines.append("OUTPOST_INSTANCE=%i")
    return lines


def quadlet_text(stack: Stack, name: str, place: Place, *, image_unit: str, env_files: list[str],
                 tag_env: File, on_success: list[str]) -> str:
    svc = stack.services[name]
    c = svc.container
    templated = bool(svc.replicas)
    if templated:
        comment = f"service {name}, one container per port ({', '.join(map(str, svc.replicas))})"
        description = unit_text(f"{name} ({c.image}) on 127.0.0.1:") + "%i"
        service_unit = f"{name}@<port>.service"
    elif svc.is_job:
        comment, description = f"job {name}", unit_text(f"{name}: job ({c.image})")
        service_unit = f"{name}.service"
    else:
        comment, description = f"service {name}", unit_text(f"{name} ({c.image})")
        service_unit = f"{name}.service"
    comment += f", {'rootful' if svc.rootful else 'rootless as user ' + place.owner}"
    exec_words = split_command(c.command, f"services.{name}.container.command") if c.command else []
    return render(
        "container.j2", comment=comment, service_unit=service_unit, description=description,
        requires_image=[image_unit], on_success=on_success,
        image=image_ref(svc), pull_never=bool(c.build),
        publish=[f"127.0.0.1:%i:{c.port}"] if templated else [],
        entrypoint=exec_word(c.entrypoint, what=f"services.{name}.container.entrypoint") if c.entrypoint else "",
        exec=exec_line(exec_words, instance=templated, what=f"services.{name}.container.command"),
        environment=container_environment(name, svc, templated), environment_files=env_files,
        volumes=[specifiers(single_line(v, f"services.{name}.container.volumes"), False) for v in c.volumes],
        auto_update=c.auto_update if c.auto_update != "none" else "",
        stop_timeout=CONTAINER_STOP_TIMEOUT, start_timeout=CONTAINER_START_TIMEOUT, tag_env=tag_env.path,
        oneshot=svc.is_job,
        limits=limit_lines(svc),
        wanted_by="" if (templated or svc.is_job) else place.target)


def wants_dropin(name: str, place: Place, units: list[str]) -> File:
    """`<target>.d/outpost-<svc>.conf`: start the instances of a quadlet template at boot."""
    text = render("wants.conf.j2", comment=f"start the instances of {name} at boot",
                  target=place.target, units=" ".join(units))
    return File(f"{place.unit_dir}/{place.target}.d/outpost-{name}.conf", text, "0644",
                place.owner, place.owner)


def container_manifest(stack: Stack, host: str, name: str) -> Manifest:
    svc = stack.services[name]
    place = container_place(stack, name)
    parts = Parts()
    tag_env = parts.add(tag_env_file(name, svc, place))
    env_files = secret_parts(svc, place, name, parts, owner=place.owner, quote=False)
    image_unit, image_group = image_parts(stack, name, place, parts, tag_env)
    on_success = [] if place.user else after_success_units(svc)
    quadlet_name = f"{name}@.container" if svc.replicas else f"{name}.container"
    parts.add(File(f"{place.quadlet_dir}/{quadlet_name}",
                   quadlet_text(stack, name, place, image_unit=image_unit, env_files=env_files,
                                tag_env=tag_env, on_success=on_success),
                   "0644", place.owner, place.owner))
    manifest = Manifest(name=f"svc-{name}",
                        packages=ROOTLESS_PACKAGES if place.user else ["podman"],
                        users=[User(place.user, home(place.user), linger=True, system=True,
                                     purge=stack.purges(name), key=f"services.{name}.user")] if place.user else [])
    groups = [image_group]
    if svc.is_job:
        job_parts(stack, name, place, parts)
    else:
        instances = [(f"{name}@{p}.service", p) for p in svc.replicas] or [(f"{name}.service", None)]
        if svc.replicas:
            parts.add(wants_dropin(name, place, [u for u, _ in instances]), restarts=False)
        parts.units += [Unit(u, place.scope, enable=False, start=True) for u, _ in instances]
        groups.append(service_group(stack, name, place, parts, instances, drains=bool(svc.replicas)))
        manifest.restarts = {name: groups[-1]["strategy"]}
    if svc.container.auto_update != "none":
        parts.units.append(Unit("podman-auto-update.timer", place.scope, enable=True, start=True))
    return finish(manifest, parts, groups)


# --- processes ------------------------------------------------------------------------------------------

def process_identity(stack: Stack, name: str) -> tuple[list[str], list[User], str]:
    """DynamicUser= unless the service owns files that need a fixed owner (secret_files) or names
    its `user:`. Instances share one identity (`User=` set), so a StateDirectory= stays theirs.
    (A DynamicUser= name goes to the manifest's `dynamic_users`: see process_manifest.)"""
    svc = stack.services[name]
    user = stack.service_user(name)
    if svc.dynamic_user:
        return ["DynamicUser=yes", f"User={user}", f"Group={user}"], [], "root"
    return [f"User={user}", f"Group={user}"], [User(user, home(user), linger=False, system=True,
                                                        purge=stack.purges(name), key=f"services.{name}.user")], user


def process_exec(name: str, svc: Service, templated: bool) -> str:
    words = split_command(svc.process.exec, f"services.{name}.process.exec")  # the model checked the program
    return exec_line(words, instance=templated, what=f"services.{name}.process.exec")


def protect_home(svc: Service) -> str:
    """ProtectHome=yes hides /home, /root and /run/user: read-only when the service's own files live there."""
    paths = list(svc.secret_files) + list(svc.process.artifacts)
    return "ProtectHome=read-only" if any(p.startswith(("/home/", "/root/", "/run/user/")) for p in paths) \
        else "ProtectHome=yes"


def process_unit_text(stack: Stack, name: str, *, templated: bool, socket: bool, env_files: list[str],
                      identity: list[str]) -> str:
    svc = stack.services[name]
    if socket:
        description = unit_text(f"{name}: instance ") + "%i" + unit_text(f" on 127.0.0.1:{svc.socket.port}")
    elif templated:
        description = unit_text(f"{name} on 127.0.0.1:") + "%i"
    else:
        description = unit_text(f"{name}{': job' if svc.is_job else ''}")
    environment = [env_assignment(k, v, instance=False, on_command_line=False)
                   for k, v in sorted(svc.env.items())]
    if templated:
        environment.append("OUTPOST_INSTANCE=%i")
    kind = "job" if svc.is_job else ("socket-activated service" if socket else "service")
    return render(
        "process.service.j2", comment=f"{kind} {name} (native, sandboxed)", description=description,
        on_success=after_success_units(svc), type="oneshot" if svc.is_job else "exec",
        exec_start=process_exec(name, svc, templated), environment=environment,
        environment_files=env_files, identity=identity,
        state_directory=svc.state_directory or "", restart=not svc.is_job,
        limits=limit_lines(svc), hardening=[protect_home(svc), *HARDENING],
        wanted_by="" if (socket or svc.is_job) else "multi-user.target")


def artifact_parts(name: str, svc: Service, parts: Parts) -> None:
    for path, source in sorted(svc.process.artifacts.items()):
        data, executable = repo_bytes(source, f"services.{name}.process.artifacts.{path}")
        parts.add(File(path, data, "0755" if executable else "0644"))


def socket_parts(name: str, svc: Service, parts: Parts) -> list[str]:
    """`<svc>@.socket` and its N enabled instances; returns the socket unit names."""
    sock = svc.socket
    if sock.instances > 1 and not sock.reuse_port:
        raise ValueError(f"services.{name}.socket: {sock.instances} instances can only share port "
                         f"{sock.port} with reuse_port: true")
    text = render("socket.j2", comment=f"sockets of {name}", service=name, instances=sock.instances,
                  description=unit_text(f"{name}: socket ") + "%i" + unit_text(f" on 127.0.0.1:{sock.port}"),
                  listen=f"127.0.0.1:{sock.port}", reuse_port="true" if sock.reuse_port else "false",
                  service_unit=f"{name}@%i.service")
    socket_file = parts.add(File(f"{SYSTEM_UNIT_DIR}/{name}@.socket", text), restarts=False)
    units = [f"{name}@{i}.socket" for i in range(1, sock.instances + 1)]
    parts.units += [Unit(u, "system") for u in units]
    parts.groups.append({"group": f"{name}-sockets", "strategy": "restart", "scope": "system",
                         "when": [socket_file.path],
                         "instances": [{"unit": u, "health": None, "drain": None} for u in units],
                         "health": dict(DEFAULT_HEALTH)})
    return units


def process_manifest(stack: Stack, host: str, name: str) -> Manifest:
    svc = stack.services[name]
    place, parts = PROCESS_PLACE, Parts()
    identity, users, owner = process_identity(stack, name)
    env_files = secret_parts(svc, place, name, parts, owner=owner, quote=True)
    artifact_parts(name, svc, parts)
    templated = bool(svc.replicas or svc.socket)
    unit_name = f"{name}@.service" if templated else f"{name}.service"
    text = process_unit_text(stack, name, templated=templated, socket=bool(svc.socket),
                             env_files=env_files, identity=identity)
    parts.add(File(f"{SYSTEM_UNIT_DIR}/{unit_name}", text))
    manifest = Manifest(name=f"svc-{name}", users=users)
    if svc.dynamic_user:   # systemd would run it as an existing account of that name: the agent checks
        manifest.dynamic_users = [{"name": stack.service_user(name), "key": f"services.{name}.user"}]
    if svc.is_job:
        job_parts(stack, name, place, parts)
        return finish(manifest, parts, [])
    if svc.socket:
        socket_parts(name, svc, parts)
        instances = [(f"{name}@{i}.service", svc.socket.port) for i in range(1, svc.socket.instances + 1)]
    elif svc.replicas:
        instances = [(f"{name}@{p}.service", p) for p in svc.replicas]
        parts.units += [Unit(u, "system") for u, _ in instances]
    else:
        instances = [(f"{name}.service", None)]
        parts.units.append(Unit(instances[0][0], "system"))
    group = service_group(stack, name, place, parts, instances, drains=bool(svc.replicas))
    manifest.restarts = {name: group["strategy"]}
    return finish(manifest, parts, [*parts.groups, group])


# --- jobs -------------------------------------------------------------------------------------------------

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


# --- the manifest ---------------------------------------------------------------------------------------

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
