"""`make diff`: what a change does to a stack, readable in a pull request.

Renders the offline plan (`python -m components render`) twice — for a base git ref, extracted with
`git archive` into a temporary directory (the user's working tree is never touched), and for the
working tree — then compares the two:

- resources added / changed / removed (type and name, from plan.json);
- services that restart and how (rolling, blue-green, restart, reload), from each manifest's
  `restart` groups and `restarts` map together with which of its files changed;
- files added / changed / removed per host, and a unified diff per file (`a/<host><path>`);
- secrets whose encrypted `secure:` value in Pulumi.<stack>.yaml changed — by name only.

Rendered files hold `<secret:NAME>` placeholders only, and ciphertexts are compared, never printed,
so no secret value can reach the output. Comparing two plans (`compare`) and formatting the result
(`to_text`, `to_markdown`) are pure; only `render_ref` / `render_worktree` do I/O.
"""

from __future__ import annotations

import difflib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .program import ROOT

DEFAULT_MAX_CHARS = 60000        # GitHub rejects comments over 65536 characters
EMPTY_PLAN: dict[str, Any] = {"hosts": {}, "resources": []}
STRATEGY_WORDS = {"rolling": "rolling, one replica at a time, health-checked",
                  "blue-green": "blue-green, switched once the idle slot is healthy",
                  "restart": "plain restart", "reload": "reload, no restart"}


class DiffError(Exception):
    """A base ref that can't be resolved or rendered; the message says which and why."""


# --------------------------------------------------------------------------- the two snapshots


@dataclass(frozen=True)
class Snapshot:
    """One rendered stack: plan.json, each host's file contents, and the stack's ciphertexts."""

    plan: dict[str, Any] = field(default_factory=lambda: EMPTY_PLAN)
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)   # host → path → content
    secure: dict[str, str] = field(default_factory=dict)               # secret name → ciphertext


def secure_values(stack_yaml: str) -> dict[str, str]:
    """Every `{secure: CIPHERTEXT}` in a stack file, keyed by secret name (`outpost:secrets.NAME`
    → NAME; anything else by its config key path, e.g. `hcloud:token`)."""
    config = (yaml.safe_load(stack_yaml) or {}).get("config") or {}
    found: dict[str, str] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict) and set(value) == {"secure"}:
            found[path] = str(value["secure"])
        elif isinstance(value, dict):
            for key, child in value.items():
                walk(child, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for i, child in enumerate(value):
                walk(child, f"{path}[{i}]")

    walk(config, "")
    return {k.removeprefix("outpost:secrets."): v for k, v in found.items()}


def host_files(plan: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """host → path → the file's plan entry (sha256, mode, owner, group) plus its manifest."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for host, manifests in plan.get("hosts", {}).items():
        files = out.setdefault(host, {})
        for name, manifest in manifests.items():
            for path, meta in manifest.get("files", {}).items():
                files[path] = {**meta, "manifest": name}
    return out


# --------------------------------------------------------------------------- the comparison


@dataclass(frozen=True)
class ResourceChange:
    status: str           # added | changed | removed
    type: str
    name: str
    fields: tuple[str, ...] = ()      # for "changed": which of inputs/parent/protect/depends_on
    # For a host's bundle Command: its manifests that the change adds, changes or removes
    # ("svc-shop changed"), so the one Command per host still says which service moves.
    manifests: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileChange:
    host: str
    path: str
    status: str           # added | changed | removed
    manifest: str
    diff: tuple[str, ...]  # unified diff lines (no trailing newlines)


@dataclass(frozen=True)
class Restart:
    host: str
    service: str
    strategy: str         # rolling | blue-green | restart | reload | start | stop
    because: tuple[str, ...]   # changed files that trigger it


@dataclass(frozen=True)
class UnitChange:
    host: str
    unit: str
    scope: str
    status: str           # added | removed


@dataclass(frozen=True)
class Diff:
    resources: tuple[ResourceChange, ...]
    files: tuple[FileChange, ...]
    units: tuple[UnitChange, ...]
    restarts: tuple[Restart, ...]
    secrets: tuple[tuple[str, str], ...]    # (name, added | changed | removed)
    restores: tuple[str, ...] = ()          # what the new plan restores on its own (a note, not a change)

    @property
    def empty(self) -> bool:
        return not (self.resources or self.files or self.units or self.restarts or self.secrets)


def _resource_key(res: dict[str, Any]) -> tuple[str, str]:
    return res["type"], res["name"]


def _changed_fields(old: dict[str, Any], new: dict[str, Any]) -> tuple[str, ...]:
    fields = [f for f in ("parent", "protect", "depends_on") if old.get(f) != new.get(f)]
    old_in, new_in = old.get("inputs", {}), new.get("inputs", {})
    fields += [f"inputs.{k}" for k in sorted(set(old_in) | set(new_in)) if old_in.get(k) != new_in.get(k)]
    return tuple(fields)


def _bundled(res: dict[str, Any] | None) -> dict[str, str]:
    """A bundle Command's manifests and their tokens, from plan.json's summary of its stdin."""
    stdin = ((res or {}).get("inputs") or {}).get("stdin")
    return dict(stdin.get("manifests") or {}) if isinstance(stdin, dict) else {}


def _manifest_changes(old: dict[str, Any] | None, new: dict[str, Any] | None) -> tuple[str, ...]:
    before, after = _bundled(old), _bundled(new)
    return tuple(f"{name} {'added' if name not in before else 'removed' if name not in after else 'changed'}"
                 for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name))


def compare_resources(base: list[dict[str, Any]], head: list[dict[str, Any]]) -> tuple[ResourceChange, ...]:
    old = {_resource_key(r): r for r in base}
    new = {_resource_key(r): r for r in head}
    changes = []
    for key in sorted(set(old) | set(new)):
        manifests = _manifest_changes(old.get(key), new.get(key))
        if key not in old:
            changes.append(ResourceChange("added", *key, manifests=manifests))
        elif key not in new:
            changes.append(ResourceChange("removed", *key, manifests=manifests))
        elif fields := _changed_fields(old[key], new[key]):
            changes.append(ResourceChange("changed", *key, fields, manifests))
    return tuple(changes)


def _lines(content: bytes) -> list[str] | None:
    """Text lines for difflib, or None for a binary file."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def _meta_note(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    if not old or not new:
        return []
    notes = [f"{k} {old.get(k)} → {new.get(k)}" for k in ("mode", "owner", "group") if old.get(k) != new.get(k)]
    return [f"# {', '.join(notes)}"] if notes else []


def _digest(meta: dict[str, Any] | None) -> str:
    return (meta or {}).get("sha256", "-")[:12]


def file_diff(host: str, path: str, old: bytes | None, new: bytes | None,
              old_meta: dict[str, Any] | None = None, new_meta: dict[str, Any] | None = None) -> tuple[str, ...]:
    """The unified diff of one file; `old`/`new` None when the file is added/removed."""
    header = [f"--- a/{host}{path}", f"+++ b/{host}{path}"]
    a, b = _lines(old or b""), _lines(new or b"")
    if a is None or b is None:
        return tuple(header + _meta_note(old_meta, new_meta)
                     + [f"# binary file: sha256 {_digest(old_meta)} → {_digest(new_meta)}"])
    body = [line.rstrip("\n") for chunk in difflib.unified_diff(a, b, n=3) for line in chunk.splitlines(True)]
    return tuple(header + _meta_note(old_meta, new_meta) + body[2:])


def compare_files(base: Snapshot, head: Snapshot) -> tuple[FileChange, ...]:
    old_index, new_index = host_files(base.plan), host_files(head.plan)
    changes = []
    for host in sorted(set(old_index) | set(new_index)):
        old, new = old_index.get(host, {}), new_index.get(host, {})
        for path in sorted(set(old) | set(new)):
            status = "added" if path not in old else "removed" if path not in new else "changed"
            if status == "changed" and _same(old[path], new[path]):
                continue
            old_content = base.files.get(host, {}).get(path) if path in old else None
            new_content = head.files.get(host, {}).get(path) if path in new else None
            manifest = (new.get(path) or old[path])["manifest"]
            changes.append(FileChange(host, path, status, manifest,
                                      file_diff(host, path, old_content, new_content, old.get(path), new.get(path))))
    return tuple(changes)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("sha256", "mode", "owner", "group"))


def _units(plan: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(host, u["unit"], u.get("scope", "system"))
            for host, manifests in plan.get("hosts", {}).items()
            for m in manifests.values() for u in m.get("units", [])}


def compare_units(base: dict[str, Any], head: dict[str, Any]) -> tuple[UnitChange, ...]:
    """Units enabled now that weren't before (a new replica, timer, socket), and units dropped."""
    old, new = _units(base), _units(head)
    return tuple(sorted([UnitChange(*u, "added") for u in new - old] + [UnitChange(*u, "removed") for u in old - new],
                        key=lambda c: (c.host, c.unit, c.scope)))


def _manifest_restarts(host: str, manifest: dict[str, Any], changed: set[str]) -> list[Restart]:
    """What one manifest restarts, given the paths of its files that changed."""
    out, groups = [], set()
    for group in manifest.get("restart", []):
        groups.add(group["group"])
        when = set(group.get("when") or manifest.get("files", {}))
        if hits := sorted(when & changed):
            out.append(Restart(host, group["group"], group["strategy"], tuple(hits)))
    for service, strategy in manifest.get("restarts", {}).items():
        if service not in groups and changed:
            out.append(Restart(host, service, strategy, tuple(sorted(changed))))
    return out


def compare_restarts(base: dict[str, Any], head: dict[str, Any], files: tuple[FileChange, ...]) -> tuple[Restart, ...]:
    """Restarts of changed manifests; a manifest new on a host starts, one gone stops."""
    changed: dict[tuple[str, str], set[str]] = {}
    for f in files:
        changed.setdefault((f.host, f.manifest), set()).add(f.path)
    out = []
    old_hosts, new_hosts = base.get("hosts", {}), head.get("hosts", {})
    for host in sorted(set(old_hosts) | set(new_hosts)):
        old, new = old_hosts.get(host, {}), new_hosts.get(host, {})
        for name in sorted(set(old) | set(new)):
            if name not in old:
                out.append(Restart(host, name, "start", ()))
            elif name not in new:
                out.append(Restart(host, name, "stop", _retired_users(old[name], new)))
            else:
                out += _manifest_restarts(host, new[name], changed.get((host, name), set()))
    return tuple(out)


def _retired_users(gone: dict[str, Any], remaining: dict[str, dict[str, Any]]) -> tuple[str, ...]:
    """`purge:USER:HOME` or `keep:USER:HOME` for each user of a removed manifest that no manifest
    left on the host lists: what the agent does with the user's data."""
    listed = {u["name"] for m in remaining.values() for u in m.get("users", [])}
    return tuple(f"{'purge' if u.get('purge') else 'keep'}:{u['name']}:{u.get('home', '')}"
                 for u in gone.get("users", []) if u["name"] not in listed)


def compare_secrets(base: dict[str, str], head: dict[str, str]) -> tuple[tuple[str, str], ...]:
    out = []
    for name in sorted(set(base) | set(head)):
        if name not in base:
            out.append((name, "added"))
        elif name not in head:
            out.append((name, "removed"))
        elif base[name] != head[name]:
            out.append((name, "changed"))
    return tuple(out)


def restore_lines(plan: dict[str, Any]) -> tuple[str, ...]:
    """Per host and backup: which paths come back on their own when missing or empty (restore:
    auto) and which only by hand, e.g. `web1: restores automatically when missing or empty:
    /var/lib/wsgi/files (restic outpost-backups/wsgi-state)`."""
    out = []
    for host, manifests in sorted(plan.get("hosts", {}).items()):
        for name in sorted(manifests):
            for r in manifests[name].get("restores", []):
                how = ("restores automatically when missing or empty" if r["restore"] == "auto"
                       else "manual restore only")
                out.append(f"{host}: {how}: {', '.join(r['paths'])} ({r['tool']} {r['location']})")
    return tuple(out)


def compare(base: Snapshot, head: Snapshot) -> Diff:
    """Everything that differs between two rendered stacks. Pure."""
    files = compare_files(base, head)
    return Diff(resources=compare_resources(base.plan.get("resources", []), head.plan.get("resources", [])),
                files=files,
                units=compare_units(base.plan, head.plan),
                restarts=compare_restarts(base.plan, head.plan, files),
                secrets=compare_secrets(base.secure, head.secure),
                restores=restore_lines(head.plan))


# --------------------------------------------------------------------------- formatting

SIGN = {"added": "+", "changed": "~", "removed": "-"}


def _restart_line(r: Restart) -> str:
    if r.strategy == "start":
        return f"{r.host}: {r.service} is new — applied for the first time"
    if r.strategy == "stop":
        users = [w.split(":", 2) for w in r.because]
        purged = [f"user {n} and its home {h}" for how, n, h in users if how == "purge"]
        kept = [f"{n} ({h})" for how, n, h in users if how == "keep"]
        return (f"{r.host}: {r.service} is removed — its units stop, its files are deleted"
                + (f"; DATA WILL BE DELETED (purge): {', '.join(purged)}" if purged else "")
                + (f"; its user stays, locked, with its data: {', '.join(kept)}" if kept else ""))
    return (f"{r.host}: {r.service} restarts — {STRATEGY_WORDS.get(r.strategy, r.strategy)} "
            f"(because of {', '.join(r.because)})")


def _unit_line(u: UnitChange) -> str:
    scope = "" if u.scope == "system" else f" ({u.scope})"
    verb = "enabled and started" if u.status == "added" else "stopped and disabled"
    return f"{u.host}: unit {u.unit}{scope} {u.status} — {verb}"


def _file_counts(diff: Diff) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for f in diff.files:
        host = counts.setdefault(f.host, {"added": 0, "changed": 0, "removed": 0})
        host[f.status] += 1
    return counts


def summary_lines(diff: Diff) -> list[str]:
    """The plain-text summary: resources, restarts, secrets, files per host."""
    if diff.empty:
        return ["No changes."]
    lines = []
    counts = {s: sum(r.status == s for r in diff.resources) for s in SIGN}
    lines.append("Resources: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for r in diff.resources:
        extra = f" ({', '.join(r.fields)})" if r.fields else ""
        lines.append(f"  {SIGN[r.status]} {r.status:8} {r.type} {r.name}{extra}")
        lines += [f"      {m}" for m in r.manifests]
    lines.append("Services:" + (" nothing restarts" if not (diff.restarts or diff.units) else ""))
    lines += [f"  {_restart_line(r)}" for r in diff.restarts]
    lines += [f"  {_unit_line(u)}" for u in diff.units]
    lines += [f"secret {name} {status}" for name, status in diff.secrets]
    if diff.restores:
        lines.append("Backups:")
        lines += [f"  {line}" for line in diff.restores]
    lines.append("Files:")
    for host, c in _file_counts(diff).items():
        lines.append(f"  {host}: {c['added']} added, {c['changed']} changed, {c['removed']} removed")
    for f in diff.files:
        lines.append(f"    {SIGN[f.status]} {f.host}{f.path}")
    return lines


def to_text(diff: Diff, stack: str, base_ref: str) -> str:
    head = [f"outpost diff — stack {stack}: {base_ref} → working tree", ""]
    body = [line for f in diff.files for line in f.diff]
    return "\n".join(head + summary_lines(diff) + ([""] + body if body else [])) + "\n"


def _md_summary(diff: Diff, stack: str, base_ref: str) -> list[str]:
    lines = [f"### outpost diff — stack `{stack}`", "", f"`{base_ref}` → this branch", ""]
    if diff.empty:
        return lines + ["No changes: no resource, file or service is affected.", ""]
    counts = {s: sum(r.status == s for r in diff.resources) for s in SIGN}
    lines.append("**Resources:** " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if diff.resources:
        lines += ["", "| | type | name | what changed |", "|---|---|---|---|"]
        lines += [f"| {SIGN[r.status]} {r.status} | `{r.type}` | `{r.name}` | "
                  f"{', '.join(r.fields + tuple(f'manifest {m}' for m in r.manifests))} |" for r in diff.resources]
    lines += ["", "**Services:**" + (" nothing restarts" if not (diff.restarts or diff.units) else "")]
    lines += [f"- {_restart_line(r)}" for r in diff.restarts]
    lines += [f"- {_unit_line(u)}" for u in diff.units]
    if diff.secrets:
        lines += ["", "**Secrets** (values never shown):"]
        lines += [f"- secret `{name}` {status}" for name, status in diff.secrets]
    if diff.restores:
        lines += ["", "**Backups:**"]
        lines += [f"- {line}" for line in diff.restores]
    if diff.files:
        lines += ["", "| host | files added | changed | removed |", "|---|---|---|---|"]
        lines += [f"| `{h}` | {c['added']} | {c['changed']} | {c['removed']} |" for h, c in _file_counts(diff).items()]
    return lines + [""]


@dataclass
class _Block:
    head: str
    lines: list[str]
    tail: str

    def size(self, n: int | None = None) -> int:
        body = self.lines if n is None else self.lines[:n]
        return len(self.head) + sum(len(line) + 1 for line in body) + len(self.tail)

    def text(self, n: int | None = None) -> str:
        body = self.lines if n is None else self.lines[:n]
        return self.head + "".join(line + "\n" for line in body) + self.tail


def _host_blocks(diff: Diff) -> list[_Block]:
    blocks = []
    for host in dict.fromkeys(f.host for f in diff.files):
        files = [f for f in diff.files if f.host == host]
        noun = "file" if len(files) == 1 else "files"
        head = f"<details><summary>{host} — {len(files)} {noun} changed</summary>\n\n```diff\n"
        body = [line.replace("```", "`\u200b``") for f in files for line in f.diff]
        blocks.append(_Block(head, body, "```\n\n</details>\n\n"))
    return blocks


def _note(left_out: int, total: int, stack: str, base_ref: str, markdown: bool = True) -> str:
    text = (f"Truncated: {left_out} of {total} characters left out. "
            f"Run `make diff STACK={stack} BASE={base_ref}` to see the whole diff.")
    return (f"> **{text.replace(': ', ':** ', 1)}\n" if markdown else f"... {text}\n")


def truncate(blocks: list[_Block], max_chars: int, stack: str, base_ref: str, markdown: bool = True) -> str:
    """The blocks in order, cut at a line boundary so that the result (with the note saying what
    was left out) fits in max_chars; an open fence or <details> is always closed."""
    total = sum(b.size() for b in blocks)
    if total <= max_chars:
        return "".join(b.text() for b in blocks)
    budget = max_chars - len(_note(total, total, stack, base_ref, markdown))
    out, used = [], 0
    for block in blocks:
        if used + block.size() <= budget:
            out.append(block.text())
            used += block.size()
            continue
        n = len(block.lines)
        while n > 0 and used + block.size(n) > budget:
            n -= 1
        while n > 0 and block.lines[n - 1].startswith(("--- a/", "+++ b/")):
            n -= 1                          # no file header without its hunk
        if n > 0 or used + block.size(0) <= budget:
            out.append(block.text(n))
            used += block.size(n)
        break
    return "".join(out) + _note(total - used, total, stack, base_ref, markdown)


def to_markdown(diff: Diff, stack: str, base_ref: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """A pull-request comment: heading, summary, then one <details> diff block per host."""
    summary = _Block("", _md_summary(diff, stack, base_ref), "")
    return truncate([summary, *_host_blocks(diff)], max_chars, stack, base_ref)


# --------------------------------------------------------------------------- I/O: git and render


def _git(project: Path, *args: str, data: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=not data)


def _prefix(project: Path) -> str:
    """The project's directory inside its git repository ('' at the top)."""
    result = _git(project, "rev-parse", "--show-prefix")
    if result.returncode:
        raise DiffError(f"{project}: not a git repository: {result.stderr.strip()}")
    return result.stdout.strip()


def _resolve(project: Path, ref: str) -> str:
    result = _git(project, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if result.returncode:
        raise DiffError(f"--base {ref}: no such commit (for a pull request, fetch full history: "
                        f"actions/checkout with fetch-depth: 0)")
    return result.stdout.strip()


def _render(tree: Path, stack: str, out: Path) -> None:
    """Run the offline render inside TREE with this very interpreter."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, "-m", "components", "render", "--stack", stack, "--out", str(out)],
                            cwd=tree, env=env, capture_output=True, text=True)
    if result.returncode:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise DiffError(f"rendering stack {stack} in {tree} failed:\n{tail}")


def read_snapshot(out: Path, stack_yaml: str) -> Snapshot:
    plan = json.loads((out / "plan.json").read_text())
    files = {host: {path: (out / "hosts" / host / path.lstrip("/")).read_bytes() for path in paths}
             for host, paths in host_files(plan).items()}
    return Snapshot(plan, files, secure_values(stack_yaml))


def render_worktree(stack: str, project: Path = ROOT) -> Snapshot:
    """The stack as the working tree has it; empty when its stack file is gone."""
    if not (project / f"Pulumi.{stack}.yaml").exists():
        return Snapshot()
    with tempfile.TemporaryDirectory(prefix="outpost-diff-head-") as tmp:
        _render(project, stack, Path(tmp))
        return read_snapshot(Path(tmp), (project / f"Pulumi.{stack}.yaml").read_text())


def render_ref(ref: str, stack: str, project: Path = ROOT) -> Snapshot:
    """The stack as of git REF: `git archive` into a temporary directory, rendered there; an
    empty snapshot when the stack file doesn't exist at REF."""
    commit, prefix = _resolve(project, ref), _prefix(project)
    stack_file = _git(project, "show", f"{commit}:{prefix}Pulumi.{stack}.yaml")
    if stack_file.returncode:
        return Snapshot()
    archive = _git(project, "archive", "--format=tar", f"{commit}:{prefix}" if prefix else commit, data=True)
    if archive.returncode:
        raise DiffError(f"git archive {ref} failed: {archive.stderr.decode().strip()}")
    with tempfile.TemporaryDirectory(prefix="outpost-diff-base-") as tmp:
        tree, out = Path(tmp) / "tree", Path(tmp) / "plan"
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tree, filter="data")
        _render(tree, stack, out)
        return read_snapshot(out, stack_file.stdout)


def run(stack: str, base_ref: str, fmt: str = "text", max_chars: int | None = None,
        project: Path = ROOT) -> str:
    """`python -m components diff`: the formatted diff between BASE_REF and the working tree."""
    diff = compare(render_ref(base_ref, stack, project), render_worktree(stack, project))
    if fmt == "markdown":
        return to_markdown(diff, stack, base_ref, max_chars or DEFAULT_MAX_CHARS)
    text = to_text(diff, stack, base_ref)
    return text if max_chars is None else truncate([_Block("", text.splitlines(), "")], max_chars, stack, base_ref,
                                                       markdown=False)
