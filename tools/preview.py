"""`make preview STACK=test`: `pulumi preview --diff` of one stack with the pinned CLI
(.engine/bin, `make engine`). The pull request workflow runs exactly this, and so does the offline
test suite (tests/engine/test_previews.py), there against a stand-in for the Hetzner API.

Where the stack lives:
- by default, the user's own: the backend `pulumi login` chose or PULUMI_BACKEND_URL names, the
  passphrase from PULUMI_CONFIG_PASSPHRASE(_FILE), the project's Pulumi.<stack>.yaml (the
  workflow's backend and secrets come from its environment);
- `--state DIR`: a state directory laid by tools/pulumi_cli.py (file backend, passphrase file and
  config file in DIR), as the tests use it.

The preview's text goes to stdout and stderr as the CLI prints it (secrets masked by the CLI); the
exit status is the CLI's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tools.pulumi_cli import BIN, StackCli  # noqa: E402

# A preview writes no state, yet CLI v3.274.1's file/bucket (DIY) backend installs a snapshot
# manager for it too (pkg/backend/diy/backend.go, ~lines 1385-1394: "We always install one (even
# for preview and dry-run)", with a DiscardPersister), and that manager's defaultServiceLoop
# (pkg/backend/snapshot.go) still serializes the whole snapshot after every step before the
# persister drops it: pure waste in a preview. PULUMI_SKIP_CHECKPOINTS=true picks its
# unsafeServiceLoop (snapshot.go NewSnapshotManager), which serializes nothing per step. Previews
# only: an `up` must keep its checkpoints (an interrupted apply converges on the next run).
# Measured (2026-12-07, two shared cores): a preview of bench/eval_scale.py's 10-host x 10-service
# stack took 9-14 s and 0.16 GB (max RSS) with it, 20 s and 1.5-1.8 GB without; test's and prod's
# (31 and 53 resources) 5-9 s either way.
# Source: github.com/pulumi/pulumi/pkg/v3@v3.274.1 in the Go module cache.
PREVIEW_ENV = {"PULUMI_SKIP_CHECKPOINTS": "true"}


def preview_cli(stack: str, state: Path | None) -> StackCli:
    return StackCli(stack, state, extra_env=PREVIEW_ENV)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make preview", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--state", type=Path, help="a state directory laid by tools/pulumi_cli.py")
    args = parser.parse_args(argv)
    if not (BIN / "pulumi").exists():
        print(f"make preview: no {BIN / 'pulumi'}: `make engine` puts the pinned Pulumi CLI there",
              file=sys.stderr)
        return 1
    cli = preview_cli(args.stack, args.state)
    if args.state is not None and not cli.config_file.exists():
        print(f"make preview: {cli.config_file} is missing: lay the stack's config first "
              "(tools/pulumi_cli.py StackCli.lay)", file=sys.stderr)
        return 1
    sys.stdout.flush()
    return cli.run(["preview", "--diff"], capture=False, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
