"""Jinja2 for the render layer: one strict environment per template directory under files/templates.

StrictUndefined (a missing value is an error, never an empty string), no autoescaping (the
output is config, not HTML), trailing newlines kept, block tags trimmed. Each renderer passes its
own `finalize`, which sees every value before it reaches the text and refuses what its format
cannot hold (proxy.py: anything but a vetted token; services: control characters).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import jinja2


@functools.cache
def environment(directory: Path, finalize: Callable[[object], object]) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(directory)),
                              undefined=jinja2.StrictUndefined, autoescape=False,
                              keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                              finalize=finalize)


def render(directory: Path, finalize: Callable[[object], object], template: str, **context: object) -> str:
    """TEMPLATE (a path relative to DIRECTORY) rendered with CONTEXT."""
    return environment(directory, finalize).get_template(template).render(**context)
