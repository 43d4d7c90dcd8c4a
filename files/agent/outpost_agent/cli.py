"""The command line: `Agent`, the whole agent assembled, and `main`, which parses argv, runs one
subcommand and turns any failure into one paragraph on stderr and an exit status (1 error,
2 usage, 3 unexpected), never a traceback.
"""

import json
import signal
import sys

from .base import AgentError
from .manifest import NAME_RE, TOKEN_RE
from .operate import Operate


class Agent(Operate):
    """Applies and removes manifests. `root` prefixes every host path (tests use a temp dir);
    `run` executes argv lists (tests may record them instead). The layers it is built from are
    listed, bottom first, in the package docstring."""


USAGE = ("usage: outpost-apply apply NAME TOKEN < manifest.json | remove NAME TOKEN"
         " | restart NAME | switch GROUP | status | report --json | drift --json [--repair]"
         " | repair NAME | rollback NAME | logs NAME [--since=WHEN] [--lines=N] [--follow]")


def main(argv=None, agent=None):
    args = sys.argv[1:] if argv is None else argv
    agent = agent or Agent()
    try:
        if len(args) == 3 and args[0] in ("apply", "remove"):
            _, name, token = args
            if not NAME_RE.match(name) or not TOKEN_RE.match(token):
                raise AgentError(f"bad NAME {name!r} or TOKEN (NAME: [a-z0-9][a-z0-9-]*)")
            if args[0] == "apply":
                agent.apply(name, token, sys.stdin.read())
            else:
                agent.remove(name, token)
        elif len(args) == 2 and args[0] == "switch" and NAME_RE.match(args[1]):
            agent.switch(args[1])
        elif len(args) == 2 and args[0] == "restart" and NAME_RE.match(args[1]):
            agent.restart(args[1])
        elif args == ["status"]:
            agent.status()
        elif args == ["report", "--json"]:
            print(json.dumps(agent.report(), sort_keys=True), flush=True)
        elif args[:1] == ["drift"] and args[1:] in (["--json"], ["--json", "--repair"]):
            print(json.dumps(agent.drift(repair="--repair" in args), sort_keys=True), flush=True)
        elif len(args) == 2 and args[0] in ("repair", "rollback") and NAME_RE.match(args[1]):
            getattr(agent, args[0])(args[1])
        elif len(args) >= 2 and args[0] == "logs" and NAME_RE.match(args[1]):
            opts = dict(a.split("=", 1) for a in args[2:] if "=" in a)
            code = agent.unit_logs(args[1], since=opts.get("--since"), lines=opts.get("--lines", 200),
                                   follow="--follow" in args)
            return 0 if code in (0, None) else 1
        else:
            print(USAGE, file=sys.stderr)
            return 2
    except AgentError as e:
        print(f"outpost-apply: error: {agent.redact(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - one paragraph, never a traceback
        print(f"outpost-apply: unexpected {type(e).__name__}: {agent.redact(e)}", file=sys.stderr)
        return 3
    return 0


def entry():
    """The zipapp's __main__: run one subcommand and exit with its status."""
    # A dropped SSH session hangs up on the agent: finish the step at hand rather than die in
    # the middle of it (the state makes a later run converge either way).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sys.exit(main())
