"""The agent as shipped: one zipapp built from files/agent/ at render time.

Same sources, same bytes (built in two processes, and from a copy whose files have other times
and modes); the base manifest's token moves with the agent's sources and nothing else; the bytes
travel base64 in the manifest and come out whole through the agent's own decoding; the
first-apply bootstrap (`_BOOT`) and a plain `python3 FILE` both run it.
"""

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from components.config import load_file
from components.render import agent as agent_build
from components.render.agent import AGENT_PATH, AGENT_SOURCE, agent_sources, agent_zipapp
from components.render.base import base_manifest
from components.shipping import _BOOT, token
from outpost_agent.manifest import file_bytes, load_manifest
from tests.conftest import ROOT

BUILD = ("import sys; sys.path.insert(0, {root!r}); from components.render.agent import agent_zipapp; "
         "sys.stdout.buffer.write(agent_zipapp())")


def built_in_a_fresh_process():
    return subprocess.run([sys.executable, "-c", BUILD.format(root=str(ROOT))], capture_output=True,
                          check=True).stdout


@pytest.fixture
def copy_of_sources(tmp_path):
    """The agent's sources copied with other times and modes, and a cache beside them."""
    copy = tmp_path / "agent"
    shutil.copytree(AGENT_SOURCE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    for path in copy.rglob("*.py"):
        os.utime(path, (1_900_000_000, 1_900_000_000))
        path.chmod(0o600)
    (copy / "outpost_agent" / "__pycache__").mkdir()
    (copy / "outpost_agent" / "__pycache__" / "cli.cpython-313.pyc").write_bytes(b"\x00cache")
    return copy


def base_token(stack, monkeypatch, source):
    monkeypatch.setattr(agent_build, "AGENT_SOURCE", source)
    manifest = base_manifest(stack, "vm")
    return token(manifest.encode()), json.loads(manifest.encode())


@pytest.fixture(scope="module")
def stack():
    return load_file(ROOT / "Pulumi.local.yaml")


def test_two_builds_are_byte_identical():
    first, second = built_in_a_fresh_process(), built_in_a_fresh_process()
    assert first == second == agent_zipapp()
    assert first.startswith(b"#!/usr/bin/env python3\n")


def test_the_archive_holds_the_sources_alone_sorted_with_fixed_dates_and_modes():
    with zipfile.ZipFile(io.BytesIO(agent_zipapp())) as archive:
        infos = archive.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names) == [name for name, _ in agent_sources()]
        assert "__main__.py" in names and "outpost_agent/cli.py" in names
        assert not any("__pycache__" in n or not n.endswith(".py") for n in names)
        assert {(i.date_time, i.external_attr >> 16, i.compress_type) for i in infos} == \
            {((1980, 1, 1, 0, 0, 0), 0o100644, zipfile.ZIP_STORED)}
        for name, data in agent_sources():
            assert archive.read(name) == data


def test_times_modes_and_caches_of_the_sources_change_nothing(copy_of_sources):
    assert agent_zipapp(copy_of_sources) == agent_zipapp()


def test_the_base_token_changes_with_the_agents_sources_and_only_with_them(stack, monkeypatch, copy_of_sources):
    shipped, doc = base_token(stack, monkeypatch, AGENT_SOURCE)
    assert base_token(stack, monkeypatch, copy_of_sources)[0] == shipped

    module = copy_of_sources / "outpost_agent" / "units.py"
    module.write_text(module.read_text() + "\n# one more line\n")
    changed, changed_doc = base_token(stack, monkeypatch, copy_of_sources)
    assert changed != shipped
    # ... and the one difference between the two manifests is the agent's own file
    agent_entry = [f for f in doc["files"] if f["path"] == AGENT_PATH]
    assert [f for f in doc["files"] if f["path"] != AGENT_PATH] == \
        [f for f in changed_doc["files"] if f["path"] != AGENT_PATH]
    assert {k: v for k, v in doc.items() if k != "files"} == {k: v for k, v in changed_doc.items() if k != "files"}
    assert agent_entry != [f for f in changed_doc["files"] if f["path"] == AGENT_PATH]


def test_the_manifest_carries_the_zipapp_as_base64_and_the_agent_decodes_it_whole(stack):
    text = base_manifest(stack, "vm").encode()
    entry = next(f for f in load_manifest(text, "base")["files"] if f["path"] == AGENT_PATH)
    assert entry["b64"] is True and entry["mode"] == "0755"
    assert file_bytes(entry) == agent_zipapp()


def test_python3_runs_the_zipapp_under_its_py_name(tmp_path):
    path = tmp_path / "outpost-apply.py"
    path.write_bytes(agent_zipapp())
    ran = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2 and ran.stderr.startswith("usage: outpost-apply apply NAME TOKEN")


def test_the_first_apply_bootstrap_unpacks_and_runs_the_agent_from_the_manifest(stack):
    """_BOOT, as `create` of the base Command runs it on a new host (here with no subcommand, so
    the agent it unpacked prints its usage and touches nothing)."""
    ran = subprocess.run([sys.executable, "-c", _BOOT], input=base_manifest(stack, "vm").encode(),
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 2 and ran.stderr.startswith("usage: outpost-apply apply NAME TOKEN")
