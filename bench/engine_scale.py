"""The real engine at fleet scale: `pulumi preview` at 1-200 hosts beside the engine's floor.

The synthetic stack (bench/synthetic.py: half Hetzner, half static hosts × 10 services) at 1, 10,
50 and 200 hosts, each beside the engine's floor for the same resource count, measured in the
same run.

The floor (bench/floor/) is a program that registers only `command:remote:Command` resources
shaped like outpost's (a connection with a secret key, secret stdout/stderr/stdin outputs) with a
stdin of 10 bytes: what the engine costs for that many resources when the program hands it
almost nothing. outpost/floor is then what outpost's design (manifest bytes, secrets, other
providers, the render) adds on top.

Every preview is one process tree (the pinned CLI from `make engine`, a file backend and a
passphrase in a scratch directory, the stack config laid by tools/pulumi_cli.py), sampled from
/proc (bench/proctree.py). For each size it prints:

    resources    what the preview reports (the Stack resource included),
    wall s       the CLI's elapsed time,          CPU s   the whole tree's CPU time,
    ms/res       wall ms per resource,
    CLI MiB      peak resident memory of the `pulumi` CLI, lang MiB of the language host,
                 prog MiB of the Python program, and each provider's,
    tree MiB     the most the tree held at once;

then outpost/floor per size, the growth from 50 to 200 hosts against the growth in resources
(1.00 = linear), and whether the targets of issue 24 hold: a 200 × 10 preview within 60 s with
the CLI under 2 GiB, outpost within 1.5× the floor, growth no worse than linear.

A size whose stack cannot start is reported, not raised: today the 200-host config (~350 KB as
JSON) reaches the program in one environment variable, which Linux refuses over 128 KiB
("argument list too long"); the floor still runs at the resource count the program would have
(counted under mocks). Each preview is bounded (--timeout, --max-mib: the tree is killed and the
cell says so), so the benchmark stops by itself on a machine the engine would swamp.

    python bench/engine_scale.py [--sizes 1,10,50,200] [--skip-checkpoints | --no-skip-checkpoints]
                                 [--form groups|long] [--timeout 300] [--max-mib 8192] [--json]
                                 [--profile DIR] [--keep DIR]

--skip-checkpoints sets PULUMI_SKIP_CHECKPOINTS=true for every preview (outpost and floor): the
engine then keeps its snapshot in memory instead of re-serializing it after every step
(pkg/backend/snapshot.go, unsafeServiceLoop). Off by default: a user's `pulumi preview` runs
without it. --profile DIR writes the CLI's Go profiles (`pulumi --profiling`) there.

The no-change `pulumi up` (issue 24: within 2× the preview) needs a state a real `up` made: that
is bench/no_change_up.py, against the VM (`make bench` runs both).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
FLOOR = BENCH / "floor"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.proctree import TreeRun, run_tree  # noqa: E402
from bench.synthetic import FORMS, KEY_SECRETS, SECRETS, SERVICES_PER_HOST, synthetic_config  # noqa: E402
from tools.pulumi_cli import StackCli  # noqa: E402

SIZES = (1, 10, 50, 200)
TARGET_HOSTS = 200
TARGET_SECONDS = 60.0
TARGET_CLI_MIB = 2048.0
TARGET_FLOOR_RATIO = 1.5
MAX_GROWTH = 1.15              # growth per resource, 50 → 200 hosts; above 1 by this much is noise
FLOOR_STDIN_BYTES = 10
FLOOR_SECRET = "outputs"
ARG_MAX_STRING = 128 * 1024    # Linux MAX_ARG_STRLEN: the longest single environment string
PROVIDER = "pulumi-resource-"


@dataclass
class Preview:
    """One measured `pulumi preview`: what ran, what it cost, and whether it finished."""
    program: str                       # "outpost" or "floor"
    hosts: int
    resources: int | None = None
    status: str = "ok"                 # ok | config too large | killed: time | killed: memory | failed
    detail: str = ""
    wall_s: float | None = None
    cpu_s: float | None = None
    cli_mib: float | None = None
    lang_mib: float | None = None
    prog_mib: float | None = None
    tree_mib: float | None = None
    providers: dict[str, float] = field(default_factory=dict)
    cli_cpu_s: float | None = None     # CPU of the CLI alone, and of the Python program alone
    prog_cpu_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def ms_per_resource(self) -> float | None:
        if not self.ok or not self.resources:
            return None
        return round(1000 * self.wall_s / self.resources, 1)


# -- running one preview ----------------------------------------------------------------------------
SUMMARY = re.compile(r"^Resources:\s*\n((?:[ \t]+.*\n?)+)", re.M)
COUNT = re.compile(r"(\d+)\s+(?:to create|to update|to delete|to replace|unchanged|to import)")


def resources_in(display: str) -> int | None:
    """The number of resources the display's closing `Resources:` block counts."""
    match = SUMMARY.search(display)
    if not match:
        return None
    return sum(int(n) for n in COUNT.findall(match.group(1))) or None


def config_bytes(config: dict) -> int:
    """The config as the language host hands it to the program: one JSON object in one
    environment variable (PULUMI_CONFIG), object values themselves JSON text."""
    flat = {k: v if isinstance(v, str) else json.dumps(v, separators=(",", ":")) for k, v in config.items()}
    return len(json.dumps(flat, separators=(",", ":")))


def measure(cli: StackCli, program: str, hosts: int, *, skip_checkpoints: bool, timeout: float,
            max_mib: float, profile: Path | None = None, on_new=None) -> Preview:
    """`pulumi preview` of CLI's stack as one sampled process tree (ON_NEW: see run_tree)."""
    env = cli.env()
    env.pop("PULUMI_SKIP_CHECKPOINTS", None)
    if skip_checkpoints:
        env["PULUMI_SKIP_CHECKPOINTS"] = "true"
    flags = [f"--profiling={profile / f'{program}-{hosts}'}"] if profile else []
    run = run_tree(cli.argv(["preview"], flags), env=env, cwd=cli.project, timeout=timeout, max_tree_mib=max_mib,
                   on_new=on_new)
    return from_tree(program, hosts, run)


def from_tree(program: str, hosts: int, run: TreeRun) -> Preview:
    procs = run.by_name()
    prog = next((v for k, v in procs.items() if k.endswith("pulumi-language-python-exec")), None)
    row = Preview(program, hosts, resources_in(run.stdout), wall_s=run.wall_s, cpu_s=run.cpu_s,
                  cli_mib=(procs.get("pulumi") or {}).get("peak_mib"),
                  lang_mib=(procs.get("pulumi-language-python") or {}).get("peak_mib"),
                  prog_mib=prog["peak_mib"] if prog else None, tree_mib=run.tree_peak_mib,
                  providers={k[len(PROVIDER):]: v["peak_mib"] for k, v in sorted(procs.items())
                             if k.startswith(PROVIDER)},
                  cli_cpu_s=(procs.get("pulumi") or {}).get("cpu_s"), prog_cpu_s=prog["cpu_s"] if prog else None)
    said = run.stdout + run.stderr
    if run.killed:
        row.status = f"killed: {run.killed}"
        row.detail = (f"stopped after {run.wall_s:.0f} s" if run.killed == "time"
                      else f"stopped at {run.tree_peak_mib:.0f} MiB") + f" (the CLI then at {row.cli_mib or 0:.0f} MiB)"
    elif "argument list too long" in said:
        row.status = "config too large"
        row.detail = "fork/exec of the program: argument list too long (E2BIG)"
    elif run.returncode != 0 or row.resources is None:
        row.status = "failed"
        lines = [line for line in said.strip().splitlines() if line.strip()]
        row.detail = f"exit {run.returncode}: " + " | ".join(lines[-3:])
    return row


# -- the two programs ---------------------------------------------------------------------------------
def outpost_stack(state: Path, hosts: int, form: str) -> tuple[StackCli, dict]:
    """The synthetic stack of HOSTS hosts, laid for the CLI (a stack per size and form)."""
    config = synthetic_config(hosts, form=form)
    cli = StackCli(f"scale-{form}-{hosts}", state)
    cli.lay(config, SECRETS, KEY_SECRETS)
    return cli, config


def floor_stack(state: Path, count: int, stdin_bytes: int = FLOOR_STDIN_BYTES,
                secret: str = FLOOR_SECRET) -> StackCli:
    """The floor program registering COUNT Commands (one stack, re-laid for each count)."""
    cli = StackCli("floor", state, project=FLOOR)
    cli.lay({"floor:count": str(count), "floor:stdin_bytes": str(stdin_bytes), "floor:secret": secret})
    return cli


def mocked_resources(config: dict) -> int:
    """How many resources the program registers for CONFIG (under mocks, in a child process: it
    needs no engine), plus the Stack resource a preview counts."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from components.program import run_program; "
            "config = json.load(sys.stdin); "
            "config['outpost:secrets'] = {n: f'<secret:{n}>' for n in config['outpost:secrets']}; "
            "print(len(run_program('bench', config)))")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], input=json.dumps(config), text=True,
                         capture_output=True, check=True, cwd=ROOT, timeout=600)
    return int(out.stdout.strip().splitlines()[-1]) + 1


# -- one size -------------------------------------------------------------------------------------------
def measure_size(state: Path, hosts: int, *, form: str, skip_checkpoints: bool, timeout: float,
                 max_mib: float, profile: Path | None, floor_stdin: int, floor_secret: str) -> list[Preview]:
    cli, config = outpost_stack(state, hosts, form)
    ours = measure(cli, "outpost", hosts, skip_checkpoints=skip_checkpoints, timeout=timeout,
                   max_mib=max_mib, profile=profile)
    if ours.status == "config too large":
        ours.detail = f"config {config_bytes(config) / 1024:.0f} KiB as JSON > 128 KiB: {ours.detail}"
    count = ours.resources if ours.ok else mocked_resources(config)
    if not ours.ok:
        ours.resources = count
    floor = floor_stack(state, count - 1, floor_stdin, floor_secret)     # the Stack resource is the 1
    theirs = measure(floor, "floor", hosts, skip_checkpoints=skip_checkpoints, timeout=timeout,
                     max_mib=max_mib, profile=profile)
    theirs.resources = theirs.resources or count
    return [ours, theirs]


# -- the table and the verdicts ---------------------------------------------------------------------
def ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return round(ours / theirs, 2)


def _f(value, fmt: str, width: int) -> str:
    return f"{'-' if value is None else format(value, fmt):>{width}}"


def table(rows: list[Preview], settings: dict) -> list[str]:
    lines = [f"engine preview at scale: synthetic stack ({settings['form']} form, {SERVICES_PER_HOST} services "
             f"per host) against the floor ({settings['floor']}); PULUMI_SKIP_CHECKPOINTS "
             f"{'on' if settings['skip_checkpoints'] else 'off'}; load average {settings['load']}",
             f"{'hosts':>5} {'program':<8} {'resources':>9} {'wall s':>7} {'CPU s':>7} {'ms/res':>7} "
             f"{'CLI MiB':>8} {'lang MiB':>8} {'prog MiB':>8} {'tree MiB':>8}  providers MiB / status"]
    by_size: dict[int, dict[str, Preview]] = {}
    for r in rows:
        by_size.setdefault(r.hosts, {})[r.program] = r
    for hosts, pair in by_size.items():
        for r in (pair.get("outpost"), pair.get("floor")):
            if r is None:
                continue
            tail = (" ".join(f"{k} {v:.0f}" for k, v in r.providers.items()) if r.ok
                    else f"{r.status.upper()}: {r.detail}")
            lines.append(f"{hosts:>5} {r.program:<8} {_f(r.resources, 'd', 9)} "
                         f"{_f(r.wall_s if r.ok else None, '.2f', 7)} {_f(r.cpu_s if r.ok else None, '.2f', 7)} "
                         f"{_f(r.ms_per_resource, '.1f', 7)} {_f(r.cli_mib if r.ok else None, '.0f', 8)} "
                         f"{_f(r.lang_mib if r.ok else None, '.0f', 8)} {_f(r.prog_mib if r.ok else None, '.0f', 8)} "
                         f"{_f(r.tree_mib if r.ok else None, '.0f', 8)}  {tail}")
        ours, theirs = pair.get("outpost"), pair.get("floor")
        if ours and theirs and ours.ok and theirs.ok:
            lines.append(f"{'':>5} {'÷ floor':<8} {'':>9} {_f(ratio(ours.wall_s, theirs.wall_s), '.2f', 7)} "
                         f"{_f(ratio(ours.cpu_s, theirs.cpu_s), '.2f', 7)} {'':>7} "
                         f"{_f(ratio(ours.cli_mib, theirs.cli_mib), '.2f', 8)} {'':>8} {'':>8} "
                         f"{_f(ratio(ours.tree_mib, theirs.tree_mib), '.2f', 8)}")
    return lines


def growth(rows: list[Preview], program: str = "outpost", small: int = 50, large: int = TARGET_HOSTS) -> dict | None:
    """Growth from SMALL to LARGE hosts in wall time and CLI memory, each divided by the growth in
    resources (1.00 = linear), or None unless both ran."""
    a = next((r for r in rows if r.program == program and r.hosts == small and r.ok), None)
    b = next((r for r in rows if r.program == program and r.hosts == large and r.ok), None)
    if a is None or b is None:
        return None
    scale = b.resources / a.resources
    return {"resources": round(scale, 2), "wall": round(b.wall_s / a.wall_s / scale, 2),
            "cli_memory": round(b.cli_mib / a.cli_mib / scale, 2)}


def floor_ratios(rows: list[Preview]) -> dict[int, tuple[float, float]]:
    """Hosts → (wall, CLI memory) of outpost over the floor, for each size where both finished."""
    pairs: dict[int, dict[str, Preview]] = {}
    for r in rows:
        pairs.setdefault(r.hosts, {})[r.program] = r
    return {hosts: (ratio(p["outpost"].wall_s, p["floor"].wall_s), ratio(p["outpost"].cli_mib, p["floor"].cli_mib))
            for hosts, p in pairs.items()
            if "outpost" in p and "floor" in p and p["outpost"].ok and p["floor"].ok}


def against_floor(rows: list[Preview]) -> str:
    """The floor target, judged at the target size (smaller sizes carry the providers' fixed start-up)."""
    ratios = floor_ratios(rows)
    others = ", ".join(f"{h} hosts ×{max(r):.2f}" for h, r in sorted(ratios.items()) if h != TARGET_HOSTS)
    elsewhere = f"; elsewhere {others}" if others else ""
    if TARGET_HOSTS in ratios:
        wall, memory = ratios[TARGET_HOSTS]
        met = max(wall, memory) <= TARGET_FLOOR_RATIO
        return (f"against the floor: {'MET' if met else 'NOT MET'}: at most {max(wall, memory):.2f}× the floor "
                f"(wall ×{wall:.2f}, CLI memory ×{memory:.2f}) at {TARGET_HOSTS} hosts; target ≤ "
                f"{TARGET_FLOOR_RATIO}×{elsewhere}")
    target = [r for r in rows if r.hosts == TARGET_HOSTS]
    if not target:
        return f"against the floor: not measured ({TARGET_HOSTS} hosts not among the sizes{elsewhere})"
    return f"against the floor: NOT MET: {TARGET_HOSTS} hosts did not finish{elsewhere}"


def verdicts(rows: list[Preview]) -> list[str]:
    """One line per target of issue 24: MET, NOT MET or not measured (and why)."""
    out = []
    target = next((r for r in rows if r.program == "outpost" and r.hosts == TARGET_HOSTS), None)
    name = f"{TARGET_HOSTS} hosts × {SERVICES_PER_HOST} services"
    if target is None:
        out.append(f"time and memory: not measured ({TARGET_HOSTS} hosts not among the sizes)")
    elif not target.ok:
        out.append(f"time and memory: NOT MET: {name} did not finish: {target.status}: {target.detail}")
    else:
        fast = target.wall_s <= TARGET_SECONDS
        small = target.cli_mib < TARGET_CLI_MIB
        out.append(f"time: {'MET' if fast else 'NOT MET'}: {name} previewed in {target.wall_s:.1f} s "
                   f"(target ≤ {TARGET_SECONDS:.0f} s)")
        out.append(f"memory: {'MET' if small else 'NOT MET'}: the CLI peaked at {target.cli_mib / 1024:.2f} GiB "
                   f"(target < {TARGET_CLI_MIB / 1024:.0f} GiB)")
    out.append(against_floor(rows))
    g = growth(rows)
    if g is None:
        out.append(f"growth 50 → {TARGET_HOSTS} hosts: not measured (both sizes must finish)")
    else:
        linear = g["wall"] <= MAX_GROWTH and g["cli_memory"] <= MAX_GROWTH
        out.append(f"growth 50 → {TARGET_HOSTS} hosts: {'MET' if linear else 'NOT MET'}: resources ×{g['resources']}, "
                   f"per resource wall ×{g['wall']}, CLI memory ×{g['cli_memory']} (1.00 = linear; "
                   f"target ≤ {MAX_GROWTH})")
    return out


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES), help="hosts, comma-separated")
    parser.add_argument("--skip-checkpoints", action=argparse.BooleanOptionalAction, default=False,
                        help="PULUMI_SKIP_CHECKPOINTS=true for every preview (default: off, as users run it)")
    parser.add_argument("--form", default="groups", choices=sorted(FORMS),
                        help="how the synthetic stack is written (bench/synthetic.py FORMS; the long form can't "
                             "start past ~70 hosts)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one preview may take")
    parser.add_argument("--max-mib", type=float, default=8192, help="MiB one preview's tree may hold")
    parser.add_argument("--floor-stdin", type=int, default=FLOOR_STDIN_BYTES, help="the floor's stdin bytes")
    parser.add_argument("--floor-secret", default=FLOOR_SECRET, choices=("none", "outputs", "stdin"))
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="write the CLI's Go profiles to DIR")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the stacks' state in DIR")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        args.profile = args.profile.resolve()
    settings = {"form": args.form, "skip_checkpoints": args.skip_checkpoints, "load": load_average(),
                "floor": f"Commands, {args.floor_stdin} B stdin, secret {args.floor_secret}",
                "timeout_s": args.timeout, "max_mib": args.max_mib}
    rows: list[Preview] = []
    with contextlib.ExitStack() as stack:
        if args.keep:
            state = args.keep.resolve()
            state.mkdir(parents=True, exist_ok=True)
        else:
            state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="outpost-engine-scale-")))
        for hosts in sizes:
            pair = measure_size(state, hosts, form=args.form, skip_checkpoints=args.skip_checkpoints,
                                timeout=args.timeout, max_mib=args.max_mib, profile=args.profile,
                                floor_stdin=args.floor_stdin, floor_secret=args.floor_secret)
            for r in pair:      # each row as it ends: a run cut short still shows what it measured
                print(f"engine_scale: {json.dumps(asdict(r))}", file=sys.stderr, flush=True)
            rows += pair
    settings["load_after"] = load_average()
    if args.json:
        print(json.dumps({"settings": settings, "rows": [asdict(r) | {"ms_per_resource": r.ms_per_resource}
                                                          for r in rows],
                          "growth": growth(rows), "verdicts": verdicts(rows)}, indent=2))
        return 0
    print("\n".join(table(rows, settings)))
    print("\n".join(verdicts(rows)))
    print(f"load average after: {settings['load_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
