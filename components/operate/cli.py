"""The `status`, `drift`, `logs` and `rollback` subcommands of `python -m components`: read the
stack, ask its hosts, print a table (or `--json`), and exit 0 / 1 / 2 (2: a host or the stack's
own config could not be reached). Errors are one paragraph on stderr, never a traceback, and
never carry the deploy key."""

from __future__ import annotations

import argparse
import json
import sys

from ..config import ConfigError
from ..program import ROOT
from . import drift, logs, rollback, status
from .connections import StackSource, Unreachable, from_cli


def run(args: argparse.Namespace, source: StackSource | None = None) -> int:
    if source is None and not (ROOT / f"Pulumi.{args.stack}.yaml").exists():
        print(f"Pulumi.{args.stack}.yaml: no such stack file in {ROOT}", file=sys.stderr)
        return 2
    try:
        source = source or from_cli(args.stack)
        if args.command == "status":
            doc = status.collect(source)
            sys.stdout.write(json.dumps(doc, indent=1) + "\n" if args.json else status.table(doc))
        elif args.command == "drift":
            doc = drift.collect(source, repair=args.repair)
            sys.stdout.write(json.dumps(doc, indent=1) + "\n" if args.json else drift.text(doc))
        elif args.command == "rollback":
            doc = rollback.run(source, args.service)
            sys.stdout.write(json.dumps(doc, indent=1) + "\n" if args.json else rollback.text(doc))
        elif args.follow:
            return logs.follow(source, args.service, args.host, args.since, args.lines, as_json=args.json,
                               timeout=getattr(args, "follow_for", None))
        else:
            doc = logs.collect(source, args.service, args.host, args.since, args.lines)
            doc["exit"] = 2 if doc["errors"] else 0
            if args.json:
                sys.stdout.write(json.dumps(doc, indent=1) + "\n")
            else:
                sys.stdout.write("".join(logs.line_of(r) + "\n" for r in doc["lines"]))
                for host, error in doc["errors"].items():
                    print(f"{host}: {error}", file=sys.stderr)
    except (Unreachable, ConfigError) as error:
        print(f"make {args.command}: {error}", file=sys.stderr)
        return 2
    return doc["exit"]
