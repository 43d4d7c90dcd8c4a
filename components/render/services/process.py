"""Process services: a native, hardened system unit (templated per replica port), its artifacts
shipped as bytes, and socket activation (`socket:`, N socket units on one port).
"""

from __future__ import annotations

from ...config.model import Service, Stack
from ..manifest import File, Manifest, Unit, User
from ..systemd import SANDBOX, SYSCALL_FILTER, env_assignment, exec_line, split_command, unit_text
from .common import (DEFAULT_HEALTH, PROCESS_PLACE, SYSTEM_UNIT_DIR, Parts, after_success_units, finish, home,
                     job_parts, limit_lines, render, repo_bytes, secret_parts, service_group)


# Process services: every sandbox setting that doesn't get in the way of a network daemon.
HARDENING = [
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "PrivateUsers=yes",
    *SANDBOX,
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    *SYSCALL_FILTER,
]


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
