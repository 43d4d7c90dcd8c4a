"""The config fuzzer: whatever a stack file says, `check` reports key-path errors or the render
succeeds, deterministically. Never a traceback.

Bounded for `make test`: a fixed number of examples, derandomized (every run tries the same ones,
so CI is stable), each under a deadline. A longer, random run:

    OUTPOST_FUZZ=long .venv/bin/python -m pytest -q tests/fuzz      # 5000 examples per property
    OUTPOST_FUZZ_EXAMPLES=20000 OUTPOST_FUZZ=long ...                 # or as many as you like

What it found on the way is kept, one shrunk example per crash class, in test_regressions.py.
"""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from components.config import ConfigError
from components.load import parse
from components.render import render_stack
from pydantic import BaseModel

from tests.fuzz.strategies import _options, _strip, annotation_at, stacks

settings.register_profile("ci", max_examples=int(os.environ.get("OUTPOST_FUZZ_EXAMPLES", "1000")),
                          derandomize=True, database=None, deadline=timedelta(seconds=5),
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=int(os.environ.get("OUTPOST_FUZZ_EXAMPLES", "5000")),
                          deadline=timedelta(seconds=10),
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PROFILE = "long" if os.environ.get("OUTPOST_FUZZ") == "long" else "ci"

# The key: plain parts joined by '.', [N] list indexes, ["..."] mapping keys that aren't plain.
KEY = r'(?:[^\s\[\]"]+|\[\d+\]|\["(?:[^"\\]|\\.)*"\])+'
LINE_RE = re.compile(rf"^Pulumi\.(?P<stack>[^:]+)\.yaml: outpost:(?P<key>{KEY}): (?P<message>.+)$", re.S)


def key_parts(key: str, node: Any) -> list[Any] | None:
    """KEY (`services.app.secret_files./etc/a.b[0]`) split along NODE's actual keys (which may
    hold dots themselves): the longest prefix that resolves, as a list of parts."""
    parts: list[Any] = []
    rest = key
    while rest:
        if rest.startswith('["'):
            part, end = json.JSONDecoder().raw_decode(rest, 1)
            rest = rest[end + 1:]  # past the closing ]
            if not isinstance(node, dict) or part not in map(str, node):
                return parts + [part]
            node, parts = {str(k): v for k, v in node.items()}[part], parts + [part]
        elif rest.startswith("["):
            index, _, rest = rest[1:].partition("]")
            if not isinstance(node, list) or not index.isdigit() or int(index) >= len(node):
                return parts + [int(index) if index.isdigit() else index]
            node, parts = node[int(index)], parts + [int(index)]
        else:
            rest = rest.removeprefix(".")
            if not isinstance(node, dict):
                return parts
            match = max((k for k in map(str, node) if rest == k or rest.startswith((k + ".", k + "["))),
                        key=len, default=None)
            if match is None:
                return parts + [rest]  # the one part that doesn't resolve
            node = {str(k): v for k, v in node.items()}[match]
            parts, rest = parts + [match], rest[len(match):]
    return parts


def resolves(key: str, outpost: dict[str, Any]) -> bool:
    """KEY names a key of the input, or a key that belongs in a mapping of the input (a required
    key that is missing, a default the input relies on): what doesn't resolve is field names."""
    parts = key_parts(key, outpost)
    node: Any = outpost
    for i, part in enumerate(parts):
        if isinstance(node, dict) and part in {str(k) for k in node}:
            node = {str(k): v for k, v in node.items()}[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            # the rest is field names of the model (proxy.email where outpost:proxy is left to
            # its defaults), never a user's key that isn't there
            return (i == len(parts) - 1 and isinstance(node, dict) and isinstance(part, str)
                    and model_fields_along(tuple(parts[:i]), part.split(".")))
    return True


def model_fields_along(prefix: tuple[Any, ...], names: list[str]) -> bool:
    """NAMES, from PREFIX on, are fields of the model's nested sections (proxy.email), not keys
    of a user's mapping (services.nope)."""
    for name in names:
        models = [o for o in map(lambda o: _strip(o)[0], _options(annotation_at(prefix)))
                  if isinstance(o, type) and issubclass(o, BaseModel)]
        if not any(name in m.model_fields for m in models):
            return False
        prefix += (name,)
    return True


def outpost_keys(config: dict[str, Any]) -> dict[str, Any]:
    return {str(k).partition(":")[2]: v for k, v in config.items() if str(k).startswith("outpost:")}


def check_or_render(name: str, config: dict[str, Any]) -> str:
    """The property: `check` (parse) reports key-path errors naming keys of the input, or the
    stack renders, twice, byte for byte the same."""
    try:
        stack = parse(config, name)
    except ConfigError as error:
        assert error.lines
        outpost = outpost_keys(config)
        for line in error.lines:
            m = LINE_RE.match(line)
            assert m, f"not a key-path error: {line!r}"
            assert m["stack"] == name
            assert resolves(m["key"], outpost), f"{m['key']!r} names no key of the input: {line!r}"
        return "check reports errors"
    first = {h: [m.encode() for m in ms] for h, ms in render_stack(stack).items()}
    again = {h: [m.encode() for m in ms] for h, ms in render_stack(parse(config, name)).items()}
    assert first == again, "the render is not deterministic"
    return "the render succeeds"


@settings.get_profile(PROFILE)
@given(stacks())
def test_check_reports_key_paths_or_the_render_succeeds(case):
    name, config = case
    event(check_or_render(name, config))


def test_key_paths_resolve_along_keys_with_dots():
    outpost = {"services": {"app": {"secret_files": {"/etc/a.b": "x"}, "replicas": [1]}}}
    assert resolves("services.app.secret_files./etc/a.b", outpost)
    assert resolves("services.app.replicas[0]", outpost)
    assert resolves("services.app.health", outpost)          # missing, in a mapping that exists
    assert not resolves("services.app.replicas[3]", outpost)
    assert not resolves("services.nope.health", outpost)
    assert resolves("proxy.email", outpost)                   # outpost:proxy left to its defaults
    assert not resolves("hosts.web1", outpost)
    assert resolves('services["a b"].x', {"services": {"a b": {"x": 1}}})
    assert not resolves('services["a c"].x', {"services": {"a b": {"x": 1}}})


@settings(parent=settings.get_profile(PROFILE), max_examples=settings.get_profile(PROFILE).max_examples // 5)
@given(case=stacks(), data=st.data())
def test_a_key_written_twice_in_the_stack_file_is_named(case, data, tmp_path_factory):
    """Duplicate keys only exist in the YAML text: write the stack out, repeat one `key:` line
    (YAML would silently keep the second), and `load_file` must name that key."""
    import yaml

    from components.load import load_file
    name, config = case
    lines = yaml.safe_dump({"config": config}, allow_unicode=True, width=10**6).splitlines()
    keys = [i for i, line in enumerate(lines) if re.match(r"^\s{4,}[A-Za-z_][\w-]*:( |$)", line)]
    assume(keys)
    i = data.draw(st.sampled_from(keys))
    lines.insert(i + 1, lines[i])
    path = tmp_path_factory.mktemp("dup") / f"Pulumi.{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    try:
        load_file(path)
    except ConfigError as error:
        assert all(LINE_RE.match(line) for line in error.lines), error.lines
        assert any("appears twice in one mapping" in line for line in error.lines), error.lines
    else:
        raise AssertionError(f"a repeated key went unnoticed: {lines[i]!r}")
