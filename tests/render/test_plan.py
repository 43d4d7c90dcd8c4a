"""`python -m components render`: every stack renders, byte-identical across runs, secrets masked."""

import filecmp
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, STACKS


def render(stack: str, out) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "components", "render", "--stack", stack, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, check=True)


def tree(path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("stack", STACKS)
def test_render_is_deterministic_and_complete(stack, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    render(stack, first)
    render(stack, second)
    assert tree(first) == tree(second)
    plan = json.loads((first / "plan.json").read_text())
    assert plan["stack"] == stack
    for host, manifests in plan["hosts"].items():
        assert "base" in manifests
        for manifest in manifests.values():
            for path in manifest["files"]:
                assert (first / "hosts" / host / path.lstrip("/")).is_file(), (host, path)
        assert (first / "hosts" / host / "usr/local/lib/outpost/outpost-apply.py").is_file()
        assert (first / "hosts" / host / "etc/ssh/sshd_config.d/10-outpost.conf").read_text().count("PermitRootLogin no") == 1
    types = {r["type"] for r in plan["resources"]}
    assert "command:remote:Command" in types and "outpost:stack:Outpost" in types


def test_rerender_removes_stale_files(tmp_path):
    render("local", tmp_path)
    stale = tmp_path / "hosts" / "vm" / "etc" / "stale.conf"
    stale.write_text("left over")
    render("local", tmp_path)
    assert not stale.exists()


def test_plan_masks_every_secret(tmp_path):
    render("prod", tmp_path)
    text = "\n".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert "mock private key" not in text          # generated keys never reach the plan
    plan = json.loads((tmp_path / "plan.json").read_text())
    for res in plan["resources"]:
        if res["type"] == "command:remote:Command":
            assert res["inputs"]["connection"]["privateKey"] == "<secret>"
        if res["type"] == "hcloud:index/server:Server":
            assert res["inputs"]["userData"] == "<secret>"
