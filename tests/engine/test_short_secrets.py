"""Short secrets: the program warns about every secret value shorter than
components.secrets.SHORT_SECRET characters, naming the secret and never showing the value (the
program under Pulumi's mocks, a fraction of a second; the real CLI's display of the warning is
checked in test_previews.py)."""

from __future__ import annotations

import pulumi
import pytest

from components.program import run_program, stack_config
from components.secrets import SHORT_SECRET, short_secrets


def test_the_threshold_is_inclusive_at_sixteen():
    values = {"a": "x" * (SHORT_SECRET - 1), "b": "x" * SHORT_SECRET, "c": "", "d": None, "e": "tok"}
    assert SHORT_SECRET == 16
    assert short_secrets(values) == ["a", "c", "e"]


def test_the_program_names_each_short_secret_and_never_its_value(monkeypatch):
    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: warned.append(message))
    short = {"s3_secret": "Zq7", "gcore_token": "Wk4" * 5}                # 3 and 15 characters
    run_program("test", stack_config("test", secrets={**short, "restic_password": "r" * SHORT_SECRET}))
    about = sorted(m.split(" ", 1)[0] for m in warned if "is shorter than" in m)
    assert about == ["outpost:secrets.gcore_token", "outpost:secrets.s3_secret"]
    for message in warned:
        assert not any(value in message for value in short.values())


@pytest.mark.parametrize("stack", ["test", "prod", "local"])
def test_the_repositorys_stacks_warn_about_nothing(stack, monkeypatch):
    """The placeholders the mocks give secrets (`<secret:NAME>`) are long enough: make plan stays quiet."""
    warned: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: warned.append(message))
    run_program(stack, stack_config(stack))
    assert not [m for m in warned if "is shorter than" in m]
