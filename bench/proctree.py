"""Time, CPU and peak memory of a command and every process it starts, read from /proc.

`run_tree(argv)` starts ARGV in its own process group and polls /proc while it runs: every
process whose parent chain leads to it is found, named by its program (argv[0]'s basename: the
`pulumi` CLI, `pulumi-language-python`, the `python` running the program, each
`pulumi-resource-*` provider) and read for:

    peak     VmHWM, the kernel's own high-water mark of its resident memory (monotonic, so the
             last reading before it exits is its peak, short only of the last poll interval),
    cpu      utime + stime of the process itself, as last read;

and the tree's resident total at each poll (its peak: the most the tree held at once). Wall time
is the root's; the tree's CPU time is RUSAGE_CHILDREN after it is reaped (every descendant that
its parent waited for, which Pulumi's processes do), the per-process CPU only as last polled.
Linux only.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Proc:
    pid: int
    name: str
    peak_mib: float = 0.0
    cpu_s: float = 0.0


@dataclass
class TreeRun:
    returncode: int | None            # None: killed at a limit (`killed` says which)
    wall_s: float
    cpu_s: float                       # the whole tree, from the kernel's accounting
    tree_peak_mib: float               # the most the tree held resident at one poll
    procs: list[Proc] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""
    killed: str = ""                   # "" or why the tree was killed: "time" or "memory"

    def by_name(self) -> dict[str, dict]:
        """Name → {"count", "peak_mib" (the largest one), "cpu_s" (summed)}."""
        out: dict[str, dict] = {}
        for p in self.procs:
            entry = out.setdefault(p.name, {"count": 0, "peak_mib": 0.0, "cpu_s": 0.0})
            entry["count"] += 1
            entry["peak_mib"] = max(entry["peak_mib"], p.peak_mib)
            entry["cpu_s"] = round(entry["cpu_s"] + p.cpu_s, 2)
        return out


def _name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    first = os.path.basename(argv[0].decode(errors="replace")) if argv and argv[0] else "?"
    if first.startswith("python"):
        # The program, the dynamic-provider host or pip: say which by what it runs.
        rest = [a.decode(errors="replace") for a in argv[1:] if a]
        if rest[:1] == ["-c"]:
            return "python -c"
        if rest[:1] == ["-m"] and len(rest) > 1:
            return f"python -m {rest[1]}"
        script = next((os.path.basename(a) for a in rest if not a.startswith("-")), "")
        return f"python {script}" if script else "python"
    return first


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def _descendants(root: int) -> list[int]:
    kids, found, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(kids.get(pid, ()))
    return found


def _read(pid: int) -> tuple[float, float, float] | None:
    """(VmHWM MiB, VmRSS MiB, CPU s) of PID, or None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    hwm = rss = 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return hwm, rss, cpu


def run_tree(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
             timeout: float = 600, max_tree_mib: float | None = None, interval: float = 0.1,
             on_new: Callable[[Proc], None] | None = None) -> TreeRun:
    """Run ARGV to its end, sampling its tree; its whole process group is killed after TIMEOUT
    seconds or once the tree holds more than MAX_TREE_MIB resident (a shared machine's guard).
    ON_NEW is called with each process of the tree when it is first seen (e.g. to attach a
    profiler to the program)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    procs: dict[int, Proc] = {}
    tree_peak = 0.0
    # A long preview can fill a pipe: read both in the background.
    out: dict[str, str] = {}

    def drain(stream, key):
        out[key] = stream.read()

    readers = [threading.Thread(target=drain, args=(proc.stdout, "stdout"), daemon=True),
               threading.Thread(target=drain, args=(proc.stderr, "stderr"), daemon=True)]
    for t in readers:
        t.start()
    killed = ""
    while proc.poll() is None:
        if time.monotonic() - started > timeout:
            killed = "time"
        elif max_tree_mib is not None and tree_peak > max_tree_mib:
            killed = "memory"
        if killed:
            # A plugin may have left the group: each process still in the tree, by its id.
            for pid in _descendants(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            os.killpg(proc.pid, signal.SIGKILL)
            break
        held = 0.0
        for pid in _descendants(proc.pid):
            reading = _read(pid)
            if reading is None:
                continue
            hwm, rss, cpu = reading
            known, name = procs.get(pid), _name(pid)
            if known is not None and name == "?":
                name = known.name                   # exiting: its command line is gone
            if known is None or known.name != name:
                # New, or it has exec'd since: a fork shows its parent's command line (and memory)
                # until then, and exec starts a new high-water mark.
                known = procs[pid] = Proc(pid, name)
                if on_new is not None:
                    on_new(known)
            known.peak_mib, known.cpu_s = max(known.peak_mib, hwm), max(known.cpu_s, cpu)
            held += rss
        tree_peak = max(tree_peak, held)
        time.sleep(interval)
    proc.wait()
    wall = time.monotonic() - started
    for t in readers:
        t.join(timeout=10)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return TreeRun(None if killed else proc.returncode, round(wall, 2), round(cpu, 2),
                   round(tree_peak, 1),
                   [Proc(p.pid, p.name, round(p.peak_mib, 1), round(p.cpu_s, 2)) for p in procs.values()],
                   out.get("stdout", ""), out.get("stderr", ""), killed)
