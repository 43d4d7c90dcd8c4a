"""bench/proctree.py: a command's whole process tree named, its peaks and CPU read from /proc, and
its limits enforced (real processes, about 3 s)."""

import sys

from bench.proctree import run_tree

HOLD = ("import time\nx = b'x' * (64 << 20)\nt = time.process_time()\n"
        "while time.process_time() - t < 0.3:\n    pass\ntime.sleep(0.4)\n")


def test_each_process_of_the_tree_is_named_with_its_peak_and_the_tree_cpu_is_counted():
    run = run_tree(["sh", "-c", f'"{sys.executable}" -c "$0"; echo done', HOLD], timeout=30)
    assert run.returncode == 0 and not run.killed and run.stdout == "done\n"
    procs = run.by_name()
    assert set(procs) >= {"sh", "python -c"}, procs
    assert procs["python -c"]["peak_mib"] >= 64 and procs["python -c"]["count"] == 1
    assert procs["sh"]["peak_mib"] < 64
    assert run.cpu_s >= 0.3 and run.wall_s >= 0.7 and run.tree_peak_mib >= 64


def test_a_tree_past_its_time_or_memory_is_killed_and_says_which():
    slow = run_tree(["sh", "-c", "sleep 30"], timeout=0.5)
    assert slow.killed == "time" and slow.returncode is None and slow.wall_s < 10
    big = run_tree([sys.executable, "-c", "import time\nx = b'x' * (200 << 20)\ntime.sleep(30)"],
                   timeout=30, max_tree_mib=100)
    assert big.killed == "memory" and big.returncode is None and big.wall_s < 10
