"""The stored state: /var/lib/outpost/manifests/NAME.json (0600, dir 0700) per applied manifest,
and the lock that serializes agents on a host.

Owns those files: an apply records in its state the work it still owes (restarts,
daemon-reloads, leftovers) before it changes any file, so a run cut off at any step converges
on the next one.
"""

import contextlib
import fcntl
import json
import os
import time

from .base import STATE_DIR, AgentError
from .staging import Staging

LOCK_WAIT = 1800          # another apply on this host may be in the middle of a rollout


class State(Staging):
    """Load and save the stored states; take the host's agent lock."""

    @staticmethod
    def state_path(name):
        return f"{STATE_DIR}/manifests/{name}.json"

    def state_file(self, name):
        return self.path(self.state_path(name))

    def load_state(self, name):
        try:
            with open(self.state_file(name), encoding="utf-8") as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise AgentError(f"stored state {self.state_file(name)} is corrupt: {e}") from None

    def other_states(self, name):
        folder = self.path(f"{STATE_DIR}/manifests")
        names = sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json")) \
            if os.path.isdir(folder) else []
        return [s for n in names if n != name and (s := self.load_state(n))]

    def save_state(self, name, state):
        try:
            self.save_json(self.state_path(name), {**state, "created_dirs": sorted(set(state["created_dirs"]))})
        except OSError as e:
            raise AgentError(f"could not save the state of {name} in {STATE_DIR}: {e.strerror}; "
                             "the next apply finishes this one") from None

    def paths_of_others(self, name):
        return {f["path"] for s in self.other_states(name) for f in s["manifest"]["files"]}

    @contextlib.contextmanager
    def locked(self):
        """Serialize agents on this host (Pulumi runs several Commands at once); bounded wait."""
        os.makedirs(self.path(STATE_DIR), mode=0o700, exist_ok=True)
        fd = os.open(self.path(f"{STATE_DIR}/lock"), os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + LOCK_WAIT
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise AgentError(f"another outpost-apply held {STATE_DIR}/lock for "
                                         f"{LOCK_WAIT}s") from None
                    time.sleep(0.5)
            yield
        finally:
            os.close(fd)

    def owner_token(self, name, token):
        """The token a remove must present: TOKEN, or the stored one when NAME was rolled back
        from TOKEN (the stack's resource still owns it)."""
        state = self.load_state(name)
        if state and token == state.get("rolled_back_from"):
            return state["token"]
        return token
