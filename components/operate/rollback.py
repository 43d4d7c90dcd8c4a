"""`make rollback SERVICE=name`: the previous applied version of a service, back, now.

The agent keeps the previous full manifest of every service (root-only). `rollback svc-NAME`
re-applies it through the normal apply path with the service's own strategy: a rolling restart or
a blue-green switch, health-checked, stopping at the first unhealthy instance. Hosts go one at a
time, in the stack's order; the first failure stops the rollback and names the host. Afterwards
`make status` shows "rolled back, stack wants <version>" until the stack is changed and
`pulumi up` applies it.
"""

from __future__ import annotations

from typing import Any

from .connections import StackSource, Unreachable, agent, connections
from .logs import hosts_of


def run(source: StackSource, service: str) -> dict[str, Any]:
    conns = connections(source)
    done: list[dict[str, Any]] = []
    for name in hosts_of(source, service, None):
        try:
            result = agent(conns[name], "rollback", f"svc-{service}", timeout=1800)
        except Unreachable as error:
            return {"hosts": done + [{"host": name, "ok": False, "error": str(error)}], "exit": 2}
        if result.returncode != 0:
            error = (result.stderr or "").strip().removeprefix("outpost-apply: error: ")
            return {"hosts": done + [{"host": name, "ok": False, "error": error}], "exit": 1}
        done.append({"host": name, "ok": True, "line": result.stdout.strip().splitlines()[-1]})
    return {"hosts": done, "exit": 0}


def text(doc: dict[str, Any]) -> str:
    lines = [f"{h['host']}: {h['line']}" if h["ok"] else f"{h['host']}: rollback stopped: {h['error']}"
             for h in doc["hosts"]]
    verdict = "rolled back" if doc["exit"] == 0 else "stopped (the remaining hosts were left untouched)"
    return "\n".join(lines + [f"rollback: {verdict}"]) + "\n"
