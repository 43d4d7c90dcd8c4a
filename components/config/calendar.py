"""A checker for systemd calendar expressions (systemd.time(7), "Calendar Events").

Pure Python so `make plan` works where systemd is missing (a laptop running macOS); the test
suite holds it against `systemd-analyze calendar` on a corpus of valid and invalid expressions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

SHORTHANDS = {"minutely", "hourly", "daily", "monthly", "weekly", "yearly", "annually",
              "quarterly", "semiannually"}
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAY_NAMES = {d: i for i, d in enumerate(WEEKDAYS)} | {
    name: i for i, name in enumerate(["monday", "tuesday", "wednesday", "thursday", "friday",
                                      "saturday", "sunday"])}
NUMBER = r"\d+"


def _check_component(text: str, low: int, high: int, what: str, fraction: bool = False) -> None:
    """One date/time component: `*`, N, A..B, N/R, lists of those joined by commas (systemd
    refuses `*/R`)."""
    if text == "":
        raise ValueError(f"empty {what}")
    for part in text.split(","):
        base, _, rep = part.partition("/")
        if rep and not re.fullmatch(r"\d+(\.\d+)?" if fraction else NUMBER, rep):
            raise ValueError(f"bad repetition {rep!r} in {what}")
        if base == "*":
            if rep:
                raise ValueError(f"'*/{rep}' in {what}: a repetition needs a start, like 0/{rep}")
            continue
        start, dots, end = base.partition("..")
        values = [start, end] if dots else [start]
        for value in values:
            if not re.fullmatch(r"\d+(\.\d+)?" if fraction else NUMBER, value):
                raise ValueError(f"{value!r} is not a number in {what}")
            if not low <= float(value) < high + 1:
                raise ValueError(f"{value} is outside {low}..{high} in {what}")
        if dots and float(start) > float(end):
            raise ValueError(f"range {base} is reversed in {what}")


def _check_weekdays(text: str) -> None:
    for part in text.split(","):
        start, dots, end = part.partition("..")
        for name in ([start, end] if dots else [start]):
            if name.lower() not in WEEKDAY_NAMES:
                raise ValueError(f"{name!r} is not a weekday (Mon..Sun)")


def _check_date(text: str) -> None:
    parts = text.split("-")
    if "~" in text:
        head, _, day = text.partition("~")
        parts = head.split("-") + [day]
    if len(parts) == 2:
        month, day = parts
        year = None
    elif len(parts) == 3:
        year, month, day = parts
    else:
        raise ValueError(f"{text!r} is not a date like *-*-* or 2025-05-14")
    if year is not None:
        _check_component(year, 1970, 2199, "year")
    _check_component(month, 1, 12, "month")
    _check_component(day, 1, 31, "day")


def _check_time(text: str) -> None:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"{text!r} is not a time like 04:00 or 04:00:00")
    _check_component(parts[0], 0, 23, "hour")
    _check_component(parts[1], 0, 59, "minute")
    if len(parts) == 3:
        _check_component(parts[2], 0, 59, "second", fraction=True)


def check_calendar(expr: str) -> None:
    """Raise ValueError saying what is wrong unless EXPR is a valid systemd calendar event."""
    words = expr.strip().split()
    if not words:
        raise ValueError("empty expression")
    if len(words) == 1 and words[0] in SHORTHANDS:
        return
    if words[-1] == "UTC" or re.fullmatch(r"[A-Z][A-Za-z_]+/[A-Za-z_/]+", words[-1]):
        words = words[:-1]
    if not words:
        raise ValueError("only a time zone")
    if words[0].lower().split(",")[0].split("..")[0] in WEEKDAY_NAMES:
        _check_weekdays(words.pop(0))
    if words and ("-" in words[0] or "~" in words[0]) and ":" not in words[0]:
        _check_date(words.pop(0))
    if words and ":" in words[0]:
        _check_time(words.pop(0))
    if words:
        raise ValueError(f"unexpected {' '.join(words)!r}")


def invalid_calendars(exprs: Iterable[str]) -> dict[str, str]:
    """Each invalid expression of EXPRS with what is wrong with it."""
    bad: dict[str, str] = {}
    for expr in exprs:
        try:
            check_calendar(expr)
        except ValueError as exc:
            bad[expr] = str(exc)
    return bad
