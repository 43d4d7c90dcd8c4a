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


# Generated expressions: weekdays, dates and times built from valid and invalid parts.
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

COMPONENT = st.one_of(st.sampled_from(["*", "0", "1", "12", "13", "23", "24", "31", "32", "59", "60", "1,2",
                                       "1..3", "3..1", "*/5", "0/15", "1.5", "", "x", "01"]))
WEEKDAY = st.sampled_from(["", "Mon ", "Mon..Fri ", "Sat,Sun ", "Funday ", "mon ", "Monday "])
CALENDARS = st.one_of(
    st.sampled_from(["daily", "weekly", "hourly", "minutely", "yearly", "quarterly", "nightly"]),
    st.builds(lambda w, y, m, d, h, mi, s, tz: f"{w}{y}-{m}-{d} {h}:{mi}{s}{tz}", WEEKDAY,
              st.sampled_from(["*", "2025", "1969"]), COMPONENT, COMPONENT, COMPONENT, COMPONENT,
              st.sampled_from(["", ":00", ":30", ":61"]), st.sampled_from(["", " UTC"])),
    st.builds(lambda w, h, mi: f"{w}{h}:{mi}", WEEKDAY, COMPONENT, COMPONENT),
)


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(CALENDARS)
def test_generated_expressions_agree_with_systemd(expr):
    assert ours_accepts(expr) == systemd_accepts(expr), expr
