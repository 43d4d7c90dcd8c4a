"""The house rules of the code's layout, checked on the source (nothing is imported or run).

* Size: no Python module in components/, files/ or tools/ is over 600 lines, and no class over
  400; every non-empty module opens with a docstring saying what it is for.
* No import cycle among those modules. Every `import` counts, wherever it stands (a late import
  inside a function is still an edge); `from P import m` is an edge to the module P.m when m is a
  module, else to P. The implicit import of a package's __init__ by its submodules is not an edge.
* No upward edge. The layers, lowest first; a module may import modules of its own layer or of a
  lower one, never of a higher one:

    0 tools        tools/*: the VM, the local stack, the engine build (they import no component)
    1 config       components/config: the stack-config contract, pure
    2 render       components/render: config → the files each host gets, pure
    3 load         components/load.py: a stack checked by the config rules and the renderers
    4 resources    the Pulumi side: components/{stack,hosts,shipping,dns,geodns,buckets,mesh,
                   certificates,secrets,dynamic}
    5 tooling      what runs the program or talks to hosts: components/{program,plan,diff,
                   __main__}, components/operate

  So config never imports render, load or a resource; render never imports load or a resource.
* The agent (files/agent/outpost_agent) imports the standard library and its own modules only,
  and each of its modules only the ones before it in AGENT_ORDER (its package docstring lists the
  same order with what each holds). Nothing else under files/ imports components or tools.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400
TREES = ("components", "files", "tools")

LAYERS = {
    "tools": 0,
    "components.config": 1,
    "components.render": 2,
    "components.load": 3,
    **dict.fromkeys(("components.stack", "components.hosts", "components.shipping", "components.dns",
                     "components.geodns", "components.buckets", "components.mesh", "components.certificates",
                     "components.secrets", "components.dynamic"), 4),
    **dict.fromkeys(("components.program", "components.plan", "components.diff", "components.__main__",
                     "components.operate"), 5),
    "components": 0,   # the package's own (empty) __init__
}
AGENT_ORDER = ("base", "manifest", "host", "masking", "fs", "staging", "state", "journal", "originals",
               "accounts", "units", "health", "restarts", "apply", "bundle", "operate", "cli")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    if rel.parts[:2] == ("files", "agent"):
        rel = rel.relative_to("files/agent")   # on the agent's own sys.path (the zipapp's root)
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    files = [p for tree in TREES for p in sorted((ROOT / tree).rglob("*.py")) if "__pycache__" not in p.parts]
    return {module_name(p): p for p in files}


SOURCES = sources()


def imports(name: str, path: Path) -> set[str]:
    """The modules of SOURCES that NAME's source imports, anywhere in it."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in SOURCES else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in SOURCES:   # `import a.b.c` of a module inside SOURCES
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


GRAPH = {name: imports(name, path) for name, path in SOURCES.items()}


def layer(name: str) -> int | None:
    while name:
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    return None


def line_count(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_module_over_600_lines_and_no_class_over_400():
    long_modules = {str(p.relative_to(ROOT)): n for p in SOURCES.values() if (n := line_count(p)) > MAX_MODULE_LINES}
    long_classes = {f"{p.relative_to(ROOT)}:{node.name}": node.end_lineno - node.lineno + 1
                    for p in SOURCES.values() for node in ast.walk(ast.parse(p.read_text()))
                    if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES}
    assert long_modules == {}, f"modules over {MAX_MODULE_LINES} lines: split them by concern"
    assert long_classes == {}, f"classes over {MAX_CLASS_LINES} lines"


def test_every_module_says_what_it_is_for():
    missing = [str(p.relative_to(ROOT)) for p in SOURCES.values()
               if p.read_text().strip() and not ast.get_docstring(ast.parse(p.read_text()))]
    assert missing == []


def test_the_import_graph_has_no_cycle():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:   # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(GRAPH[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(GRAPH)))
    for node in sorted(GRAPH):
        if node not in index:
            visit(node)
    assert cycles == []


def test_every_module_of_components_and_tools_has_a_layer():
    unplaced = [name for name in SOURCES if name.startswith(("components", "tools")) and layer(name) is None]
    assert unplaced == [], "place each new module in LAYERS (tests/test_layout.py)"


def test_no_module_imports_a_higher_layer():
    upward = [f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
              for name, targets in GRAPH.items() if layer(name) is not None
              for target in sorted(targets) if layer(target) is not None and layer(target) > layer(name)]
    assert upward == []


def test_the_agent_imports_the_standard_library_and_the_modules_below_it_only():
    agent = {name: path for name, path in SOURCES.items() if name.startswith("outpost_agent.")}
    assert sorted(n.split(".", 1)[1] for n in agent) == sorted(AGENT_ORDER), \
        "every agent module has its place in AGENT_ORDER (and in the package docstring)"
    wrong = []
    for name, path in agent.items():
        mine = AGENT_ORDER.index(name.split(".", 1)[1])
        for target in GRAPH[name]:
            if not target.startswith("outpost_agent.") or AGENT_ORDER.index(target.split(".", 1)[1]) >= mine:
                wrong.append(f"{name} imports {target}")
        for node in ast.walk(ast.parse(path.read_text())):
            tops = [a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) else \
                [node.module.split(".")[0]] if isinstance(node, ast.ImportFrom) and not node.level else []
            wrong += [f"{name} imports {top}, not in the standard library" for top in tops
                      if top not in sys.stdlib_module_names]
    assert wrong == []


@pytest.mark.parametrize("name", sorted(n for n in SOURCES if n.startswith("files") or
                                        SOURCES[n].is_relative_to(ROOT / "files")))
def test_files_shipped_to_hosts_import_no_component(name):
    assert not {t for t in GRAPH[name] if t.startswith(("components", "tools"))}


def test_the_repository_tracks_no_symlink_and_nothing_the_setup_makes():
    """A worktree's `.engine` or `.venv` link once slipped into a merge; checked out, it replaced
    the real toolchain directory with a link to itself. No link belongs in the repository."""
    import subprocess
    listed = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    links = [line.split("\t", 1)[1] for line in listed.splitlines() if line.startswith("120000 ")]
    assert links == [], links
    tracked = {line.split("\t", 1)[1].split("/")[0] for line in listed.splitlines()}
    assert not tracked & {".engine", ".venv", ".vm", ".plan", "build"}, tracked & {".engine", ".venv", ".vm", ".plan", "build"}
