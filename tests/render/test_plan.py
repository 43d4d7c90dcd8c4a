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
    data = b"\n".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())   # the agent is a zip
    assert b"mock private key" not in data          # generated keys never reach the plan
    plan = json.loads((tmp_path / "plan.json").read_text())
    for res in plan["resources"]:
        if res["type"] == "command:remote:Command":
            assert res["inputs"]["connection"]["privateKey"] == "<secret>"
        if res["type"] == "hcloud:index/server:Server":
            assert res["inputs"]["userData"] == "<secret>"


@pytest.mark.parametrize("stack", STACKS)
def test_plan_files_have_the_mode_and_owner_the_host_gives_them(stack, tmp_path):
    """A reviewer sees 0600 secrets and 0755 scripts on disk; plan.json lists mode and owner too.
    As root the owner is set wherever the account exists on this machine (root, in CI)."""
    import grp
    import os
    import pwd
    import stat
    render(stack, tmp_path)
    plan = json.loads((tmp_path / "plan.json").read_text())
    modes = set()
    for host, manifests in plan["hosts"].items():
        for manifest in manifests.values():
            for path, f in manifest["files"].items():
                st = (tmp_path / "hosts" / host / path.lstrip("/")).stat()
                assert f"{stat.S_IMODE(st.st_mode):04o}" == f["mode"], (host, path)
                modes.add(f["mode"])
                assert f["owner"] and f["group"]
                if os.geteuid() == 0 and f["owner"] == "root":
                    assert (pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name) == ("root", f["group"])
    assert {"0600", "0644", "0755"} <= modes, modes   # secrets, configs and scripts all appear
