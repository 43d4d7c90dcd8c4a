"""The host as the agent sees it: `root` prefixes every host path (tests use a temporary
directory), `run` executes argv lists (tests answer them with a recording stand-in).

`Host` is the bottom of the agent's class stack (see the package docstring); it reads the
agent's own root-only JSON state by path (`load_json`) and writes nothing.
"""

import json
import sys

from .base import run_command


class Host:
    """The agent's root, its command runner and where its progress goes; the per-run memory the
    layers above keep (user managers seen up, this run's staging dirs, the secret values learnt)."""

    def __init__(self, root="", run=run_command, log=sys.stderr):
        self.root = root.rstrip("/")
        self.runner = run
        self.log_to = log
        self.ready_managers = set()
        self.live_stages = set()  # (dir, name) of this run's staging dirs: never swept
        self.secret_values, self.secret_re, self.kept_secrets_read = set(), None, False

    def path(self, host_path):
        return self.root + host_path

    def load_json(self, host_path):
        try:
            with open(self.path(host_path), encoding="utf-8") as fh:
                return json.load(fh)
        except (FileNotFoundError, ValueError):
            return None
