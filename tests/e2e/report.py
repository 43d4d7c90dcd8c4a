"""The end-to-end report: every scenario's wall time, printed at the end of the session and kept in
build/e2e-report.md.

A plain module (not the conftest) so that the fixtures and the test modules append to one list:
pytest imports conftest.py under its own module name, and a test module importing
`tests.e2e.conftest` would get a second copy with its own, never-printed list.
"""

from __future__ import annotations

import time
from pathlib import Path

REPORT = Path(__file__).resolve().parents[2] / "build" / "e2e-report.md"
_timings: list[tuple[str, float, str]] = []


def record(scenario: str, seconds: float, note: str = "") -> None:
    """One table row; NOTE is cut to one line of at most 160 characters (it may quote an error)."""
    note = " ".join(note.split()).replace("|", "/")
    _timings.append((scenario, round(seconds, 1), note[:157] + "..." if len(note) > 160 else note))


def write(exitstatus: int) -> None:
    if not _timings:
        return
    lines = ["# End-to-end report", "", f"Run {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, exit status {exitstatus}.",
             "", "| scenario | seconds | notes |", "|---|---:|---|"]
    lines += [f"| {name} | {seconds} | {note} |" for name, seconds, note in _timings]
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    _timings.clear()
