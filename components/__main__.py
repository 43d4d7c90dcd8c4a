"""outpost's command line, no Pulumi CLI needed.

    python -m components render --stack NAME --out DIR   # the offline plan (make plan)
    python -m components check --stack NAME              # validate Pulumi.NAME.yaml only
    python -m components diff --stack NAME --base GITREF [--format markdown|text] [--max-chars N]
                                                         # what changes between GITREF and the
                                                         # working tree (make diff)
    python -m components status --stack NAME [--json]    # what runs, and is it the stack's (make status)
    python -m components drift --stack NAME [--repair] [--json]      # hand edits (make drift)
    python -m components logs --stack NAME --service S [--host H] [--since WHEN] [--lines N]
                                             [--follow [--for S]] [--json]    # a service's journal (make logs)
    python -m components rollback --stack NAME --service S [--json] # previous version (make rollback)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError
from .load import load_file
from .program import ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m components", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="write every host's files and plan.json for a stack")
    render.add_argument("--stack", required=True)
    render.add_argument("--out", required=True, type=Path)
    check = sub.add_parser("check", help="validate a stack's config")
    check.add_argument("--stack", required=True)
    diff = sub.add_parser("diff", help="files, resources, restarts and secrets changed since a git ref")
    diff.add_argument("--stack", required=True)
    diff.add_argument("--base", required=True, help="git ref to compare with, e.g. origin/main")
    diff.add_argument("--format", choices=["text", "markdown"], default="text")
    diff.add_argument("--max-chars", type=int, default=None,
                      help="cut the output cleanly at N characters (markdown default: 60000)")
    status = sub.add_parser("status", help="what runs on every host and whether it is the stack's")
    drift = sub.add_parser("drift", help="files and units changed on the hosts by hand")
    drift.add_argument("--repair", action="store_true", help="re-apply the drifted manifests")
    logs = sub.add_parser("logs", help="a service's journal from every host that runs it")
    rollback = sub.add_parser("rollback", help="put a service's previous version back, host by host")
    for op in (status, drift, logs, rollback):
        op.add_argument("--stack", default="local")
        op.add_argument("--json", action="store_true", help="one JSON document for scripts")
    for op in (logs, rollback):
        op.add_argument("--service", required=True)
    logs.add_argument("--host")
    logs.add_argument("--since", help="journalctl's --since, e.g. '1 hour ago' or 2026-01-01")
    logs.add_argument("--lines", type=int, default=200)
    logs.add_argument("--follow", action="store_true")
    logs.add_argument("--for", dest="follow_for", type=float, default=None, metavar="SECONDS",
                      help="with --follow: stop after SECONDS (default: when the hosts' streams end or Ctrl-C)")
    fetch = sub.add_parser("litestream-binary", help="the pinned litestream binary, for a host with no network "
                                                     "(prints where on the host it goes)")
    fetch.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.command == "diff":
        return _diff(args)
    if args.command == "litestream-binary":
        from .operate import litestream
        try:
            args.out.write_bytes(litestream.binary())
        except litestream.FetchError as error:
            print(f"litestream-binary: {error}", file=sys.stderr)
            return 2
        print(litestream.LITESTREAM)
        return 0
    if args.command in ("status", "drift", "logs", "rollback"):
        from .operate.cli import run
        return run(args)

    stack_file = ROOT / f"Pulumi.{args.stack}.yaml"
    if not stack_file.exists():
        print(f"{stack_file.name}: no such stack file in {ROOT}", file=sys.stderr)
        return 2
    try:
        if args.command == "check":
            from .config.records import notes
            stack = load_file(stack_file)
            print(f"{stack_file.name}: ok")
            for key, message in notes(stack):
                print(f"{stack_file.name}: note: outpost:{key}: {message}")
        else:
            from .plan import write_plan
            args.out.mkdir(parents=True, exist_ok=True)
            plan = write_plan(args.stack, args.out)
            files = sum(len(m["files"]) for h in plan["hosts"].values() for m in h.values())
            print(f"{stack_file.name}: {len(plan['hosts'])} hosts, {files} files, "
                  f"{len(plan['resources'])} resources → {args.out}")
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 2
    return 0


def _diff(args: argparse.Namespace) -> int:
    """Exit 0 whether or not anything changed; 2 when the base can't be resolved or rendered."""
    from .diff import DiffError, run
    try:
        sys.stdout.write(run(args.stack, args.base, args.format, args.max_chars))
    except DiffError as error:
        print(f"make diff: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
