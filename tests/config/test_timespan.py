"""The time span parser agrees with systemd's own (`systemd-analyze timespan`): on a corpus, and
on strings hypothesis builds from numbers, units, spaces and junk. A duration in the stack is
accepted exactly when systemd accepts it (and, for health checks, when the proxies can count it)."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.config.timespan import UNITS, USEC_INFINITY, parse_timespan

CORPUS = ["2s", "0s", "0", "5", "1.5s", ".5s", "5.", "1h30min", "1h 30min", " 2s", "2s ", "2 s", "5mins",
          "5minutes", "1M", "1y", "1us", "1\u00b5s", "1\u03bcs", "1ns", "infinity", "", "-1s", "1e3s", "1S",
          "1H", "2s,3s", "3 sec 4 ms", "1hr", "01s", "1.s", "1..5s", "+1s", "1.5.s", "1 1s", "1week", "1 h",
          "\uff11s", "1m", "1min1s", "1s1", "infinity ", "infinityx", "1.5 .5", "12.34s.56", "+.5s",
          "99999999999999999999", "1.123456789s", "0.5ms", "s", "1 s 2", "2.5", "584542y", "584541y"]


def systemd(text: str) -> int | None:
    """What `systemd-analyze timespan` makes of TEXT in µs, or None when it refuses it."""
    proc = subprocess.run(["systemd-analyze", "timespan", "--", text], capture_output=True, text=True,
                          env={"LC_ALL": "C.UTF-8", "SYSTEMD_COLORS": "0", "PATH": "/usr/bin:/bin"})
    if proc.returncode != 0:
        return None
    for line in proc.stdout.splitlines():
        if "\u03bcs:" in line:
            return int(line.split(":", 1)[1])
    raise AssertionError(proc.stdout)


def ours(text: str) -> int | None:
    try:
        return parse_timespan(text)
    except ValueError:
        return None


@pytest.mark.parametrize("text", CORPUS)
def test_corpus_agrees_with_systemd(text):
    assert ours(text) == systemd(text), text


def test_infinity_and_units():
    assert parse_timespan("infinity") == USEC_INFINITY
    assert parse_timespan("1min 30s") == 90_000_000 and parse_timespan("5") == 5_000_000
    assert len({suffix for suffix, _ in UNITS}) == len(UNITS)


PIECES = st.sampled_from([s for s, _ in UNITS] + ["", " ", ".", "..", "-", "+", "x", "mins", "S", "\t"])
NUMBERS = st.one_of(st.integers(0, 10**6).map(str), st.just(""), st.decimals(0, 1000, places=3).map(str))
SPANS = st.lists(st.tuples(NUMBERS, PIECES, st.sampled_from(["", " "])), min_size=1, max_size=3).map(
    lambda parts: "".join(n + u + s for n, u, s in parts))


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(SPANS)
def test_generated_spans_agree_with_systemd(text):
    assert ours(text) == systemd(text), text
