"""How evaluating the program (config → render → resources under mocks) scales with stack size.

For 1, 10, 50 and 200 hosts × 10 services each, runs the whole program (`run_program`, as
`make plan` and the program tests do) in a fresh subprocess per size and prints a table:

    hosts, services, resources registered,
    wall s      elapsed time of the run,
    CPU s       CPU time of the run, all threads (the steadier number on a busy machine),
    ms/res      CPU ms per registered resource,
    growth      ms/res against the 10-host row (1.00 = linear; the 1-host row carries the
                fixed start-up cost, so it is shown but is not the reference),
    render s    CPU time of config validation + the render layer alone for that stack
                (pure code, timed separately), to show how much of the run is ours,
    peak MiB    maximum resident memory of the child process;

then whether 200 × 10 meets the target: under 10 s (wall) with growth no worse than linear.
Each timed run ends with `gc.collect()`, so collecting the garbage a run leaves behind is paid
in the row that made it.

    python bench/eval_scale.py [--sizes 1,10,50,200] [--repeat N] [--json]

`--repeat N` runs each size N times and keeps the run with the least CPU time (the machine's
other load only ever adds). Where the time goes inside the SDK is not something this script
can see; profile one size with a sampling profiler, e.g.
`py-spy record --gil -f raw -o out.txt -- python bench/eval_scale.py --child 200`.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.synthetic import SERVICES_PER_HOST, synthetic_config  # noqa: E402,F401  (the stack measured)

TARGET_HOSTS, TARGET_SECONDS = 200, 10.0
MAX_GROWTH = 1.15            # ms/resource may vary this much against the 10-host row: noise


def measure_one(hosts: int) -> dict:
    """Runs in the child: evaluate once; then time validation + rendering alone."""
    sys.path.insert(0, str(ROOT))
    from components.load import parse
    from components.program import run_program
    from components.render import render_stack
    config = synthetic_config(hosts)
    config["outpost:secrets"] = {n: f"<secret:{n}>" for n in config["outpost:secrets"]}
    wall, cpu = time.perf_counter(), time.process_time()
    registered = run_program("bench", config)
    gc.collect()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    render_cpu = time.process_time()
    render_stack(parse(config, "bench"))
    render_cpu = time.process_time() - render_cpu
    return {"hosts": hosts, "services": hosts * SERVICES_PER_HOST, "resources": len(registered),
            "wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "render_cpu_s": round(render_cpu, 3),
            "peak_mib": round(peak_mib, 1)}


def run_child(hosts: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(hosts)], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> list[str]:
    lines = ["program evaluation (config → render → resources under mocks), one process per size",
             f"{'hosts':>5} {'services':>8} {'resources':>9} {'wall s':>7} {'CPU s':>7} {'ms/res':>7} "
             f"{'growth':>7} {'render s':>8} {'peak MiB':>8}"]
    for r in rows:
        lines.append(f"{r['hosts']:>5} {r['services']:>8} {r['resources']:>9} {r['wall_s']:>7.2f} "
                     f"{r['cpu_s']:>7.2f} {r['ms_per_resource']:>7.2f} {r['growth']:>7.2f} "
                     f"{r['render_cpu_s']:>8.2f} {r['peak_mib']:>8.1f}")
    return lines


def verdict(rows: list[dict]) -> str:
    target = next((r for r in rows if r["hosts"] == TARGET_HOSTS), None)
    if target is None:
        return f"target not measured ({TARGET_HOSTS} hosts not among the sizes)"
    linear = all(r["growth"] <= MAX_GROWTH for r in rows if r["hosts"] >= 10)
    fast = target["wall_s"] < TARGET_SECONDS
    met = "MET" if fast and linear else "NOT MET"
    return (f"target {met}: {TARGET_HOSTS} hosts × {SERVICES_PER_HOST} services took {target['wall_s']:.2f} s "
            f"wall / {target['cpu_s']:.2f} s CPU (target < {TARGET_SECONDS:.0f} s); growth per resource "
            f"{'no worse than linear' if linear else 'WORSE than linear'} (≤ {MAX_GROWTH} vs the 10-host row)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,10,50,200")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure_one(args.child)))
        return 0
    rows = [min((run_child(size) for _ in range(max(args.repeat, 1))), key=lambda r: r["cpu_s"])
            for size in (int(s) for s in args.sizes.split(","))]
    for r in rows:
        r["ms_per_resource"] = round(1000 * r["cpu_s"] / r["resources"], 2)
    base = next((r for r in rows if r["hosts"] == 10), rows[0])
    for r in rows:
        r["growth"] = round(r["ms_per_resource"] / base["ms_per_resource"], 2)
    if args.json:
        print(json.dumps({"rows": rows, "verdict": verdict(rows)}, indent=2))
        return 0
    print("\n".join(table(rows)))
    print(verdict(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
