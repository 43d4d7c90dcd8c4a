"""The GitHub Actions workflows (.github/workflows/*.yml) are valid and locked down.

- valid against the GitHub workflow schema, with check-jsonschema's vendored copy (no network);
- every workflow declares `permissions:` (nothing inherits the repository's default token scope);
- every `uses:` is pinned: a 40-hex commit SHA or an exact release tag vX.Y.Z, never a branch or
  a moving major tag like `v4`;
- deploy and destroy of the test stack share a concurrency group that never cancels a running job.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@([0-9a-f]{40}|v\d+\.\d+\.\d+)$")


def load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=yaml.BaseLoader)   # BaseLoader: `on:` stays a string key


def uses(node) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "uses"] + [u for v in node.values() for u in uses(v)]
    if isinstance(node, list):
        return [u for v in node for u in uses(v)]
    return []


def test_the_three_workflows_exist():
    assert {p.name for p in WORKFLOWS} >= {"pr.yml", "deploy-test.yml", "destroy-test.yml"}


def test_schema_valid():
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run([str(checker), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_permissions_declared(path):
    doc = load(path)
    assert "permissions" in doc, f"{path.name}: no top-level permissions:"
    assert doc["permissions"] in ({}, "{}") or "write" not in str(doc["permissions"]), \
        f"{path.name}: write scopes belong on the job that needs them"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_pinned(path):
    refs = uses(load(path))
    assert refs, f"{path.name}: uses no action"
    unpinned = [r for r in refs if not r.startswith("./") and not PINNED.match(r)]
    assert not unpinned, f"{path.name}: not pinned to a SHA or exact vX.Y.Z: {unpinned}"


def test_test_stack_operations_never_overlap():
    groups = {p.name: load(p).get("concurrency", {}) for p in WORKFLOWS}
    for name in ("deploy-test.yml", "destroy-test.yml"):
        assert groups[name] == {"group": "pulumi-test", "cancel-in-progress": "false"}, name


def test_pr_workflow_posts_one_updated_comment():
    text = (ROOT / ".github" / "workflows" / "pr.yml").read_text()
    assert "<!-- outpost-diff -->" in text and "updateComment" in text
    assert "fetch-depth: 0" in text and "make test-fast" in text
    for stack in ("test", "prod"):
        assert stack in text
    # the preview is `make preview STACK=test`, the command tests/engine/test_previews.py runs
    assert "run: make preview STACK=test" in text


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflows_run_the_pinned_cli(path):
    """Every pulumi/actions step asks for the CLI make engine builds (tools/engine/versions.env)."""
    from tools.engine.build import read_versions
    wanted = read_versions()["PULUMI_VERSION"]
    found = re.findall(r"pulumi-version:\s*([\d.]+)", path.read_text())
    assert all(v == wanted for v in found), f"{path.name}: pulumi-version {found}, versions.env {wanted}"


def test_the_preview_runs_in_a_protected_environment_and_only_it_gets_secrets():
    """The preview runs a pull request's code with the test stack's credentials: it runs in the
    `test-preview` environment (required reviewers are set on it in GitHub), and no other job of
    the PR workflow reads a secret."""
    jobs = load(ROOT / ".github" / "workflows" / "pr.yml")["jobs"]
    assert jobs["preview"]["environment"] == "test-preview"
    for name, job in jobs.items():
        if name != "preview":
            assert "secrets." not in yaml.safe_dump(job), name
