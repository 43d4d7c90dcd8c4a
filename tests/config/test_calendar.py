"""The calendar checker agrees with systemd's own parser (`systemd-analyze calendar`)."""

import subprocess

import pytest

from components.config.calendar import check_calendar

VALID = ["daily", "weekly", "hourly", "*-*-* 04:00:00", "*-*-* 04:00", "Mon..Fri 08:00",
         "Sat,Sun 10:30", "2025-05-14 12:00:00", "*-*-1 00:00", "*-*-* *:0/15", "*-02-* 03:00:00",
         "Mon *-*-* 00:00:00", "*-*-* 04:00:00 UTC", "12-24 18:00", "*-*-* 1,13:00", "*-*~1 00:00",
         "*-*-* 08..18:00", "Tue 2026-*-01..07 09:00"]
INVALID = ["", "every day", "*-*-* 25:00:00", "*-*-* 04:60", "*-13-* 00:00", "Funday 08:00",
           "*-*-* 04:00:00 nonsense", "daily weekly", "*-*-32 00:00", "*-*-* 18..08:00"]


def systemd_accepts(expr: str) -> bool:
    proc = subprocess.run(["systemd-analyze", "calendar", expr], capture_output=True, text=True)
    return proc.returncode == 0


def ours_accepts(expr: str) -> bool:
    try:
        check_calendar(expr)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("expr", VALID + INVALID)
def test_agrees_with_systemd(expr):
    assert ours_accepts(expr) == systemd_accepts(expr), expr
    assert ours_accepts(expr) == (expr in VALID)
