"""`make diff` (components/diff.py): the plan diff a pull request shows.

Two layers:
- pure: `compare` / `to_text` / `to_markdown` over hand-made snapshots shaped like a services
  manifest (quadlet, env file with TAG=, replicas as units, a rolling restart group);
- end to end: a throwaway git repository holding a copy of the project and
  tests/diff/fixture_stack.yaml committed as revision 1; revision 2 (left in the working tree)
  adds a replica, changes a container tag, re-encrypts a secret and removes a service, and
  `python -m components diff` runs there with this interpreter.

Assertions about service files/units need the services renderer (components/render/services/);
should it render nothing for the fixture, they skip with that reason instead of failing obscurely.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from components import diff as D

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).with_name("fixture_stack.yaml")
STACK = "difftest"
OLD_TAG, NEW_TAG = "2025-05-14", "2025-06-01"
OLD_CIPHER, NEW_CIPHER = "v1:CIPHERTEXT-SHOP-TOKEN-REV1", "v1:CIPHERTEXT-SHOP-TOKEN-REV2"
QUADLETS = "/home/shop/.config/containers/systemd/"


# --------------------------------------------------------------------------- pure layer


def meta(content: bytes, mode: str = "0644", owner: str = "root") -> dict:
    return {"sha256": hashlib.sha256(content).hexdigest(), "mode": mode, "owner": owner, "group": owner}


def snapshot(manifests: dict[str, dict[str, bytes]], units: dict[str, list[str]],
             resources: list[dict], secure: dict[str, str]) -> D.Snapshot:
    """One host `web1`; each manifest's files; svc-* manifests restart rolling on any file."""
    plan = {"hosts": {"web1": {}}, "resources": resources}
    for name, files in manifests.items():
        service = name.removeprefix("svc-")
        plan["hosts"]["web1"][name] = {
            "files": {p: meta(c) for p, c in files.items()},
            "units": [{"unit": u, "scope": f"user:{service}"} for u in units.get(name, [])],
            "restart": [{"group": service, "strategy": "rolling", "when": sorted(files)}] if name != "base" else [],
            "restarts": {service: "rolling"} if name != "base" else {},
        }
    files = {"web1": {p: c for m in manifests.values() for p, c in m.items()}}
    return D.Snapshot(plan, files, secure)


def command(name: str, digest: str) -> dict:
    return {"type": "command:remote:Command", "name": name, "parent": "web1", "protect": False,
            "depends_on": ["web1-base"], "inputs": {"stdin": {"manifest": name, "sha256": digest}}}


ENV = QUADLETS + "shop.env"
UNIT = QUADLETS + "shop@.container"


@pytest.fixture(scope="module")
def synthetic() -> D.Diff:
    base = snapshot(
        {"base": {"/etc/motd": b"hi\n"},
         "svc-shop": {UNIT: b"[Container]\nImage=ghcr.io/example/shop:${TAG}\n", ENV: f"TAG={OLD_TAG}\n".encode()},
         "svc-reports": {"/etc/systemd/system/reports.service": b"[Service]\nExecStart=/bin/true\n"}},
        {"svc-shop": ["shop@8000.service", "shop@8001.service"], "svc-reports": ["reports.service"]},
        [command("web1-base", "a"), command("web1-svc-shop", "b"), command("web1-svc-reports", "c")],
        {"shop_token": OLD_CIPHER, "deploy_key": "v1:same"})
    head = snapshot(
        {"base": {"/etc/motd": b"hi\n"},
         "svc-shop": {UNIT: b"[Container]\nImage=ghcr.io/example/shop:${TAG}\n", ENV: f"TAG={NEW_TAG}\n".encode()}},
        {"svc-shop": ["shop@8000.service", "shop@8001.service", "shop@8002.service"]},
        [command("web1-base", "a"), command("web1-svc-shop", "B")],
        {"shop_token": NEW_CIPHER, "deploy_key": "v1:same"})
    return D.compare(base, head)


def test_compare_lists_exactly_what_changed(synthetic):
    assert [(f.status, f.path) for f in synthetic.files] == [
        ("removed", "/etc/systemd/system/reports.service"), ("changed", ENV)]
    assert [(r.status, r.name, r.fields) for r in synthetic.resources] == [
        ("removed", "web1-svc-reports", ()), ("changed", "web1-svc-shop", ("inputs.stdin",))]
    assert [(u.unit, u.status) for u in synthetic.units] == [
        ("reports.service", "removed"), ("shop@8002.service", "added")]
    assert [(r.service, r.strategy, r.because) for r in synthetic.restarts] == [
        ("svc-reports", "stop", ()), ("shop", "rolling", (ENV,))]
    assert synthetic.secrets == (("shop_token", "changed"),)


def test_file_diff_is_unified_with_host_headers(synthetic):
    env = next(f for f in synthetic.files if f.path == ENV)
    assert env.diff[:2] == (f"--- a/web1{ENV}", f"+++ b/web1{ENV}")
    assert f"-TAG={OLD_TAG}" in env.diff and f"+TAG={NEW_TAG}" in env.diff


def test_text_and_markdown_say_it_without_ciphertexts(synthetic):
    text = D.to_text(synthetic, STACK, "origin/main")
    md = D.to_markdown(synthetic, STACK, "origin/main")
    for out in (text, md):
        assert "shop restarts — rolling" in out
        assert "secret `shop_token` changed" in out or "secret shop_token changed" in out
        assert "shop@8002.service" in out and "deploy_key" not in out
        assert OLD_CIPHER not in out and NEW_CIPHER not in out
    assert md.startswith(f"### outpost diff — stack `{STACK}`")
    assert "<details><summary>web1 — 2 files changed</summary>" in md and "```diff\n" in md


def test_mode_change_and_binary_files_are_described():
    lines = D.file_diff("h", "/bin/x", b"\x00\xff", b"\x00\xfe", meta(b"\x00\xff", "0755"), meta(b"\x00\xfe", "0700"))
    assert "# mode 0755 → 0700" in lines and any(line.startswith("# binary file:") for line in lines)


def test_secure_values_keyed_by_secret_name():
    doc = {"config": {"hcloud:token": {"secure": "v1:T"}, "outpost:secrets": {"a": {"secure": "v1:A"}},
                      "outpost:domain": "example.org"}}
    assert D.secure_values(yaml.safe_dump(doc)) == {"hcloud:token": "v1:T", "a": "v1:A"}


def assert_clean_cut(md: str, max_chars: int) -> None:
    assert len(md) <= max_chars
    assert md.count("```") % 2 == 0
    assert md.count("<details>") == md.count("</details>")
    note = md.splitlines()[-1]
    assert re.fullmatch(r"> \*\*Truncated:\*\* \d+ of \d+ characters left out\. Run `make diff STACK=\S+ BASE=\S+` "
                        r"to see the whole diff\.", note), note


@pytest.mark.parametrize("max_chars", [300, 700, 1200])
def test_markdown_truncates_cleanly(max_chars):
    big = D.Diff((), tuple(D.FileChange("web1", f"/etc/f{i}", "added", "base",
                                        D.file_diff("web1", f"/etc/f{i}", None, b"line\n" * 40))
                           for i in range(5)), (), (), ())
    full = D.to_markdown(big, STACK, "origin/main")
    assert "Truncated" not in full
    md = D.to_markdown(big, STACK, "origin/main", max_chars)
    assert_clean_cut(md, max_chars)
    left_out = int(re.search(r"\*\* (\d+) of (\d+)", md).group(1))
    assert left_out == len(full) - len(md.rsplit("> **Truncated", 1)[0])


def test_no_changes_says_so():
    same = snapshot({"base": {"/etc/motd": b"hi\n"}}, {}, [command("web1-base", "a")], {"x": "v1:X"})
    diff = D.compare(same, same)
    assert diff.empty and "No changes" in D.to_markdown(diff, STACK, "main")


# --------------------------------------------------------------------------- end to end, real git


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def revision_2(doc: dict) -> dict:
    """Add a replica to shop, change its tag, re-encrypt shop_token, remove reports."""
    config = doc["config"]
    shop = config["outpost:services"]["shop"]
    shop["replicas"].append(8002)
    shop["container"]["tag"] = NEW_TAG
    config["outpost:secrets"]["shop_token"]["secure"] = NEW_CIPHER
    del config["outpost:services"]["reports"]
    return doc


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("outpost-repo")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("components", "files"):
        shutil.copytree(ROOT / name, repo / name, ignore=ignore)
    for name in ("__main__.py", "Pulumi.yaml"):
        shutil.copy(ROOT / name, repo / name)
    stack_file = repo / f"Pulumi.{STACK}.yaml"
    shutil.copy(FIXTURE, stack_file)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "revision 1")
    stack_file.write_text(yaml.safe_dump(revision_2(yaml.safe_load(FIXTURE.read_text())), sort_keys=False))
    shutil.copy(FIXTURE, repo / "Pulumi.fresh.yaml")        # a stack that doesn't exist at the base
    return repo


def run_diff(repo: Path, *args: str, stack: str = STACK) -> str:
    result = subprocess.run([sys.executable, "-m", "components", "diff", "--stack", stack, "--base", "HEAD", *args],
                            cwd=repo, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def outputs(repo, change) -> dict[str, str]:
    """The CLI's text output, and the markdown of the same change (the CLI's markdown path is
    exercised by test_cli_markdown_truncated_cleanly)."""
    status = git(repo, "status", "--porcelain")
    out = {"text": run_diff(repo), "markdown": D.to_markdown(change, STACK, "HEAD")}
    assert git(repo, "status", "--porcelain") == status, "make diff touched the working tree"
    assert len(git(repo, "worktree", "list").splitlines()) == 1
    return out


@pytest.fixture(scope="module")
def base(repo) -> D.Snapshot:
    return D.render_ref("HEAD", STACK, repo)


@pytest.fixture(scope="module")
def head(repo) -> D.Snapshot:
    return D.render_worktree(STACK, repo)


@pytest.fixture(scope="module")
def change(base, head) -> D.Diff:
    return D.compare(base, head)


def changed_manifests(diff: D.Diff) -> set[str]:
    """The manifests the change touches in hosts' bundles, by name ('svc-shop changed' → svc-shop)."""
    return {m.split()[0] for r in diff.resources for m in r.manifests}


def services_render(diff: D.Diff) -> None:
    assert "svc-shop" in changed_manifests(diff) and any(
        f.path.startswith(QUADLETS) for f in diff.files), "the services renderer must render the fixture's services"


def test_secret_change_is_named_never_shown(outputs, change):
    assert change.secrets == (("shop_token", "changed"),)
    assert "secret shop_token changed" in outputs["text"]
    assert "secret `shop_token` changed" in outputs["markdown"]
    for out in outputs.values():
        assert "CIPHERTEXT" not in out and "<mock private key" not in out


def test_base_setup_is_untouched(change):
    assert not [f for f in change.files if f.manifest == "base"]
    assert "base" not in changed_manifests(change)
    assert not [r for r in change.resources if r.name.endswith("-bootstrap")]


def test_only_the_changed_services_appear(change):
    services_render(change)
    assert {f.manifest for f in change.files} <= {"svc-shop", "svc-reports"}
    assert changed_manifests(change) <= {"svc-shop", "svc-reports"}
    assert all(r.name.endswith("-bundle") for r in change.resources), change.resources


def test_new_replica_port_shows(outputs, change):
    services_render(change)
    added = [line for f in change.files for line in f.diff if line.startswith("+")]
    assert any("8002" in line for line in added) or any("8002" in u.unit and u.status == "added" for u in change.units)
    assert "8002" in outputs["text"]


def test_tag_line_diff(change, outputs):
    services_render(change)
    lines = [line for f in change.files for line in f.diff]
    assert f"-TAG={OLD_TAG}" in lines and f"+TAG={NEW_TAG}" in lines
    assert f"+TAG={NEW_TAG}" in outputs["markdown"]


def test_shop_restarts_rolling_and_reports_stops(change, outputs):
    services_render(change)
    restarts = {(r.service.removeprefix("svc-"), r.strategy) for r in change.restarts}
    assert ("shop", "rolling") in restarts and ("reports", "stop") in restarts
    assert re.search(r"shop restarts — rolling", outputs["text"])


def test_removed_service_files_and_resources_removed(base, change):
    services_render(change)
    reports_files = {p for p in base.plan["hosts"]["web1"].get("svc-reports", {}).get("files", {})}
    assert reports_files and reports_files == {f.path for f in change.files if f.status == "removed"}
    assert [(r.name, r.manifests) for r in change.resources] == [("web1-bundle", ("svc-reports removed", "svc-shop changed"))]
    assert not [r for r in change.resources if r.status != "changed"]


def test_headers_name_host_and_path(change, outputs):
    for f in change.files:
        assert f"--- a/web1{f.path}\n+++ b/web1{f.path}\n" in outputs["text"]


def test_stack_missing_at_base_is_all_added(repo):
    text = run_diff(repo, stack="fresh")
    assert "secret shop_token added" in text and "CIPHERTEXT" not in text
    assert "+++ b/web1/home/admin/.ssh/authorized_keys" in text
    assert re.search(r"Resources: [1-9]\d* added, 0 changed, 0 removed", text)


def test_cli_markdown_truncated_cleanly(repo):
    md = run_diff(repo, "--format", "markdown", "--max-chars", "1500", stack="fresh")
    assert_clean_cut(md, 1500)
    assert "make diff STACK=fresh BASE=HEAD" in md


def test_rendered_trees_hold_no_secret_values(base, head):
    """The rendered trees themselves hold placeholders only (what the diff reads)."""
    for snap in (base, head):
        blob = json.dumps(snap.plan) + "".join(c.decode("utf-8", "replace")
                                               for h in snap.files.values() for c in h.values())
        assert "CIPHERTEXT" not in blob


def test_a_removed_service_says_whether_its_data_is_deleted():
    def svc(user, **extra):
        return {"files": {}, "users": [{"name": user, "home": f"/home/{user}", **extra}]}
    base = {"hosts": {"web1": {"svc-a": svc("a"), "svc-b": svc("b", purge=True), "svc-c": svc("c"),
                               "svc-d": svc("shared")}}}
    head = {"hosts": {"web1": {"svc-d2": svc("shared")}}}
    lines = {r.service: D._restart_line(r) for r in D.compare_restarts(base, head, ())}
    assert lines["svc-a"].endswith("its user stays, locked, with its data: a (/home/a)")
    assert lines["svc-b"].endswith("; DATA WILL BE DELETED (purge): user b and its home /home/b")
    assert lines["svc-d"] == "web1: svc-d is removed — its units stop, its files are deleted"


def test_says_which_paths_are_restored_automatically():
    plan = {"hosts": {"web1": {"backup-a": {"restores": [{"backup": "a", "restore": "auto", "tool": "restic",
                                                         "location": "outpost-backups/wsgi-state",
                                                         "paths": ["/var/lib/wsgi/files"]}]},
                               "backup-b": {"restores": [{"backup": "b", "restore": "manual", "tool": "litestream",
                                                         "location": "bk/b", "paths": ["/srv/a.db", "/srv/b.db"]}]},
                               "svc-x": {}}}}
    lines = D.restore_lines(plan)
    assert lines == ("web1: restores automatically when missing or empty: /var/lib/wsgi/files "
                     "(restic outpost-backups/wsgi-state)",
                     "web1: manual restore only: /srv/a.db, /srv/b.db (litestream bk/b)")
    diff = D.Diff(resources=(D.ResourceChange("added", "t", "n"),), files=(), units=(), restarts=(), secrets=(),
                  restores=lines)
    assert "Backups:\n  " + lines[0] in D.to_text(diff, "s", "main")
    assert "- " + lines[1] in D.to_markdown(diff, "s", "main")
    assert D.compare(D.Snapshot(), D.Snapshot(plan=plan)).restores == lines
