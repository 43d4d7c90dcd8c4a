"""`make logs SERVICE=name`: the service's journal from every host that runs it, merged by time.

Each host runs `outpost-apply logs svc-NAME` in one SSH session: journalctl as root over the
service's units, system or user scope as the service has them, printed as JSON lines
`{time, unit, message}`. Here the hosts' lines are merged by their timestamps and printed as
`TIME HOST UNIT: MESSAGE` (the instance is the unit: `hello@8001.service`). Bounded by default:
the last 200 lines per host, then the last 200 overall. With follow, lines are printed as they
arrive, each host's in order.
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime, timezone
from typing import Any, TextIO

from .connections import StackSource, Unreachable, agent, connections


def hosts_of(source: StackSource, service: str, host: str | None) -> list[str]:
    stack = source.stack
    if service not in stack.services:
        raise Unreachable(f"no service {service} in stack {source.name} "
                          f"(services: {', '.join(stack.services)})")
    hosts = list(stack.services[service].hosts)
    if host:
        if host not in hosts:
            raise Unreachable(f"service {service} does not run on {host} (it runs on {', '.join(hosts)})")
        hosts = [host]
    return hosts


def agent_args(service: str, since: str | None, lines: int, follow: bool) -> list[str]:
    args = ["logs", f"svc-{service}", f"--lines={lines}"]
    if since:
        args.append(f"--since={since}")
    if follow:
        args.append("--follow")
    return args


def parse(host: str, line: str) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return {"host": host, **rec} if isinstance(rec, dict) else None


def line_of(rec: dict[str, Any]) -> str:
    when = datetime.fromtimestamp(rec["time"] / 1e6, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    message = " / ".join(str(rec.get("message") or "").rstrip().splitlines())   # one line per record
    return f"{when[:-4]}Z {rec['host']} {rec['unit']}: {message}"


def collect(source: StackSource, service: str, host: str | None = None, since: str | None = None,
            lines: int = 200) -> dict[str, Any]:
    """{"lines": [records merged by time, last LINES], "errors": {host: why}}"""
    conns = connections(source)
    records, errors = [], {}
    for name in hosts_of(source, service, host):
        try:
            result = agent(conns[name], *agent_args(service, since, lines, False))
        except Unreachable as error:
            errors[name] = str(error)
            continue
        if result.returncode != 0:
            errors[name] = (result.stderr or "").strip()[:300]
        records += [r for line in result.stdout.splitlines() if (r := parse(name, line))]
    records.sort(key=lambda r: r["time"])
    return {"lines": records[-lines:], "errors": errors}


def follow(source: StackSource, service: str, host: str | None, since: str | None, lines: int,
           out: TextIO = sys.stdout, as_json: bool = False) -> int:
    """Print every host's lines as they come until interrupted."""
    conns, lock = connections(source), threading.Lock()

    def pump(name: str) -> None:
        try:
            proc = agent(conns[name], *agent_args(service, since, lines, True), stream=True)
        except Unreachable as error:
            with lock:
                print(f"{name}: unreachable: {error}", file=sys.stderr)
            return
        first = getattr(proc, "stdout_first", "")
        for line in [first, *proc.stdout]:
            if rec := parse(name, line):
                with lock:
                    out.write((json.dumps(rec) if as_json else line_of(rec)) + "\n")
                    out.flush()

    threads = [threading.Thread(target=pump, args=(h,), daemon=True)
               for h in hosts_of(source, service, host)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        return 0
    return 0
