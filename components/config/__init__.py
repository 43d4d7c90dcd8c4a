"""Stack configuration: `Pulumi.<stack>.yaml` (or the Pulumi engine's config) → a validated `Stack`.

`read_file(path)` reads a stack file without Pulumi (for `make plan`) and `read_pulumi()` the
running program's config, each as (config mapping, stack name); `validate(config, stack_name)`
checks it against the model and every rule of this layer and raises `ConfigError` carrying every
problem as `Pulumi.<stack>.yaml: outpost:<key path>: <what is wrong>`. Secret values never enter
the model: `Stack.secrets` maps names to None. The rules only a renderer can see come on top of
these in components/load.py (`parse`, `load_file`, `load_pulumi`), above the render layer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from collections.abc import Callable
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from . import fleet, hostnames, repository
from .checks import check
from .model import Stack
from .problem import KeyProblem

NAMESPACE = "outpost"


class ConfigError(Exception):
    """Every problem found in one stack config, one formatted line each."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def read_file(path: str | Path) -> tuple[dict[str, Any], str]:
    """The config mapping of a stack file and the stack's name; unreadable YAML or a key written
    twice is a ConfigError."""
    path = Path(path)
    stack_name = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
    try:
        text = path.read_text()
        doc = yaml.safe_load(text) or {}
        duplicates = _duplicate_keys(text)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError([f"{path.name}: cannot read: {exc}"]) from None
    if duplicates:  # YAML keeps the last silently: a typo'd copy would replace the first
        raise ConfigError([f"{path.name}: {NAMESPACE}:{key}: {msg}" for key, msg in duplicates])
    config = (doc.get("config") or {}) if isinstance(doc, dict) else doc  # a file that is a list, a number
    if not isinstance(config, dict):
        raise ConfigError([f"{path.name}: config: must be a mapping of keys like outpost:domain"])
    return config, stack_name


def _duplicate_keys(text: str) -> list[tuple[str, str]]:
    """Every key that appears twice in one mapping under config.outpost:*, as (key path, message)."""
    problems: list[tuple[str, str]] = []

    def walk(node: yaml.Node, loc: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is None:
                    continue
                line = key_node.start_mark.line + 1
                if key in seen and loc[:1] == ("config",) and (len(loc) > 1 or key.startswith(NAMESPACE + ":")):
                    where = loc[1:] + (key,)
                    where = (where[0].partition(":")[2], *where[1:])
                    problems.append((_key_path(where), f"appears twice in one mapping (lines {seen[key]} and {line}); "
                                     "YAML would keep only the last: remove or merge one"))
                seen.setdefault(key, line)
                walk(value, loc + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, loc + (i,))

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return problems


def read_pulumi() -> tuple[dict[str, Any], str]:
    """The running Pulumi program's config (values as the engine passes them) and stack name."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    raw = dict(runtime_config.get_config_env())
    raw.update(runtime_config.CONFIG.get())
    config: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass  # a plain string value such as a domain name
        config[key] = value
    return config, pulumi.get_stack()


def validate(config: dict[str, Any], stack_name: str) -> Stack:
    """Validate the `outpost:*` keys of a stack's config mapping (other namespaces are ignored)
    against the model and this layer's rules; the Stack, or a ConfigError with every problem."""
    return validated(config, stack_name)[0]


def validated(config: dict[str, Any], stack_name: str) -> tuple[Stack, Callable[[str], str]]:
    """`validate`, and the map from a key path in the stack's long form (host groups written out,
    components/config/fleet.py) to the key the user wrote, for problems found later."""
    file = f"Pulumi.{stack_name}.yaml"
    raw: dict[str, Any] = {}
    for key, value in config.items():
        namespace, _, name = str(key).partition(":")
        if namespace != NAMESPACE:
            continue
        if name == "secrets" and isinstance(value, dict):
            value = {secret: None for secret in value}
        raw[name] = value
    try:
        expanded = fleet.expand(raw)
    except KeyProblem as problem:
        raise ConfigError([f"{file}: {NAMESPACE}:{problem.key}: {problem.message}"]) from None

    def report(problems) -> ConfigError:
        # Key paths as the user wrote them (a group's, not its members'), each problem once: a
        # union reports one per member, a group's template one per host made from it.
        lines = [f"{file}: {NAMESPACE}:{expanded.origin(path)}: {msg}" for path, msg in problems]
        return ConfigError(list(dict.fromkeys(lines)))

    try:
        stack = Stack.model_validate(expanded.raw)
    except ValidationError as exc:
        raise report(_pydantic_problems(exc)) from None
    problems = check(stack) + list(repository.check(stack)) + list(hostnames.check(stack))
    if problems:
        raise report(problems)
    return stack, expanded.origin


# A mapping key written as is in a key path; any other is written ["quoted"] (JSON, ASCII).
PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_@%+=:,~/-][A-Za-z0-9_.@%+=:,~/-]*")


def _key_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for "the mapping key itself is invalid"
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif PLAIN_KEY_RE.fullmatch(str(part)):
            out += ("." if out else "") + str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The model class that the value at LOC inside a Stack is validated against."""
    tp: Any = Stack
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return None
            tp = field.annotation
        elif get_origin(tp) in (dict, list):
            tp = get_args(tp)[-1]
        else:
            return None
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _is_port(loc: tuple) -> bool:
    names = [p for p in loc if isinstance(p, str)]
    return bool(names) and (names[-1] in ("port", "replicas"))


def _unwrap(tp: Any) -> Any:
    """Strip Optional/Annotated down to the model, dict or list inside."""
    while True:
        args = get_args(tp)
        origin = get_origin(tp)
        if origin in (dict, list) or not args:
            return tp
        inner = [a for a in args if a is not type(None)]
        tp = inner[0]


def _pydantic_problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            model = _model_at(loc[:-1])
            valid = ", ".join(sorted(model.model_fields)) if model else "see DESIGN.md"
            msg = f"unknown key; valid keys here: {valid}"
        elif kind == "missing":
            msg = "required key is missing"
        elif kind == "literal_error":
            msg = f"{err['input']!r} is not allowed; expected {err['ctx']['expected']}"
        elif kind == "value_error":
            msg = str(err["ctx"]["error"])
        elif kind in ("less_than_equal", "greater_than_equal") and _is_port(loc):
            msg = f"{err['input']!r} is not a port; ports are 1-65535"
        elif kind in ("too_short", "too_long"):
            msg = err["msg"].replace("List", "list").replace("Dictionary", "mapping")
        else:
            msg = f"{err['msg']} (got {err['input']!r})" if not isinstance(err["input"], (dict, list)) else err["msg"]
        problems.append((_key_path(loc), msg))
    return problems
