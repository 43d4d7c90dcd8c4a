"""tools/pulumi_cli.py without the CLI: the engine's event stream read into steps and a summary,
and secrets unwrapped from an exported state. (The real CLI runs through it in tests/e2e.)"""

from __future__ import annotations

import json

from tools.pulumi_cli import SECRET_SIG, read_events, unwrap_secrets

URN = "urn:pulumi:local::outpost::outpost:stack:Outpost$outpost:hosts:Host$command:remote:Command::"


def event(seq: int, at: int, **body) -> str:
    return json.dumps({"sequence": seq, "timestamp": at, **body})


def meta(name: str, op: str, typ: str = "command:remote:Command") -> dict:
    return {"metadata": {"op": op, "urn": URN + name, "type": typ}}


def test_events_become_steps_errors_and_a_summary():
    lines = [
        event(0, 100, preludeEvent={"config": {}}),
        event(1, 100, diagnosticEvent={"message": "registering resource\n", "severity": "debug"}),
        event(2, 100, resourcePreEvent=meta("vm-base", "create")),
        event(3, 112, resOutputsEvent=meta("vm-base", "create")),
        event(4, 112, resourcePreEvent=meta("vm-tls", "same")),
        event(5, 112, resOutputsEvent=meta("vm-tls", "same")),
        event(6, 113, resourcePreEvent=meta("vm-svc-hello", "update")),
        event(7, 130, diagnosticEvent={"urn": URN + "vm-svc-hello", "severity": "error",
                                       "message": "Process exited with status 1: hello@8000 answered 500\n"}),
        event(8, 131, summaryEvent={"resourceChanges": {"create": 1, "same": 1}, "durationSeconds": 31}),
        "Updating (local):",          # the CLI may interleave a plain line: not an event
    ]
    update = read_events(lines)
    assert [(s.name, s.op, s.seconds) for s in update.steps] == [("vm-base", "create", 12.0)]
    assert update.errors == ["vm-svc-hello: Process exited with status 1: hello@8000 answered 500"]
    assert update.changes == {"create": 1, "same": 1} and update.changed == 1 and update.seconds == 31


def test_exported_secrets_are_unwrapped_to_their_values():
    secret = {SECRET_SIG: "1b47061264138c4ac30d75fd1eb44270", "plaintext": json.dumps({"a": ["b"]})}
    assert unwrap_secrets({"outputs": {"stdout": secret, "n": 1}}) == {"outputs": {"stdout": {"a": ["b"]}, "n": 1}}
