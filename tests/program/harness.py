"""Program-test helper: the resources the whole program registers for a stack, under mocks."""

from __future__ import annotations

import functools
import json

from components.program import Invoked, RecordingMonitor, Registered, record_program, stack_config


@functools.lru_cache(maxsize=None)
def _recorded(stack: str, overrides_json: str) -> RecordingMonitor:
    return record_program(stack, stack_config(stack, json.loads(overrides_json)))


def _key(overrides: dict | None) -> str:
    return json.dumps(overrides or {}, sort_keys=True)


def registered(stack: str, overrides: dict | None = None) -> list[Registered]:
    """Every resource the program registers for STACK (config overrides: key → value)."""
    return list(_recorded(stack, _key(overrides)).registered)


def invoked(stack: str, overrides: dict | None = None) -> list[Invoked]:
    """Every provider function (lookup) the program calls for STACK."""
    return list(_recorded(stack, _key(overrides)).invoked)


def of_type(resources: list[Registered], type_: str) -> list[Registered]:
    return [r for r in resources if r.type == type_]


def by_urn(resources: list[Registered]) -> dict[str, Registered]:
    return {r.urn: r for r in resources}


COMMAND = "command:remote:Command"


def bundle_commands(resources: list[Registered]) -> dict[str, Registered]:
    """host → the one Command that ships its manifests (named `<host>-bundle`)."""
    return {r.name.removesuffix("-bundle"): r for r in of_type(resources, COMMAND) if r.name.endswith("-bundle")}


def manifests_of(command: Registered) -> dict[str, dict]:
    """The manifests a host's bundle Command carries on stdin, by name, in apply order."""
    return {m["name"]: m["manifest"] for m in json.loads(command.inputs["stdin"])["manifests"]}
