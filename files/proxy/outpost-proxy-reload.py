#!/usr/bin/python3
"""Reload a proxy that closes its idle client connections on reload (Caddy, nginx) without
racing a client that is sending a request on one of them at that moment.

    outpost-proxy-reload --ports 80,443 --flag /run/outpost-proxy/drain --limit 11 \\
        [--old-workers /run/nginx.pid] -- RELOAD-COMMAND...

Caddy (every config change: Go's http.Server.Shutdown closes idle connections at once) and nginx
(a graceful reload: ngx_close_idle_connections() in the old workers) close a kept-alive client
connection that is idle at the moment of the reload. A client that sends its next request just
then gets the connection closed instead of an answer: a GET may be retried, a POST is lost. So:

1. note the client connections established now (local port in PORTS, from /proc/net/tcp{,6});
2. raise the drain FLAG: while it exists the proxy answers every request with
   `Connection: close` (Caddy: a `file` matcher + `header`; nginx: a named location with
   `keepalive_timeout 0`), so a connection ends only after a whole answer, client told;
3. wait until every connection noted in 1 has ended (after its next answer, or closed by the
   proxy's own keep-alive timeout, which is LIMIT minus a second: nothing a reload adds), at most
   LIMIT seconds; connections opened meanwhile get `Connection: close` on their first answer;
4. run RELOAD-COMMAND; with --old-workers PIDFILE (nginx: the reload only signals the master)
   wait until the worker processes from before it have exited;
5. lower the flag.

A run killed between 2 and 5 leaves the flag up: answers keep saying `Connection: close` (slower
clients, no failure) until the next reload or start (the proxy's ExecStartPre removes it).
Python 3 standard library only; run as root (systemd ExecReload=+).
"""

import argparse
import os
import subprocess
import sys
import time

ESTABLISHED = "01"
POLL = 0.05


def established(ports: set[int]) -> set[str]:
    """The established TCP connections whose local port is one of PORTS, as 'local remote' keys."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as lines:
                next(lines, None)
                for line in lines:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == ESTABLISHED \
                            and int(fields[1].rsplit(":", 1)[1], 16) in ports:
                        found.add(f"{fields[1]} {fields[2]}")
        except FileNotFoundError:   # no IPv6 in this kernel
            continue
    return found


def children(pid: int) -> set[int]:
    """PID's child processes (nginx's workers)."""
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.add(int(entry))
    return kids


def alive(pids: set[int]) -> set[int]:
    """The PIDS still running (an exited one waiting to be reaped is not)."""
    running = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            running.add(pid)
    return running


def raise_flag(flag: str) -> None:
    os.makedirs(os.path.dirname(flag), mode=0o755, exist_ok=True)
    fd = os.open(flag, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    os.close(fd)


def lower_flag(flag: str) -> None:
    try:
        os.unlink(flag)
    except FileNotFoundError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", required=True, help="the proxy's client ports, e.g. 80,443")
    parser.add_argument("--flag", required=True, help="the drain flag file the proxy config tests")
    parser.add_argument("--limit", type=float, required=True,
                        help="seconds to wait at most for the noted connections (keep-alive timeout + 1)")
    parser.add_argument("--old-workers", metavar="PIDFILE",
                        help="the master's pid file: wait for its workers from before the reload to exit")
    parser.add_argument("--workers-limit", type=float, default=35.0,
                        help="seconds to wait at most for the old workers (worker_shutdown_timeout + 5)")
    parser.add_argument("command", nargs="+", help="the reload command")
    args = parser.parse_args(argv)
    ports = {int(p) for p in args.ports.split(",")}

    before = established(ports)
    raise_flag(args.flag)
    try:
        deadline = time.monotonic() + args.limit
        while (left := before & established(ports)) and time.monotonic() < deadline:
            time.sleep(POLL)
        if left:
            print(f"outpost-proxy-reload: {len(left)} client connections still open after {args.limit:g}s; "
                  "reloading anyway", file=sys.stderr)
        workers: set[int] = set()
        if args.old_workers:
            try:
                with open(args.old_workers, encoding="ascii") as pidfile:
                    workers = children(int(pidfile.read().strip()))
            except (OSError, ValueError):
                workers = set()     # not running: the command starts nothing to wait for
        code = subprocess.run(args.command, stdin=subprocess.DEVNULL).returncode
        if code != 0:
            return code
        deadline = time.monotonic() + args.workers_limit
        while (old := alive(workers)) and time.monotonic() < deadline:
            time.sleep(POLL)
        if old:
            print(f"outpost-proxy-reload: {len(old)} old workers still running after {args.workers_limit:g}s",
                  file=sys.stderr)
        return 0
    finally:
        lower_flag(args.flag)


if __name__ == "__main__":
    sys.exit(main())
