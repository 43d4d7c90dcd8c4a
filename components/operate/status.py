"""`make status`: what runs on every host of a stack and whether it is what the stack would ship.

One SSH session per host runs `outpost-apply report --json` (units and their states, each replica
probed by the agent with the service's own health check, the image tag or artifact digest on disk,
the last agent log line, the stored token). Here each stored token is compared with the token the
stack would ship now — `shipping.token` of the freshly rendered masked manifest, the very value a
`pulumi up` would send — giving up to date / drifted / not applied; a stored version put back by
`make rollback` reads "rolled back, stack wants <version>".

Exit status: 0 when everything runs and is current, 1 otherwise, 2 when a host can't be reached.
"""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from typing import Any

from ..render import render_stack
from ..render.manifest import Manifest
from ..shipping import token
from .connections import Connection, StackSource, Unreachable, agent, connections


def wanted_version(manifest: Manifest) -> str | None:
    """The version a rendered manifest ships, in the agent's words (`version_on_disk`)."""
    doc = json.loads(manifest.encode())
    for f in doc["files"]:
        if f["path"].endswith(".env") and not f["b64"]:
            for line in f["content"].splitlines():
                if line.startswith("TAG="):
                    return "tag " + line[4:].strip()
    for f in doc["files"]:
        if f["path"].startswith(("/opt/", "/srv/")):
            import hashlib
            data = base64.b64decode(f["content"]) if f["b64"] else f["content"].encode()
            return "sha256:" + hashlib.sha256(data).hexdigest()[:12]
    return None


def wanted(source: StackSource) -> dict[str, dict[str, dict[str, Any]]]:
    """host → manifest name → {token, version} of what the stack would ship now."""
    return {host: {m.name: {"token": token(m.encode()), "version": wanted_version(m)} for m in manifests}
            for host, manifests in render_stack(source.stack).items()}


def ask_all(conns: dict[str, Connection], *args: str) -> dict[str, Any]:
    """Run the agent with ARGS on every host at once (one session each); host → parsed JSON
    or the Unreachable error."""
    def one(conn: Connection) -> Any:
        result = agent(conn, *args)
        if result.returncode != 0:
            raise Unreachable(f"{conn.host}: the agent failed: "
                              f"{(result.stderr or '').strip()[:300] or 'exit ' + str(result.returncode)}")
        try:
            return json.loads(result.stdout)
        except ValueError:
            raise Unreachable(f"{conn.host}: the agent answered no JSON (is it older than this "
                              "checkout? `pulumi up` installs the current one)") from None

    with ThreadPoolExecutor(max_workers=min(8, len(conns) or 1)) as pool:
        futures = {name: pool.submit(one, conn) for name, conn in conns.items()}
    out: dict[str, Any] = {}
    for name, fut in futures.items():
        try:
            out[name] = fut.result()
        except Unreachable as error:
            out[name] = error
    return out


def judge(stored: dict[str, Any] | None, want: dict[str, Any] | None) -> tuple[str, list[str]]:
    """(stack column, problems) for one manifest on one host."""
    problems: list[str] = []
    if stored is None:
        return "not applied", ["not applied"]
    for u in stored["units"]:
        if u["must_run"] and u["active"] not in ("active", "reloading"):
            problems.append(f"{u['unit']} is {u['active']}")
    for r in stored["replicas"]:
        if not r["healthy"]:
            problems.append(f"replica {r['unit']} unhealthy ({r['response']})")
    if stored.get("pending"):
        problems.append(f"restarts pending: {', '.join(stored['pending'])}")
    if want is None:
        return "not in stack", problems + ["not in the stack any more"]
    if stored["token"] == want["token"]:
        return "up to date", problems
    last = stored.get("last") or {}
    if last.get("op") == "rollback" and last.get("outcome") == "ok":
        state = f"rolled back, stack wants {want['version'] or want['token'][:12]}"
    else:
        state = "drifted"
    return state, problems + [state]


def document(answers: dict[str, Any], judge_host: Callable[[str, Any], tuple[list, bool]]) -> dict[str, Any]:
    """The per-host document of an agent subcommand's ANSWERS (host → JSON or Unreachable), hosts
    in config order: an unreachable host says why; JUDGE_HOST(host, answer) gives a reachable
    one's manifests and whether any has a problem. `exit`: 2 when a host could not be reached,
    else 1 when one has a problem, else 0."""
    hosts: dict[str, Any] = {}
    unreachable = problem = False
    for host, answer in answers.items():
        if isinstance(answer, Exception):
            hosts[host] = {"reachable": False, "error": str(answer), "manifests": []}
            unreachable = True
            continue
        manifests, bad = judge_host(host, answer)
        hosts[host] = {"reachable": True, "manifests": manifests}
        problem = problem or bad
    return {"hosts": hosts, "exit": 2 if unreachable else 1 if problem else 0}


def collect(source: StackSource) -> dict[str, Any]:
    """The whole status document (what `--json` prints); `exit` is the exit status."""
    want = wanted(source)

    def judge_host(host: str, answer: Any) -> tuple[list, bool]:
        stored = {m["name"]: m for m in answer["manifests"]}
        rows = []
        for name in list(want.get(host, {})) + [n for n in stored if n not in want.get(host, {})]:
            s, w = stored.get(name), want.get(host, {}).get(name)
            state, problems = judge(s, w)
            rows.append({"name": name, "stack": state, "problems": problems, "ok": not problems,
                         "units": s["units"] if s else [], "replicas": s["replicas"] if s else [],
                         "version": s["version"] if s else None, "wants": w["version"] if w else None,
                         "token": s["token"] if s else None, "stack_token": w["token"] if w else None,
                         "last": s["last"] if s else None})
        return rows, any(not r["ok"] for r in rows)

    return document(ask_all(connections(source), "report", "--json"), judge_host)


def service_label(name: str) -> str:
    return name.removeprefix("svc-")


def table(doc: dict[str, Any]) -> str:
    """The hosts × services table, then one line per problem."""
    head = ("HOST", "SERVICE", "UNITS", "REPLICAS", "VERSION", "LAST APPLIED", "STACK")
    rows, notes = [], []
    for host, h in doc["hosts"].items():
        if not h["reachable"]:
            rows.append((host, "-", "-", "-", "-", "-", "unreachable"))
            notes.append(f"{host}: unreachable: {h['error']}")
            continue
        for m in h["manifests"]:
            must = [u for u in m["units"] if u["must_run"]]
            up = sum(u["active"] in ("active", "reloading") for u in must)
            units = f"{up}/{len(must)} active" if must else "-"
            healthy = sum(r["healthy"] for r in m["replicas"])
            replicas = f"{healthy}/{len(m['replicas'])} healthy" if m["replicas"] else "-"
            last = m["last"] or {}
            applied = f"{last.get('time', '-')} {last.get('op', '')}".strip() if last else "-"
            rows.append((host, service_label(m["name"]), units, replicas, m["version"] or "-",
                         applied, m["stack"]))
            notes += [f"{host}: {service_label(m['name'])}: {p}" for p in m["problems"]]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    verdict = {0: "all up and current", 1: "not all up and current", 2: "a host could not be reached"}
    return "\n".join(lines + [""] + notes + [f"status: {verdict[doc['exit']]}"]) + "\n"
