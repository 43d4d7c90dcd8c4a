"""Loading a stack: its config (a stack file, or the engine's) → a `Stack` that passed every check,
the config layer's and the renderers' own.

The config layer (components/config) validates the model and the rules that relate its keys;
some rules only a renderer can see (they need the rendered text: `KeyProblem`), and one needs
every manifest of a host at once (two manifests writing one path). This module sits above both
layers and runs them in that order, so `make check`, `make plan` and `pulumi up` refuse the same
stacks with the same lines: `Pulumi.<stack>.yaml: outpost:<key path>: <what is wrong>`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import NAMESPACE, ConfigError, read_file, read_pulumi, validated
from .config.model import Stack
from .config.problem import KeyProblem
from .render import RENDERERS, render_stack
from .render.backups import backup_manifest
from .render.manifest import Manifest
from .render.services import service_manifest

Problem = tuple[str, str]


def load_file(path: str | Path) -> Stack:
    """A stack file (read without Pulumi, for `make plan`), checked."""
    return parse(*read_file(path))


def load_pulumi() -> Stack:
    """The running Pulumi program's `outpost:*` config, checked."""
    return parse(*read_pulumi())


def parse(config: dict[str, Any], stack_name: str) -> Stack:
    """Validate the `outpost:*` keys of a stack's config mapping (other namespaces are ignored):
    the config layer's rules, then the renderers', then one owner per path."""
    file = f"Pulumi.{stack_name}.yaml"
    stack, origin = validated(config, stack_name)
    try:   # the renderers assume a stack that passed every check above
        rendered = render_stack(stack)
    except KeyProblem:
        rendered = None
    # a renderer refused: render piece by piece to name every problem; else what they render may
    # not have two owners for one path
    problems = render_problems(stack) if rendered is None else list(path_clashes(stack, rendered))
    if problems:
        raise ConfigError(list(dict.fromkeys(f"{file}: {NAMESPACE}:{origin(path)}: {msg}" for path, msg in problems)))
    return stack


def render_problems(stack: Stack) -> list[tuple[str, str]]:
    """Run every renderer on every host, as `up` and `make plan` will: the `KeyProblem`s they raise
    (rules that need the rendered text), each once. Anything else they raise is a bug, not a
    problem with the stack, and propagates."""
    # Each renderer stops at its first problem; rendering each service and backup on its own too
    # finds the problems of the others.
    runs = [(renderer, (stack, host)) for host in stack.hosts for renderer in RENDERERS]
    runs += [(service_manifest, (stack, host, name)) for name, svc in stack.services.items() for host in svc.hosts]
    runs += [(backup_manifest, (stack, name)) for name in stack.backups]
    problems: list[tuple[str, str]] = []
    for run, args in runs:
        try:
            run(*args)
        except KeyProblem as problem:
            if (problem.key, problem.message) not in problems:
                problems.append((problem.key, problem.message))
    return problems


def path_clashes(stack: Stack, rendered: dict[str, list[Manifest]] | None = None) -> Iterator[Problem]:
    """Two manifests on one host writing one path (or one manifest writing it twice), in RENDERED
    (else the stack is rendered here), so `parse` runs it last, once every other rule and the
    renderers passed. Files several manifests ship byte for byte alike (the shared litestream
    scripts) are not a clash."""
    for host, manifests in (rendered if rendered is not None else render_stack(stack)).items():
        seen: dict[str, tuple[str, object]] = {}
        for manifest in manifests:
            for f in manifest.files:
                first = seen.get(f.path)
                if first is None:
                    seen[f.path] = (manifest.name, f)
                    continue
                other, other_file = first
                if other != manifest.name and other_file == f:
                    continue
                mine, theirs = _key_for(stack, manifest.name, f.path), _key_for(stack, other, f.path)
                where = mine if mine.startswith("services.") or not theirs.startswith("services.") else theirs
                owners = (f"manifest {other} writes it too" if other != manifest.name
                          else "it is written twice by this service")
                yield where, f"{f.path} on host {host!r}: {owners}; each path has one owner: move one of them"


def _key_for(stack: Stack, manifest: str, path: str) -> str:
    if manifest.startswith("svc-"):
        name = manifest[4:]
        svc = stack.services.get(name)
        if svc is not None:
            if path in svc.secret_files:
                return f"services.{name}.secret_files.{path}"
            if svc.process and path in svc.process.artifacts:
                return f"services.{name}.process.artifacts.{path}"
            return f"services.{name}"
    if manifest.startswith("backup-") and manifest[7:] in stack.backups:
        return f"backups.{manifest[7:]}"
    if manifest == "proxy":
        return "proxy"
    return f"hosts ({manifest})"
