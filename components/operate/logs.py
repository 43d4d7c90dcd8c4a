"""`make logs SERVICE=name`: the service's journal from every host that runs it, merged by time.

Each host runs `outpost-apply logs svc-NAME` in one SSH session: journalctl as root over the
service's units, system or user scope as the service has them, printed as JSON lines
`{time, unit, message}`. Here the hosts' lines are merged by their timestamps and printed as
`TIME HOST UNIT: MESSAGE` (the instance is the unit: `hello@8001.service`). Bounded by default:
the last 200 lines per host, then the last 200 overall. With follow, lines are printed as they
arrive, each host's in order, until the hosts' streams end, `--for SECONDS` pass or Ctrl-C;
closing a session hangs up the host's agent, which then ends its `journalctl --follow`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, TextIO

from .connections import StackSource, Unreachable, agent, connections, last_line

CLOSE_WAIT = 5     # seconds an SSH session gets to end after SIGTERM, before SIGKILL


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
           out: TextIO = sys.stdout, as_json: bool = False, timeout: float | None = None,
           err: TextIO = sys.stderr) -> int:
    """Print every host's lines as they arrive (each host's in order), until every host's stream
    ends, TIMEOUT seconds pass or Ctrl-C; then the SSH sessions still open are closed (bounded).
    Exit 0, or 2 when a host could not be reached or its agent failed (said on ERR)."""
    conns, lock, stop = connections(source), threading.Lock(), threading.Event()
    running: dict[str, subprocess.Popen] = {}
    failed: dict[str, str] = {}

    def pump(name: str) -> None:
        try:
            proc = agent(conns[name], *agent_args(service, since, lines, True), stream=True)
        except Unreachable as error:
            failed[name] = f"unreachable: {error}"
            return
        with lock:
            running[name] = proc
        try:
            if stop.is_set():     # the follow ended while this session was being opened
                close_session(proc)
                return
            for line in proc.stdout:     # line by line as they come, never read to the end first
                proc.forget_key()        # ssh has authenticated: the key file can go
                if rec := parse(name, line):
                    with lock:
                        out.write((json.dumps(rec) if as_json else line_of(rec)) + "\n")
                        out.flush()
            code = proc.wait()
            if code != 0 and not stop.is_set():
                proc.stderr_file.seek(0)
                why = last_line(proc.stderr_file.read(), f"exit {code}")
                failed[name] = f"unreachable: {why}" if code == 255 else f"the agent failed (exit {code}): {why}"
        finally:
            proc.forget_key()

    threads = [threading.Thread(target=pump, args=(h,), daemon=True)
               for h in hosts_of(source, service, host)]
    for t in threads:
        t.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while any(t.is_alive() for t in threads) and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        with lock:
            procs = list(running.values())
        for proc in procs:
            close_session(proc)
        for t in threads:
            t.join(CLOSE_WAIT)
    for name, why in sorted(failed.items()):
        print(f"{name}: {why}", file=err)
    return 2 if failed else 0


def close_session(proc: subprocess.Popen) -> None:
    """End one SSH session (the host's agent gets a hangup and stops its journalctl); bounded."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(CLOSE_WAIT)
    proc.stderr_file.close()
