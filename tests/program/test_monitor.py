"""The harness's monitor answers every registration exactly as the SDK's `MockMonitor` would, and
records inputs and secret-ness as the straightforward way (a JSON text search) finds them."""

import gc
import json

import pulumi
import pytest
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime.sync_await import _sync_await

import components.program as program
from components.program import SECRET_SIG, _serialize_outputs, _unwrap_secrets, run_program, stack_config
from tests.conftest import STACKS

SECRET = {SECRET_SIG: "1b47061264138c4ac30d75fd1eb44270", "value": "hunter2"}


def _sdk(state: dict) -> object:
    return _sync_await(rpc.serialize_properties(state, {}))


@pytest.mark.parametrize("state", [
    {},
    {"stdout": "", "stderr": "", "create": "echo hi", "port": 22, "ratio": 0.5, "on": True, "off": False},
    {"gone": None, "kept": "x"},
    {"nested": {"a": [1, "b", None, {"c": False}], "empty": {}, "null": None}, "list": []},
    {"stdin": SECRET, "connection": {"host": "h", "privateKey": SECRET}},
    {"big": 2 ** 60, "negative": -3, "unicode": "ü\n\t\"'"},
    {"asset": pulumi.StringAsset("text"), "plain": "x"},          # not plain: the SDK's path
])
def test_outputs_are_encoded_as_the_sdk_encodes_them(state):
    assert _serialize_outputs(state) == _sdk(state)


class _CheckingMonitor(program.RecordingMonitor):
    """Answers with the harness's fast path and checks it against `MockMonitor` and the record
    against the former way of computing it, for every registration."""

    checked: list[str] = []            # appended to from the SDK's executor threads

    def RegisterResource(self, request):
        ours = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return ours
        sdk = pulumi_mocks.MockMonitor(self.mocks).RegisterResource(request)
        assert ours == sdk, request.name
        record = next(r for r in self.registered if r.urn == ours.urn)
        raw = json_format.MessageToDict(request.object)
        assert record.secret_inputs == {k for k, v in raw.items() if SECRET_SIG in json.dumps(v)}, request.name
        assert record.inputs == _unwrap_secrets(rpc.deserialize_properties(request.object)), request.name
        assert record.outputs == dict(self.resources[record.urn].state)
        self.checked.append(record.urn)
        return ours


@pytest.mark.parametrize("stack", STACKS)
def test_each_registration_is_answered_and_recorded_as_before(stack, monkeypatch):
    monkeypatch.setattr(program, "RecordingMonitor", _CheckingMonitor)
    monkeypatch.setattr(_CheckingMonitor, "checked", [])
    resources = run_program(stack, stack_config(stack))
    assert sorted(_CheckingMonitor.checked) == sorted(r.urn for r in resources) != []
    assert any(r.secret_inputs for r in resources)


def test_the_collector_is_paused_only_for_the_run():
    assert gc.isenabled()
    seen = []
    with program._no_cycle_collection():
        seen.append(gc.isenabled())
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        with program._no_cycle_collection():
            pass
        assert not gc.isenabled()          # a caller's own choice is left alone
    finally:
        gc.enable()
