"""Hypothesis strategies for stack configs, derived from the config model.

A generated stack starts from a real one (every `Pulumi.*.yaml` of the repository and the example
stacks the tests build) and takes a few near-valid mutations, each aimed at one key:

* replace a value with one drawn for the key's type in the model: every enum value, numbers at
  and beyond the bounds, hostile strings (quotes, `%`, `$`, newlines, unicode, paths with `.`,
  `..`, `//`), or a value of the wrong type;
* drop a key, add one the model knows (value drawn for its type) or one it doesn't;
* rename a mapping key (a host, a service, a secret file's path) to a hostile one;
* empty a list, or repeat one of its items;
* splice a hostile piece into a real value, or stretch it long (`https://x/dir` → `https://x/d?ir`).

`annotation_at(path)` walks the model along a key path, so the strategies follow the contract as
it grows: a new key or enum value is fuzzed without touching this file.
"""

from __future__ import annotations

import copy
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from annotated_types import Ge, Le
from hypothesis import strategies as st
from pydantic import BaseModel

from components.config.model import Stack

ROOT = Path(__file__).resolve().parent.parent.parent

Path_ = tuple[Any, ...]  # a key path inside the `outpost:*` mapping: ("services", "app", "replicas", 0)


# --- seeds: real stacks ---------------------------------------------------------------------------

def _yaml_config(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())["config"]


def seeds() -> list[tuple[str, dict[str, Any]]]:
    """(stack name, config mapping) of every stack in the repository and the tests' examples."""
    from tests.render import services_cases, test_backups

    out = [(p.name[len("Pulumi."):-len(".yaml")], _yaml_config(p)) for p in sorted(ROOT.glob("Pulumi.*.yaml"))]
    out.append(("difftest", _yaml_config(ROOT / "tests" / "diff" / "fixture_stack.yaml")))
    out.append(("bench", _yaml_config(ROOT / "bench" / "Pulumi.bench.yaml")))
    out += [(name, cfg) for name, cfg in services_cases.EDGE_CASES.items()]
    for case, backups in test_backups.BACKUPS.items():
        cfg = copy.deepcopy(test_backups.BASE)
        cfg["outpost:backups"] = copy.deepcopy(backups)
        out.append((f"backups-{case}", cfg))
    return out


# --- the model, walked along a key path --------------------------------------------------------------

def _strip(tp: Any) -> tuple[Any, list[Any]]:
    """TP without Annotated (and the metadata it carried)."""
    meta: list[Any] = []
    while get_origin(tp) is Annotated:
        args = get_args(tp)
        tp, meta = args[0], meta + list(args[1:])
    return tp, meta


def _options(tp: Any) -> list[Any]:
    """The alternatives of a union (Optional included), None left out."""
    tp, _ = _strip(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return [a for a in get_args(tp) if a is not type(None)]
    return [tp]


def annotation_at(path: Path_) -> Any:
    """The model annotation the value at PATH (inside the outpost:* mapping) is validated against;
    Any where the model doesn't say."""
    tp: Any = Stack
    for part in path:
        found = Any
        for option in _options(tp):
            option, _ = _strip(option)
            if isinstance(option, type) and issubclass(option, BaseModel):
                field = option.model_fields.get(str(part))
                if field is not None:
                    found = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
                    break
            elif get_origin(option) in (dict, list):
                found = get_args(option)[-1]
                break
        tp = found
    return tp


# --- values for a type ---------------------------------------------------------------------------------

HOSTILE = [
    "", " ", "a b", "'", '"', "\\", "%", "%i", "%n", "$", "${TAG}", "$(id)", "`id`", ";", "|", "&", "#", "\n",
    "a\nb", "\r", "\t", "\x00", "\x7f", "é", "ü/ä", "日本", "\u202e", "\ufeff", "*", "?", "{suffix}", "{", "}",
    "[", "]", "~", ".", "..", "/", "//", "/.", "/..", "/./", "/../", "/a/../b", "/a/./b", "/a//b", "/a/",
    "a/../b", "../x", "./x", "files/../README.md", "files//demo/hello.py", "-", "--", "-rf", "0", "-1", "1e9",
    "true", "null", "@", "x" * 300, "A" * 64, "/" + "a" * 300, "http://", "https://a'b", "https://a b",
    "https://[::1]:9000", "http://h:99999", "restic", "sshd", "multi-user", "init", "admin", "root", "a'b",
    "/etc/systemd/system/api.service", "/etc/caddy/Caddyfile", "/home/web/.config/outpost/web.env", "0s", "0", "1us", "1.5s", "infinity", "5mins", "1 min", "2s 3",
    "*-*-* 25:00", "Mon..Sun", "daily", "weekly UTC", "1,2", "1..", "PT5S",
]
WRONG_TYPES = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False, width=32),
                        st.just([]), st.just({}), st.just([1, "a"]), st.just({"x": 1}), st.just({"secure": "v1:x"}))
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


def _bounds(meta: list[Any]) -> tuple[int | None, int | None]:
    low = high = None
    for m in meta:
        for c in getattr(m, "metadata", [m]):
            if isinstance(c, Ge):
                low = c.ge
            elif isinstance(c, Le):
                high = c.le
    return low, high


def values_for(tp: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """Values near and beyond what TP accepts."""
    tp, meta = _strip(tp)
    options = _options(tp)
    if len(options) > 1 or options[0] is not tp:
        return st.one_of(st.none(), *[values_for(o, depth) for o in options])
    origin = get_origin(tp)
    if origin is Literal:
        return st.one_of(st.sampled_from(get_args(tp)), st.sampled_from(["", "CADDY", "other"]))
    if tp is bool:
        return st.one_of(st.booleans(), st.sampled_from(["yes", "true", 0, 1]))
    if tp is int:
        low, high = _bounds(meta)
        edges = [v for b in (low, high) if b is not None for v in (b - 1, b, b + 1)]
        return st.one_of(st.sampled_from(edges or [0]), st.integers(-2, 70000), st.just(2**63), st.just("8000"))
    if tp is str:
        return st.one_of(st.sampled_from(HOSTILE), TEXT)
    if origin is list:
        if depth > 2:
            return st.just([])
        return st.lists(values_for(get_args(tp)[0], depth + 1), max_size=3)
    if origin is dict:
        if depth > 2:
            return st.just({})
        key, value = get_args(tp)
        return st.dictionaries(values_for(key, depth + 1).filter(lambda k: isinstance(k, str)),
                               values_for(value, depth + 1), max_size=2)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if depth > 2:
            return st.just({})
        fields = {n: values_for(Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation, depth + 1)
                  for n, f in tp.model_fields.items()}
        return st.fixed_dictionaries({}, optional=fields)
    return st.one_of(st.sampled_from(HOSTILE), WRONG_TYPES)


# --- mutations of a config -----------------------------------------------------------------------------

def _paths(node: Any, prefix: Path_ = ()) -> list[Path_]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, prefix + (i,))
    return out


def _get(doc: dict[str, Any], path: Path_) -> Any:
    node: Any = doc
    for part in path:
        node = node[part]
    return node


def _model_path(path: Path_) -> Path_:
    """A path inside the config mapping → the same path inside the outpost:* model."""
    return (str(path[0]).partition(":")[2], *path[1:])


@st.composite
def mutated(draw: st.DrawFn, seed: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    _, original = seed
    doc = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if str(p[0]).startswith("outpost:") and str(p[0]) != "outpost:secrets"
                 or len(p) == 1]
        path = draw(st.sampled_from(paths))
        parent = _get(doc, path[:-1])
        last = path[-1]
        value = parent[last]
        kind = draw(st.sampled_from(["replace", "replace", "replace", "wrong-type", "drop", "add", "rename",
                                     "empty", "repeat", "splice", "splice"]))
        tp = annotation_at(_model_path(path)) if str(path[0]).startswith("outpost:") else Any
        if kind == "replace":
            parent[last] = copy.deepcopy(draw(values_for(tp)))  # st.just([]) is one shared list
        elif kind == "wrong-type":
            parent[last] = copy.deepcopy(draw(WRONG_TYPES))
        elif kind == "drop":
            del parent[last]
        elif kind == "add" and isinstance(value, dict):
            model = next((o for o in map(lambda o: _strip(o)[0], _options(tp))
                          if isinstance(o, type) and issubclass(o, BaseModel)), None)
            if model is not None and draw(st.booleans()):
                name = draw(st.sampled_from(sorted(model.model_fields)))
                f = model.model_fields[name]
                value[name] = copy.deepcopy(draw(values_for(Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation)))
            else:
                key_tp = get_args(_strip(tp)[0])[0] if get_origin(_strip(tp)[0]) is dict else str
                key = draw(st.one_of(values_for(key_tp).filter(lambda k: isinstance(k, str)), st.just("unknown_key")))
                value[key] = copy.deepcopy(draw(st.sampled_from(list(value.values())))) if value and draw(st.booleans()) \
                    else copy.deepcopy(draw(values_for(annotation_at(_model_path(path) + (key,)))))
        elif kind == "rename" and isinstance(parent, dict) and len(path) > 1:
            new = draw(st.one_of(st.sampled_from(HOSTILE), TEXT, st.sampled_from(sorted(map(str, parent)))))
            parent[new] = parent.pop(last)
        elif kind == "empty" and isinstance(value, (list, dict)):
            value.clear()
        elif kind == "splice" and isinstance(value, (str, int)) and not isinstance(value, bool):
            # near-valid: the real value with a hostile piece inside it, or stretched long
            text = str(value)
            at = draw(st.integers(0, len(text)))
            piece = draw(st.one_of(st.sampled_from(HOSTILE), TEXT, st.just(text * draw(st.integers(2, 40)))))
            parent[last] = text[:at] + piece + text[at:]
        elif kind == "repeat" and isinstance(value, list) and value:
            value.append(copy.deepcopy(draw(st.sampled_from(value))))
    return doc


SEEDS = seeds()


def stacks() -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """(stack name, config): a seed unchanged now and then, mostly a mutated one."""
    seed = st.sampled_from(SEEDS)
    return st.one_of(seed, seed.flatmap(lambda s: mutated(s).map(lambda doc: (s[0], doc))))
