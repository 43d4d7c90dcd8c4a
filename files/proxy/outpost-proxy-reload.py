#!/usr/bin/python3
"""Reload a proxy that closes its idle client connections on reload (Caddy, nginx) without
racing a client that is sending a request on one of them at that moment.

    outpost-proxy-reload --ports 80,443 --flag /run/outpost-proxy/drain --limit 11 \\
        [--old-workers /run/nginx.pid] [--hold-new-connections] -- RELOAD-COMMAND...

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
4. with --hold-new-connections (Caddy): hold new connections to PORTS back, see below;
5. run RELOAD-COMMAND; with --old-workers PIDFILE (nginx: the reload only signals the master)
   wait until the worker processes from before it have exited;
6. let new connections in again, lower the flag.

Caddy 2.6 opens a second listening socket on each port for the new config (SO_REUSEPORT, seen
with strace: two LISTEN sockets on the port during a reload) and closes the old one when the old
config has stopped; the kernel resets the connections still queued on a socket that closes, so a
client whose connection the kernel had put on the old socket's queue loses it in its TLS
handshake (measured on the VM: one POST in 504 through four reloads, `SSLEOFError` on a new
connection). So, with --hold-new-connections, new connections are held back for the reload: an
nftables rule drops the SYN of every new connection to PORTS (table `inet outpost_proxy_hold`,
the ports in its set `held` with a timeout of HOLD_TTL seconds, so a run killed halfway does not
keep the proxy closed), the tool waits until nothing is left in the listening sockets' queues,
reloads, and waits until the old sockets are gone before it takes the ports out of the set. A
client's SYN that was dropped is sent again by its kernel after a second (RFC 6298's initial
timeout): the cost is a slower first answer, not a lost one.

A run killed between 2 and 6 leaves the flag up: answers keep saying `Connection: close` (slower
clients, no failure) until the next reload or start (the proxy's ExecStartPre removes it).
Python 3 standard library and nft; run as root (systemd ExecReload=+).
"""

import argparse
import os
import subprocess
import sys
import time

ESTABLISHED = "01"
LISTEN = "0A"
POLL = 0.05
NFT = "/usr/sbin/nft"
HOLD_TABLE = "inet outpost_proxy_hold"
HOLD_TTL = 30        # seconds: a hold the tool did not lift ends by itself
HOLD_WAIT = 10       # seconds to wait at most for the queues to empty, and for the old sockets to go


def sockets(ports: set[int], state: str) -> list[list[str]]:
    """The /proc/net/tcp{,6} rows in STATE whose local port is one of PORTS."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as lines:
                next(lines, None)
                for line in lines:
                    fields = line.split()
                    if len(fields) > 4 and fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) in ports:
                        found.append(fields)
        except FileNotFoundError:   # no IPv6 in this kernel
            continue
    return found


def established(ports: set[int]) -> set[str]:
    """The established TCP connections whose local port is one of PORTS, as 'local remote' keys."""
    return {f"{fields[1]} {fields[2]}" for fields in sockets(ports, ESTABLISHED)}


def listening(ports: set[int]) -> tuple[int, int]:
    """(listening sockets on PORTS, connections waiting in their accept queues)."""
    rows = sockets(ports, LISTEN)
    return len(rows), sum(int(fields[4].split(":")[1], 16) for fields in rows)


def nft(command: str) -> None:
    done = subprocess.run([NFT, "-f", "-"], input=command, text=True, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"nft: {done.stderr.strip() or done.stdout.strip()}")


def hold(ports: set[int]) -> None:
    """Drop the SYN of every new connection to PORTS (for HOLD_TTL seconds at most)."""
    held = ", ".join(f"{p} timeout {HOLD_TTL}s" for p in sorted(ports))
    nft(f"""table {HOLD_TABLE} {{
	set held {{ type inet_service; flags timeout; }}
	chain input {{ type filter hook input priority filter - 10; policy accept; }}
}}
flush chain {HOLD_TABLE} input
add rule {HOLD_TABLE} input tcp dport @held tcp flags & (syn | ack) == syn drop
flush set {HOLD_TABLE} held
add element {HOLD_TABLE} held {{ {held} }}
""")


def release() -> None:
    """Let new connections to every held port in again (the table and its rule stay)."""
    nft(f"flush set {HOLD_TABLE} held\n")


def wait(condition, limit: float) -> bool:
    """Poll CONDITION until it holds, at most LIMIT seconds; whether it held."""
    deadline = time.monotonic() + limit
    while not (ok := condition()) and time.monotonic() < deadline:
        time.sleep(POLL)
    return ok


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
    parser.add_argument("--hold-new-connections", action="store_true",
                        help="hold new connections back during the reload (a proxy that opens new listening sockets)")
    parser.add_argument("command", nargs="+", help="the reload command")
    args = parser.parse_args(argv)
    ports = {int(p) for p in args.ports.split(",")}

    before = established(ports)
    raise_flag(args.flag)
    held = False
    try:
        if not wait(lambda: not (before & established(ports)), args.limit):
            left = before & established(ports)
            print(f"outpost-proxy-reload: {len(left)} client connections still open after {args.limit:g}s; "
                  "reloading anyway", file=sys.stderr)
        workers: set[int] = set()
        if args.old_workers:
            try:
                with open(args.old_workers, encoding="ascii") as pidfile:
                    workers = children(int(pidfile.read().strip()))
            except (OSError, ValueError):
                workers = set()     # not running: the command starts nothing to wait for
        if args.hold_new_connections:
            sockets_before = listening(ports)[0]
            try:
                hold(ports)
            except RuntimeError as e:
                print(f"outpost-proxy-reload: could not hold new connections back: {e}", file=sys.stderr)
                return 1
            held, held_since = True, time.monotonic()
            if not wait(lambda: listening(ports)[1] == 0, HOLD_WAIT):
                print(f"outpost-proxy-reload: connections still queued after {HOLD_WAIT}s", file=sys.stderr)
        code = subprocess.run(args.command, stdin=subprocess.DEVNULL).returncode
        if code != 0:
            return code
        if held:
            if not wait(lambda: listening(ports)[0] <= sockets_before, HOLD_WAIT):
                print(f"outpost-proxy-reload: the old listening sockets still open after {HOLD_WAIT}s",
                      file=sys.stderr)
            release()
            held = False
            print(f"outpost-proxy-reload: new connections held back for {time.monotonic() - held_since:.1f}s")
        if not wait(lambda: not alive(workers), args.workers_limit):
            print(f"outpost-proxy-reload: {len(alive(workers))} old workers still running after "
                  f"{args.workers_limit:g}s", file=sys.stderr)
        return 0
    finally:
        if held:
            release()
        lower_flag(args.flag)


if __name__ == "__main__":
    sys.exit(main())
