"""systemd time spans (systemd.time(7), "Parsing Time Spans"): "2s", "1min 30s", "500ms", "1.5h", "5".

Pure Python, so `make check` works where systemd is missing. `parse_timespan` follows systemd's
own parser (src/basic/time-util.c, `parse_time`) step by step: the units are tried in systemd's
order, so "5mins" fails exactly as it does there; a bare number is seconds. tests/config holds
it against `systemd-analyze timespan`, on a corpus and on generated strings.
"""

from __future__ import annotations

import re

USEC_INFINITY = 2**64 - 1
SEC = 1_000_000
MINUTE, HOUR, DAY, WEEK = 60 * SEC, 3600 * SEC, 86400 * SEC, 604800 * SEC
MONTH, YEAR = 2629800 * SEC, 31557600 * SEC
# systemd's table, in its order: the first suffix the text starts with wins.
UNITS = [("seconds", SEC), ("second", SEC), ("sec", SEC), ("s", SEC),
         ("minutes", MINUTE), ("minute", MINUTE), ("min", MINUTE),
         ("months", MONTH), ("month", MONTH), ("M", MONTH),
         ("msec", 1000), ("ms", 1000), ("m", MINUTE),
         ("hours", HOUR), ("hour", HOUR), ("hr", HOUR), ("h", HOUR),
         ("days", DAY), ("day", DAY), ("d", DAY),
         ("weeks", WEEK), ("week", WEEK), ("w", WEEK),
         ("years", YEAR), ("year", YEAR), ("y", YEAR),
         ("usec", 1), ("us", 1), ("\u03bcs", 1), ("\u00b5s", 1)]
WHITESPACE = " \t\n\r"
# strtoll(3) in base 10: optional sign, ASCII digits.
INTEGER_RE = re.compile(r"[+-]?[0-9]+")
LLONG_MAX = 2**63 - 1


def parse_timespan(text: str) -> int:
    """TEXT in microseconds (USEC_INFINITY for "infinity"); ValueError when systemd refuses it."""
    p = text.lstrip(WHITESPACE)
    if p.startswith("infinity"):
        if p[len("infinity"):].strip(WHITESPACE):
            raise ValueError("nothing may follow 'infinity'")
        return USEC_INFINITY
    usec, something = 0, False
    while True:
        p = p.lstrip(WHITESPACE)
        if not p:
            if not something:
                raise ValueError("no time span given")
            return usec
        if p[0] == "-":
            raise ValueError("a time span cannot be negative")
        m = INTEGER_RE.match(p)
        if m is None and not p.startswith("."):
            raise ValueError(f"{p!r} does not start with a number")
        whole = int(m.group()) if m else 0
        if whole > LLONG_MAX:
            raise ValueError("number too large")
        if whole < 0:
            raise ValueError("a time span cannot be negative")
        rest = p[m.end():] if m else p
        fraction = None
        if rest.startswith("."):
            digits = re.match(r"[0-9]*", rest[1:]).group()
            fraction, rest = digits, rest[1 + len(digits):]
        stripped = rest.lstrip(WHITESPACE)
        multiplier, after = SEC, stripped
        unit = next(((s, v) for s, v in UNITS if stripped.startswith(s)), None)
        if unit is not None:
            multiplier, after = unit[1], stripped[len(unit[0]):]
        elif rest and len(stripped) == len(rest):
            raise ValueError(f"unexpected {rest!r}")  # '12.34.56', '5x'
        p = after
        if whole >= USEC_INFINITY // multiplier:
            raise ValueError("time span too large")
        k = whole * multiplier
        if k >= USEC_INFINITY - usec:
            raise ValueError("time span too large")
        usec += k
        something = True
        if fraction is not None:
            if not fraction:
                raise ValueError("a '.' must be followed by digits")
            m_unit = multiplier // 10
            for digit in fraction:
                usec += int(digit) * m_unit
                m_unit //= 10


def check_timespan(text: str) -> int:
    """parse_timespan for a value that goes into a unit file line: no control characters either."""
    if re.search(r"[\x00-\x1f\x7f]", text):
        raise ValueError(f"{text!r} must be a single line without control characters")
    try:
        return parse_timespan(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a systemd time span like 2s, 500ms, 30min or 1h 30min ({exc})") from None
