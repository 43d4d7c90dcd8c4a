"""Where one real `pulumi preview` spends its time and memory: the CLI's Go profiles and the
Python program's stacks, for the synthetic stack (--outpost HOSTS) or the floor program
(--floor COUNT --stdin BYTES --secret MODE), with or without PULUMI_SKIP_CHECKPOINTS.

- The CLI: `pulumi --profiling=PREFIX` writes a CPU profile and, at exit, a heap profile
  (pkg/cmd/pulumi/pulumi.go, sdk/go/common/util/cmdutil/profile.go); printed with
  `go tool pprof -top`, flat and cumulative CPU and allocated bytes (alloc_space), and what is
  still held at exit (inuse_space).
- The program: py-spy attached to the `pulumi-language-python-exec` process as soon as the
  language host starts it (the imports before that are missed), sampling at 100 Hz while a thread
  holds the GIL (`--gil`: Python running, not waiting on the engine); printed as the functions
  with the most samples, self and inclusive.

    python bench/engine_profile.py (--outpost 10 | --floor 300 --stdin 5000 --secret stdin)
                                   [--skip-checkpoints] [--out DIR] [--top 25]

Profiling slows the CLI (an execution trace is written too): read shapes, not seconds.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.engine_scale import floor_stack, load_average, measure, outpost_stack  # noqa: E402
from bench.proctree import Proc  # noqa: E402
from tools.pulumi_cli import BIN  # noqa: E402

SHORTEN = [("github.com/pulumi/pulumi/pkg/v3/", "pkg/"), ("github.com/pulumi/pulumi/sdk/v3/", "sdk/")]


def go_tool() -> str:
    found = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if found is None:
        raise SystemExit("engine_profile: `go` is needed for `go tool pprof` (make engine installs it)")
    return found


def pprof_top(profile: Path, top: int, *extra: str) -> list[str]:
    out = subprocess.run([go_tool(), "tool", "pprof", "-top", f"-nodecount={top}", *extra,
                          str(BIN / "pulumi"), str(profile)], capture_output=True, text=True, timeout=300)
    lines = out.stdout.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith("flat")), 0)
    body = [line for line in lines[:start] if line.startswith(("Duration", "Showing nodes"))] + lines[start:]
    for long, short in SHORTEN:
        body = [line.replace(long, short) for line in body]
    return body


FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def pyspy_top(raw: Path, top: int) -> list[str]:
    """Self and inclusive samples per function from py-spy's raw (collapsed) stacks."""
    own, total, samples = collections.Counter(), collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = []
        for frame in stack.split(";"):
            m = FRAME.match(frame)
            frames.append(f"{m['func']} ({m['file']})" if m else frame)
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    if not samples:
        return ["(no samples)"]
    lines = [f"{samples} samples holding the GIL", f"{'self':>6} {'self%':>6} {'incl':>6} {'incl%':>6}  function"]
    for f, n in own.most_common(top):
        lines.append(f"{n:>6} {100 * n / samples:>5.1f}% {total[f]:>6} {100 * total[f] / samples:>5.1f}%  {f}")
    lines += ["", f"{'incl':>6} {'incl%':>6}  function (inclusive)"]
    for f, n in total.most_common(top):
        lines.append(f"{n:>6} {100 * n / samples:>5.1f}%  {f}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--outpost", type=int, metavar="HOSTS", help="the synthetic stack at HOSTS hosts")
    what.add_argument("--floor", type=int, metavar="COUNT", help="the floor program with COUNT Commands")
    parser.add_argument("--stdin", type=int, default=10, help="the floor's stdin bytes")
    parser.add_argument("--secret", default="outputs", choices=("none", "outputs", "stdin"))
    parser.add_argument("--form", default="long")
    parser.add_argument("--skip-checkpoints", action="store_true")
    parser.add_argument("--out", type=Path, help="keep the profiles in DIR (default: a temporary directory)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--max-mib", type=float, default=8192)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="outpost-engine-profile-") as tmp:
        out = (args.out or Path(tmp) / "out").resolve()
        out.mkdir(parents=True, exist_ok=True)
        state = Path(tmp) / "state"
        if args.outpost is not None:
            cli, _ = outpost_stack(state, args.outpost, args.form)
            label, hosts = f"outpost {args.outpost} hosts ({args.form} form)", args.outpost
        else:
            cli = floor_stack(state, args.floor, args.stdin, args.secret)
            label, hosts = f"floor {args.floor} × {args.stdin} B, secret {args.secret}", 0
        spies: list[subprocess.Popen] = []
        raw = out / "program.pyspy.txt"

        def attach(proc: Proc) -> None:
            if proc.name.endswith("pulumi-language-python-exec") and not spies:
                spies.append(subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--gil", "--pid", str(proc.pid), "-r", "100",
                     "-f", "raw", "-o", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))

        load = load_average()
        row = measure(cli, "outpost" if args.outpost is not None else "floor", hosts,
                      skip_checkpoints=args.skip_checkpoints, timeout=args.timeout, max_mib=args.max_mib,
                      profile=out, on_new=attach)
        for spy in spies:
            try:
                spy.wait(timeout=60)
            except subprocess.TimeoutExpired:
                spy.terminate()
                spy.wait(timeout=10)
        print(f"== {label}; PULUMI_SKIP_CHECKPOINTS {'on' if args.skip_checkpoints else 'off'}; "
              f"load average {load} → {load_average()}")
        print(f"status {row.status} {row.detail}; resources {row.resources}; wall {row.wall_s} s, tree CPU "
              f"{row.cpu_s} s; peak MiB: CLI {row.cli_mib}, language host {row.lang_mib}, program {row.prog_mib}, "
              + ", ".join(f"{k} {v}" for k, v in row.providers.items()))
        cpu = sorted(out.glob(f"{'outpost' if args.outpost is not None else 'floor'}-{hosts}.*.cpu"))
        mem = sorted(out.glob(f"{'outpost' if args.outpost is not None else 'floor'}-{hosts}.*.mem"))
        if cpu:
            print("\n-- CLI CPU, flat"), print("\n".join(pprof_top(cpu[-1], args.top)))
            print("\n-- CLI CPU, cumulative"), print("\n".join(pprof_top(cpu[-1], args.top, "-cum")))
        if mem:
            print("\n-- CLI allocations (alloc_space), flat")
            print("\n".join(pprof_top(mem[-1], args.top, "-sample_index=alloc_space")))
            print("\n-- CLI allocations (alloc_space), cumulative")
            print("\n".join(pprof_top(mem[-1], args.top, "-sample_index=alloc_space", "-cum")))
            print("\n-- CLI heap held at exit (inuse_space)")
            print("\n".join(pprof_top(mem[-1], max(args.top // 2, 10), "-sample_index=inuse_space")))
        print("\n-- the Python program (py-spy, holding the GIL)")
        if raw.exists():
            print("\n".join(pyspy_top(raw, args.top)))
        else:
            print("(no py-spy profile: " + (spies[0].stderr.read().strip()[-500:] if spies else "program not seen") + ")")
        for trace in out.glob("*.trace"):     # the execution trace: large, and not read here
            trace.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
