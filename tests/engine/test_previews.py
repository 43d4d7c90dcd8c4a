"""`pulumi preview --diff` of the cloud stacks (Pulumi.test.yaml, Pulumi.prod.yaml), offline, with
the real CLI and the real hcloud, tls, random and acme providers, through `tools/preview.py`: the
entry point `make preview STACK=...` and the pull request workflow run.

Each stack is laid in its own state directory (file backend, passphrase file) from the
repository's file with a dummy 64-character Hetzner token (the provider refuses a shorter one even
in a preview) and fake secret values, and the hcloud provider's `endpoint` points at a stand-in
(fake_hcloud_api.py) for the one read the previews make: test's zone lookup
(`create_zone: false`). A third preview is prod with `tls: acme-dns`, so the acme provider checks
real certificate orders too.

Each preview takes 4-9 s on two shared cores (the test module about 60 s).
"""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from components.program import mock_secret, run_program
from tests.conftest import ROOT
from tests.engine.fake_hcloud_api import FakeHcloud
from tools.pulumi_cli import StackCli

TOKEN = "7" * 20 + "dummy-hcloud-token-for-offline-previews" + "7" * 5   # 64 characters, as the provider demands
URN = re.compile(r"\[urn=urn:pulumi:[^:]+::outpost::([^\]]+)::([^\]:]+)\]")
# prod, but with the certificates ordered by the program (pulumiverse-acme) through DNS-01.
ACME_DNS = "prod-acme-dns"


def repo_config(stack: str) -> dict:
    return copy.deepcopy(yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"])


def config_for(stack: str) -> dict:
    if stack != ACME_DNS:
        return repo_config(stack)
    config = repo_config("prod")
    config["outpost:proxy"]["tls"] = "acme-dns"
    config["outpost:dns"]["token"] = "dns_token"
    config["outpost:secrets"]["dns_token"] = {"secure": "v1:set-with-pulumi-config-set-secret"}
    return config


def fake_secrets(config: dict) -> dict[str, str]:
    """A value per secret name, each unlike anything else the preview prints; the deploy key a
    real OpenSSH private key."""
    values = {name: f"fake-{name}-{i:02d}-f3a9c1e07b5d" for i, name in enumerate(config["outpost:secrets"])}
    values[config["outpost:admin"]["private_key"]] = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()).decode()
    return values


class Preview:
    """One stack laid for the preview entry point, and what the last preview printed."""

    def __init__(self, stack: str, state: Path, endpoint: str):
        self.stack, self.state = stack, state
        self.config = config_for(stack)
        self.secrets = fake_secrets(self.config)
        self.cli = StackCli(stack, state)
        self.endpoint = endpoint
        self.lay(self.secrets)

    def lay(self, secrets: dict[str, str]) -> None:
        self.cli.lay({**self.config, "hcloud:endpoint": self.endpoint}, secrets, {"hcloud:token": TOKEN})

    def run(self) -> subprocess.CompletedProcess:
        started = time.monotonic()
        result = subprocess.run([sys.executable, str(ROOT / "tools" / "preview.py"), "--stack", self.stack,
                                 "--state", str(self.state)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        print(f"pulumi preview --diff --stack {self.stack}: {time.monotonic() - started:.1f} s")
        return result

    def secret_texts(self) -> list[str]:
        """Every secret value, and every line of the multi-line ones (the deploy key)."""
        texts = [TOKEN, *self.secrets.values()]
        texts += [line for v in self.secrets.values() for line in v.splitlines() if len(line) >= 16]
        return [t for t in texts if "-----" not in t]


@pytest.fixture(scope="module")
def hcloud():
    with FakeHcloud(TOKEN, zones=("example.org",)) as api:
        yield api


@pytest.fixture(scope="module")
def previews(hcloud, tmp_path_factory) -> dict[str, Preview]:
    state = tmp_path_factory.mktemp("previews")
    return {stack: Preview(stack, state / stack, hcloud.endpoint) for stack in ("test", "prod", ACME_DNS)}


def previewed(text: str) -> set[tuple[str, str]]:
    """(type, name) of every resource the preview lists."""
    return {(qualified.rsplit("$", 1)[-1], name) for qualified, name in URN.findall(text)}


def mocked(stack: str, config: dict) -> set[tuple[str, str]]:
    """(type, name) of every resource the program registers for the same config under the mocks
    (the plan's view)."""
    config = {k: v for k, v in config.items() if k != "hcloud:token"}
    config["outpost:secrets"] = {name: mock_secret(name) for name in config["outpost:secrets"]}
    registered = {(r.type, r.name) for r in run_program(stack, config)}
    return registered | {("pulumi:pulumi:Stack", f"outpost-{stack}")}


def count(found: set[tuple[str, str]], type_: str) -> int:
    return sum(1 for t, _ in found if t == type_)


@pytest.mark.parametrize("stack", ["test", "prod", ACME_DNS])
def test_the_real_preview_lists_what_the_program_registers_and_no_secret(stack, previews, hcloud):
    preview = previews[stack]
    hcloud.requests.clear()
    result = preview.run()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]

    found = previewed(result.stdout)
    assert found == mocked(stack, preview.config)
    summary = re.search(r"^\s+\+ (\d+) to create$", result.stdout, re.M)
    assert summary and int(summary.group(1)) == len(found), result.stdout[-500:]
    servers = [h for h, c in preview.config["outpost:hosts"].items() if c["provider"] == "hcloud"]
    assert count(found, "hcloud:index/server:Server") == len(servers) == count(found, "hcloud:index/firewall:Firewall")
    assert count(found, "hcloud:index/zoneRrset:ZoneRrset") >= 7
    assert count(found, "hcloud:index/zone:Zone") == (0 if stack == "test" else 1)
    assert count(found, "pulumi-python:dynamic/outpost:Bucket") == 1
    assert count(found, "pulumi-python:dynamic/outpost:GeoRecordSet") == 1
    hosts = preview.config["outpost:hosts"]
    statics = [h for h, c in hosts.items() if c["provider"] == "static"]
    # one bundle Command per host, and a static host's first-login bootstrap
    assert count(found, "command:remote:Command") == len(hosts) + len(statics)
    assert count(found, "command:remote:CopyToRemote") == len(hosts)      # the agent, uploaded
    if stack == ACME_DNS:
        assert count(found, "acme:index/registration:Registration") == 1
        assert count(found, "acme:index/certificate:Certificate") == 3   # one per route hostname

    for secret in preview.secret_texts():
        assert secret not in out, f"a secret value of {stack} is in the preview's output"
    assert "[secret]" in result.stdout                        # masked where they are inputs
    assert "from $PATH" not in out and "using pulumi-resource" not in out
    assert "warning:" not in out and "error:" not in out, out[-2000:]
    # test looks its zone up (create_zone: false), once, with the token; prod makes its own.
    expected = [("GET", "/v1/zones/example.org")] if stack == "test" else []
    assert hcloud.requests == expected and hcloud.unexpected == []


def test_a_zone_that_cannot_be_read_ends_the_preview_with_one_line_naming_the_key(previews, hcloud):
    """test writes into prod's zone: when Hetzner has no such zone, the preview says so in one line
    naming outpost:dns.zone, and no Python traceback."""
    zone = hcloud.zones.pop("example.org")
    try:
        result = previews["test"].run()
    finally:
        hcloud.zones["example.org"] = zone
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert ("error: Pulumi.test.yaml: outpost:dns.zone: zone 'example.org' could not be read at Hetzner "
            "(Resource not found: Resource (zone) was not found") in result.stderr, result.stderr
    assert "with create_zone: false it must already exist" in result.stderr
    assert "Traceback" not in out and "unhandled exception" not in out


def test_the_pull_request_workflow_and_make_preview_run_this_entry_point():
    """The same command in the test, `make preview` and the PR workflow's preview job."""
    make = subprocess.run(["make", "-n", "preview", "STACK=test"], cwd=ROOT, capture_output=True, text=True)
    assert make.returncode == 0, make.stderr
    assert ".venv/bin/python tools/preview.py --stack test" in make.stdout
    jobs = yaml.safe_load((ROOT / ".github" / "workflows" / "pr.yml").read_text())["jobs"]
    runs = [step.get("run", "") for step in jobs["preview"]["steps"]]
    assert "make preview STACK=test" in runs
    assert not any("pulumi/actions" in str(step.get("uses", "")) for step in jobs["preview"]["steps"])


def test_a_short_secret_is_named_in_a_warning_the_cli_shows(previews):
    """The program's warning (components/secrets.py) reaches the preview's display, naming the
    secret; the value itself is nowhere in it."""
    preview = previews["prod"]
    short = "Zq7x9"
    preview.lay({**preview.secrets, "s3_secret": short})
    try:
        result = preview.run()
    finally:
        preview.lay(preview.secrets)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    warnings = [line.strip() for line in out.splitlines() if "is shorter than 16 characters" in line]
    assert warnings and all(w.startswith("warning: outpost:secrets.s3_secret is shorter") for w in warnings)
    assert short not in out
