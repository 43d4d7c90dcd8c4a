"""The ground floor: the agent's one error type, its state directory, and running a command.

Owns nothing on the host and touches nothing: `run_command` runs an argv list (never a shell) and
returns what it printed; every module above raises `AgentError` for a failure that is explained
in one paragraph and printed without a traceback.
"""

import shlex
import subprocess

STATE_DIR = "/var/lib/outpost"
COMMAND_TIMEOUT = 300


class AgentError(Exception):
    """A failure explained in one paragraph; printed without a traceback."""


def one_line(text, limit=2000):
    """Collapse a tool's multi-line output into one paragraph."""
    text = " / ".join(line.strip() for line in str(text).splitlines() if line.strip())
    return text if len(text) <= limit else text[:limit] + " ..."


def run_command(argv, input=None, timeout=COMMAND_TIMEOUT, env=None):
    """Run argv; return (exit code, combined stdout+stderr, stdout)."""
    stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                              timeout=timeout, env=env, **stdin)
    except FileNotFoundError:
        raise AgentError(f"`{argv[0]}` is not installed on this host") from None
    except subprocess.TimeoutExpired:
        raise AgentError(f"`{shlex.join(argv)}` did not finish within {timeout}s") from None
    return proc.returncode, (proc.stdout + proc.stderr).strip(), proc.stdout
