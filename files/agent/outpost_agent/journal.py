"""The agent log and the kept versions: /var/lib/outpost/agent.log (0600, O_NOFOLLOW|O_APPEND),
one line per apply, remove, repair and rollback, and the full manifests last applied and the one
before (applied/NAME.json, previous/NAME.json, 0600) that repair and rollback re-apply.

Owns those files and nothing else; never writes file content or a tool's output to the log.
"""

import contextlib
import os
import re
import time

from .base import STATE_DIR, AgentError
from .state import State


class Journal(State):
    """Log each operation's outcome; keep the applied and previous manifests."""

    # The log (/var/lib/outpost/agent.log, 0600) gets one line per apply, remove, repair and
    # rollback: time, operation, name, token, what changed and restarted, outcome; never file
    # content, never a tool's output. The full manifests last applied and the one before are kept
    # root-only under applied/ and previous/ (the secrets in them are the ones already on disk),
    # so that repair and rollback can re-apply them through apply_locked.
    LOG_PATH = f"{STATE_DIR}/agent.log"

    def journal(self, op, name, token, line=None, error=None):
        """Append one line to the agent log (created 0600; never followed through a symlink)."""
        if op == "remove" and not os.path.isdir(self.path(STATE_DIR)):
            return  # the last manifest went and took the agent's state with it
        counts = re.match(r"outpost \S+: (\d+) changed, (\d+) removed, restarted: (.*)$", line or "")
        if counts:
            what = f"changed={counts[1]} removed={counts[2]} restarted={counts[3].replace(' ', '')}"
        elif removal := re.search(r"removed (\d+) files and dirs, stopped (\d+) units", line or ""):
            what = f"removed={removal[1]} stopped={removal[2]}"
        elif line:
            what = "removed=0 " + ("note=a-successor-owns-it" if "successor" in line else "note=nothing-stored")
        else:
            what = "changed=? restarted=?"
        # the failure's first clause only: what failed, never a tool's output or a response body
        outcome = "ok" if error is None else "failed: " + str(error).split(":", 1)[0][:160]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        entry = self.redact(f"{stamp} {op} {name} token={token} {what} outcome={outcome}") + "\n"
        os.makedirs(self.path(STATE_DIR), mode=0o700, exist_ok=True)
        fd = os.open(self.path(self.LOG_PATH),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, entry.encode())
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def journaled(self, op, name, token):
        """Log the outcome of the operation in the block; the block sets result["line"]."""
        result = {}
        try:
            yield result
        except AgentError as e:
            self.journal(op, name, token, error=e)
            raise
        self.journal(op, name, token, line=result.get("line"))
        if op == "remove":
            self.forget_kept(name)

    def log_entries(self):
        """The agent log parsed: [{time, op, name, token, ..., outcome}], oldest first."""
        try:
            with open(self.path(self.LOG_PATH), encoding="utf-8", errors="replace") as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            head, _, outcome = line.partition(" outcome=")
            parts = head.split(" ")
            if len(parts) < 3:
                continue
            entry = {"time": parts[0], "op": parts[1], "name": parts[2], "outcome": outcome}
            entry.update(p.split("=", 1) for p in parts[3:] if "=" in p)
            entries.append(entry)
        return entries

    def kept_path(self, which, name):
        return f"{STATE_DIR}/{which}/{name}.json"

    def keep_applied(self, name, token, text):
        """Remember the full manifest just applied; the one it replaces becomes `previous`."""
        current = self.load_json(self.kept_path("applied", name))
        if current and current.get("token") != token:
            self.save_json(self.kept_path("previous", name), current)
        self.save_json(self.kept_path("applied", name), {"token": token, "manifest": text})

    def forget_kept(self, name):
        """After a remove: drop the kept versions; with no manifest left, the log and dirs too."""
        if self.load_state(name) is not None:
            return  # a successor owns NAME: nothing was removed
        for which in ("applied", "previous"):
            self.remove_file(self.kept_path(which, name))
        if not self.other_states(None):
            self.remove_file(self.LOG_PATH)
            self.remove_empty_dirs([f"{STATE_DIR}/applied", f"{STATE_DIR}/previous", STATE_DIR])
