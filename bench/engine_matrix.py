"""What drives the engine's cost: resource count, stdin bytes, secrets, checkpoints.

Previews the floor program (bench/floor/: N `command:remote:Command` resources and nothing else)
for every cell of COUNTS × STDIN sizes × secret modes × PULUMI_SKIP_CHECKPOINTS off/on, one
process tree per cell (bench/proctree.py), and prints wall and CPU (the tree's, the CLI's, the
program's) and the peak resident memory of the CLI, the program and the command provider. Secret modes (bench/floor):
`none` nothing secret; `outputs` outpost's shape for a manifest without secrets (secret key,
stdin/stdout/stderr secret outputs); `stdin` stdin a secret input too.

Cells are bounded (--timeout, --max-mib); with checkpoints on, a cell whose smaller-count
neighbour was killed, or whose quadratic extrapolation from it passes the timeout, is skipped
and says so.

    python bench/engine_matrix.py [--counts 100,300,1000] [--stdin 10,5000,40000]
                                  [--secret none,outputs,stdin] [--checkpoints off,on]
                                  [--timeout 150] [--max-mib 6144] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.engine_scale import Preview, floor_stack, load_average, measure  # noqa: E402


def predicted(previous: tuple[int, Preview] | None, count: int, checkpoints: bool) -> float | None:
    """Seconds a cell is expected to take from its smaller-count neighbour: quadratic with
    checkpoints (the whole snapshot is rewritten after every step), else linear."""
    if previous is None or not previous[1].ok:
        return None
    n, row = previous
    return row.wall_s * (count / n) ** (2 if checkpoints else 1)


def run(counts, sizes, modes, checkpoint_modes, timeout, max_mib, state: Path, log) -> list[dict]:
    cells = []
    for checkpoints in checkpoint_modes:
        for mode in modes:
            for size in sizes:
                previous = None
                for count in counts:
                    cell = {"count": count, "stdin_bytes": size, "secret": mode, "checkpoints": checkpoints}
                    guess = predicted(previous, count, checkpoints)
                    if previous is not None and not previous[1].ok:
                        cell |= {"status": "skipped", "detail": f"{previous[0]} already {previous[1].status}"}
                    elif guess is not None and guess > timeout:
                        cell |= {"status": "skipped", "detail": f"predicted ~{guess:.0f} s from {previous[0]}"}
                    else:
                        cli = floor_stack(state, count, size, mode)
                        row = measure(cli, "floor", 0, skip_checkpoints=not checkpoints, timeout=timeout,
                                      max_mib=max_mib)
                        cell |= asdict(row)
                        previous = (count, row)
                    cells.append(cell)
                    print(f"engine_matrix: {json.dumps(cell)}", file=log, flush=True)
    return cells


def table(cells: list[dict]) -> list[str]:
    lines = [f"{'checkpoints':<11} {'secret':<7} {'count':>5} {'stdin B':>7} {'payload MB':>10} {'wall s':>7} "
             f"{'CPU s':>7} {'CLI CPU':>7} {'prog CPU':>8} {'CLI MiB':>8} {'prog MiB':>8} {'cmd MiB':>8}  status"]
    for c in cells:
        ok = c.get("status") == "ok"

        def f(key, fmt):
            v = c.get(key) if ok else None
            return "-" if v is None else format(v, fmt)
        payload = c["count"] * c["stdin_bytes"] / 1e6
        lines.append(f"{'on' if c['checkpoints'] else 'off':<11} {c['secret']:<7} {c['count']:>5} {c['stdin_bytes']:>7} "
                     f"{payload:>10.2f} {f('wall_s', '.1f'):>7} {f('cpu_s', '.1f'):>7} {f('cli_cpu_s', '.1f'):>7} "
                     f"{f('prog_cpu_s', '.1f'):>8} {f('cli_mib', '.0f'):>8} {f('prog_mib', '.0f'):>8} "
                     f"{(format(c['providers'].get('command'), '.0f') if ok and c.get('providers') else '-'):>8}  "
                     f"{'' if ok else c.get('status', '') + ': ' + c.get('detail', '')}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--counts", default="100,300,1000")
    parser.add_argument("--stdin", default="10,5000,40000")
    parser.add_argument("--secret", default="none,outputs,stdin")
    parser.add_argument("--checkpoints", default="off,on", help="PULUMI_SKIP_CHECKPOINTS unset (on) or true (off)")
    parser.add_argument("--timeout", type=float, default=150)
    parser.add_argument("--max-mib", type=float, default=6144)
    parser.add_argument("--json", type=Path, help="also write the cells to this file")
    args = parser.parse_args()
    ints = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    modes = [m for m in args.secret.split(",") if m]
    checkpoint_modes = [{"on": True, "off": False}[c] for c in args.checkpoints.split(",") if c]
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="outpost-engine-matrix-") as tmp:
        cells = run(ints(args.counts), ints(args.stdin), modes, checkpoint_modes, args.timeout, args.max_mib,
                    Path(tmp), sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({"load_before": load, "load_after": load_average(), "cells": cells},
                                        indent=2) + "\n")
    print(f"the floor program previewed per cell; load average before {load}, after {load_average()}")
    print("\n".join(table(cells)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
