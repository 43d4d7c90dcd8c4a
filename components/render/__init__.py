"""The render layer: a validated `Stack` → for each host, the manifests it gets.

Pure and deterministic: no Pulumi, no network, no clock. Each renderer takes (stack, host) and
returns manifests; the resource layer ships each manifest with one `remote.Command`, and
`make plan` writes their files to disk.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config.model import Stack
from .backups import backup_manifests
from .base import base_manifest
from .manifest import Manifest
from .mesh import mesh_manifests
from .routes import proxy_manifests
from .services import service_manifests

Renderer = Callable[[Stack, str], list[Manifest]]


def _base(stack: Stack, host: str) -> list[Manifest]:
    return [base_manifest(stack, host)]


RENDERERS: list[Renderer] = [_base, mesh_manifests, proxy_manifests, service_manifests, backup_manifests]


def render_host(stack: Stack, host: str) -> list[Manifest]:
    manifests = [m for renderer in RENDERERS for m in renderer(stack, host)]
    names = [m.name for m in manifests]
    assert len(names) == len(set(names)), f"manifest names clash on {host}: {names}"
    return manifests


def render_stack(stack: Stack) -> dict[str, list[Manifest]]:
    """Every host's manifests, hosts in config order."""
    return {host: render_host(stack, host) for host in stack.hosts}
