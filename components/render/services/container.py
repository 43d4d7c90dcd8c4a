"""Container services: podman quadlets (rootless in the service user's systemd by default, or
rootful), the image tag's env file, and the oneshot that builds or pulls the image before any
replica restarts (see the package docstring).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ...config.model import Service, Stack
from ..manifest import File, Manifest, Unit, User
from ..systemd import env_assignment, exec_line, exec_word, single_line, specifiers, split_command, unit_text
from .common import (DEFAULT_HEALTH, TEMPLATES, Parts, Place, after_success_units, container_place, finish, home,
                     job_parts, limit_lines, render, repo_bytes, secret_parts, service_group)


IMAGE_SCRIPT = TEMPLATES / "image.sh"
CONTAINER_STOP_TIMEOUT = 30          # seconds podman waits after SIGTERM before SIGKILL
CONTAINER_START_TIMEOUT = 120        # seconds systemd gives a long-running container to start
ROOTLESS_PACKAGES = ["podman", "passt", "uidmap", "dbus-user-session"]


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
