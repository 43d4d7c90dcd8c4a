"""Program-test helper: the resources the whole program registers for a stack, under mocks."""

from __future__ import annotations

import functools
import json

from components.program import Registered, run_program, stack_config


@functools.lru_cache(maxsize=None)
def _registered(stack: str, overrides_json: str) -> tuple[Registered, ...]:
    return tuple(run_program(stack, stack_config(stack, json.loads(overrides_json))))


def registered(stack: str, overrides: dict | None = None) -> list[Registered]:
    """Every resource the program registers for STACK (config overrides: key → value)."""
    return list(_registered(stack, json.dumps(overrides or {}, sort_keys=True)))


def of_type(resources: list[Registered], type_: str) -> list[Registered]:
    return [r for r in resources if r.type == type_]


def by_urn(resources: list[Registered]) -> dict[str, Registered]:
    return {r.urn: r for r in resources}
