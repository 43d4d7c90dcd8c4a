"""`make drift`: what was changed on the hosts by hand, and `REPAIR=1` to put it back.

One SSH session per host runs `outpost-apply drift --json [--repair]`: the agent compares every
file it manages (sha256, mode, owner, group) and every unit's enablement with its stored
manifests and lists changed and missing files, extra files in the directories it created, and
units no longer enabled. With repair it re-applies each drifted manifest as last applied, through
its normal apply path (validation, restart plan, rollback on failure), then checks again. Extra
files are listed, never deleted. `pulumi up` stays the way to change what the stack wants.

Exit status: 0 when nothing differs (or everything was repaired), 1 otherwise, 2 when a host
can't be reached.
"""

from __future__ import annotations

from typing import Any

from .connections import StackSource, connections
from .status import ask_all, document, service_label


def collect(source: StackSource, repair: bool = False) -> dict[str, Any]:
    args = ["drift", "--json"] + (["--repair"] if repair else [])

    def judge_host(host: str, answer: Any) -> tuple[list, bool]:
        manifests = answer["manifests"]
        left = [m.get("after") if repair and m.get("drift") else m["drift"] for m in manifests]
        return manifests, any(x is None or x for x in left)

    return document(ask_all(connections(source), *args), judge_host)


def describe(item: dict[str, Any]) -> str:
    if "unit" in item:
        return f"unit {item['unit']} ({item['scope']}): {item['what']}"
    return f"{item['path']}: {item['what']}"


def text(doc: dict[str, Any]) -> str:
    lines = []
    for host, h in doc["hosts"].items():
        if not h["reachable"]:
            lines.append(f"{host}: unreachable: {h['error']}")
            continue
        drifted = [m for m in h["manifests"] if m["drift"]]
        if not drifted:
            lines.append(f"{host}: no drift ({len(h['manifests'])} manifests checked)")
        for m in drifted:
            lines.append(f"{host}: {service_label(m['name'])}:")
            lines += [f"  {describe(i)}" for i in m["drift"]]
            if "repaired" in m:
                if m.get("error"):
                    lines.append(f"  repair failed: {m['error']}")
                else:
                    lines.append(f"  repaired: {m['repaired']}")
                    lines += [f"  still differs: {describe(i)}" for i in m["after"] or []]
    verdict = {0: "no drift", 1: "drift found", 2: "a host could not be reached"}
    return "\n".join(lines + [f"drift: {verdict[doc['exit']]}"]) + "\n"
