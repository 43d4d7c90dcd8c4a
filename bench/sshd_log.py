"""SSH connections and sessions a tool opened on a VM, counted on the VM's own sshd log.

Both tools are counted the same way, from sshd's side: with `LogLevel VERBOSE` sshd logs
"Accepted publickey for USER from ADDR port N" once per connection and "Starting session: ...
port N id K" once per session (a command, a shell, an sftp subsystem). A multiplexing client
(Ansible's ControlPersist) opens one connection and many sessions on it; outpost's Commands open
one connection with one session each. So both numbers are reported.

`SshdLog(vm)` turns VERBOSE logging on, `mark()` notes where the journal is, `count(mark)`
counts what happened since. The log is read over SSH too: those reads are recognised by their
own client port ($SSH_CONNECTION) and left out, so a window counts only the tool's connections.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from dataclasses import dataclass

# What a client sees when a connection fails before its session starts (sshd re-executing itself
# after a reload): worth dialling again, as the command provider does (dialErrorLimit).
DIAL_ERROR = re.compile(r"kex_exchange_identification|Connection (refused|reset|closed)|Connection timed out")

ACCEPTED = re.compile(r"^Accepted publickey for \S+ from \S+ port (\d+)\b")
SESSION = re.compile(r"^Starting session: .* from \S+ port (\d+) id \d+")
CURSOR = "-- cursor: "
# sshd's listener, its per-connection process and (OpenSSH 10) its pre-auth helper.
IDENTIFIERS = ("sshd", "sshd-session", "sshd-auth")
VERBOSE_DROP_IN = "/etc/ssh/sshd_config.d/00-bench-loglevel.conf"


@dataclass(frozen=True)
class SshCount:
    connections: int
    sessions: int


def count_lines(lines: list[str], ignore_ports: set[int]) -> SshCount:
    """Connections and sessions in sshd log messages, leaving out those of IGNORE_PORTS."""
    connections = sessions = 0
    for line in lines:
        if (m := ACCEPTED.match(line)) and int(m.group(1)) not in ignore_ports:
            connections += 1
        elif (m := SESSION.match(line)) and int(m.group(1)) not in ignore_ports:
            sessions += 1
    return SshCount(connections, sessions)


@dataclass(frozen=True)
class Mark:
    cursor: str
    port: int


class SshdLog:
    """The sshd log of one VM, read as USER (root on a fresh host, then the admin outpost or the
    playbook created: both log in with the VM's key and may sudo)."""

    def __init__(self, vm, user: str = "root"):
        self.vm, self.user = vm, user

    def _ssh(self, script: str) -> tuple[int, list[str]]:
        """Run SCRIPT as root through sudo; returns our own client port and the output lines."""
        argv = self.vm.ssh_argv()
        argv[-1] = f"{self.user}@127.0.0.1"
        command = 'set -- $SSH_CONNECTION; echo "client-port $2"; sudo -n sh -c ' + shlex.quote(script)
        # As the engine dials: a connection refused or reset before the session starts (sshd
        # re-executing itself after a reload) is tried again.
        for _ in range(10):
            result = subprocess.run([*argv, "--", command], capture_output=True, text=True, timeout=120,
                                    stdin=subprocess.DEVNULL)
            if not (result.returncode == 255 and DIAL_ERROR.search(result.stderr)):
                break
            time.sleep(1)
        if result.returncode != 0:
            raise RuntimeError(f"reading the sshd log as {self.user} failed: {result.stderr.strip()}")
        first, *rest = result.stdout.splitlines()
        return int(first.split()[1]), rest

    def enable_verbose(self) -> None:
        """LogLevel VERBOSE (sshd logs each session) before the first mark; a reload, no restart."""
        self._ssh(f"printf 'LogLevel VERBOSE\\n' >{VERBOSE_DROP_IN} && sshd -t && systemctl reload ssh.service")

    def mark(self) -> Mark:
        port, lines = self._ssh("journalctl --sync; journalctl -n 1 -o cat --show-cursor")
        cursor = next(line[len(CURSOR):] for line in reversed(lines) if line.startswith(CURSOR))
        return Mark(cursor, port)

    def count(self, since: Mark) -> SshCount:
        # journald writes what it received before --sync returns; a short pause lets sshd's last
        # lines (a session that just closed) reach it first.
        time.sleep(1)
        filters = " ".join(f"-t {i}" for i in IDENTIFIERS)
        port, lines = self._ssh(f"journalctl --sync; journalctl {filters} -o cat "
                                f"--after-cursor {shlex.quote(since.cursor)}")
        return count_lines(lines, {since.port, port})
