"""The pinned Pulumi toolchain (`make engine`, tools/engine/) and the real CLI driving the local
stack's set-up (`make up`'s first steps, tools/local_stack.py): pins agree with pyproject.toml, the
CLI built by `make setup` is the pinned one, what is missing is said in one paragraph, and the local
stack's config, passphrase and secrets stay under the state directory."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tools import local_stack
from tools.engine import build

VERSIONS = build.read_versions()
CLI = ROOT / ".engine" / "bin" / "pulumi"


def pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", d).groups() for d in deps if "==" in d)


def test_plugin_pins_equal_the_python_sdk_pins():
    pins = pyproject_pins()
    packages = {"COMMAND": "pulumi-command", "TLS": "pulumi-tls", "RANDOM": "pulumi-random",
                "HCLOUD": "pulumi-hcloud", "ACME": "pulumiverse-acme"}
    assert {p.key for p in build.PLUGINS} == set(packages)
    for key, package in packages.items():
        assert VERSIONS[f"{key}_VERSION"] == pins[package], f"{key}_VERSION vs pyproject's {package}"
    # The CLI may be newer than the Python SDK, never older.
    cli = tuple(int(x) for x in VERSIONS["PULUMI_VERSION"].split("."))
    assert cli >= tuple(int(x) for x in pins["pulumi"].split("."))


def test_cli_wrapper_module_requires_the_pinned_cli():
    gomod = (ROOT / "tools" / "engine" / "cli" / "go.mod").read_text()
    assert f"github.com/pulumi/pulumi/pkg/v3 v{VERSIONS['PULUMI_VERSION']}" in gomod
    assert "tool github.com/pulumi/pulumi/pkg/v3/cmd/pulumi" in gomod


def test_setup_built_the_pinned_cli_and_the_dynamic_provider_script():
    """make setup (make engine) ran before the tests: the real CLI says the pinned version."""
    assert CLI.exists(), "no .engine/bin/pulumi: make setup runs tools/engine/build.py"
    out = subprocess.run([str(CLI), "version"], capture_output=True, text=True, check=True,
                         env={**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"})
    assert out.stdout.strip() == f"v{VERSIONS['PULUMI_VERSION']}"
    script = CLI.parent / build.DYNAMIC_SCRIPT
    assert script.stat().st_mode & stat.S_IXUSR
    assert "-m pulumi.dynamic" in script.read_text()


def test_a_second_build_builds_nothing():
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "engine" / "build.py")], capture_output=True,
                            text=True, timeout=120)
    assert "built pulumi" not in result.stderr
    assert (ROOT / ".engine" / "bin").resolve().name == "bin"


def test_missing_pieces_are_one_paragraph_naming_each(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pulumi").write_text("")
    monkeypatch.setattr(build, "LINK", bin_dir)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "home"))
    assert build.main(["--check"]) == 1
    err = capsys.readouterr().err
    paragraph = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    for name in (build.LANGUAGE_HOST, build.DYNAMIC_SCRIPT, *(p.binary for p in build.PLUGINS)):
        assert name in paragraph
    assert "ENGINE_ROUTE=installer" in paragraph and "pulumi plugin install" in paragraph


def test_a_plugin_installed_by_pulumi_counts_as_present(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "LINK", tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "home"))
    plugin = tmp_path / "home" / "plugins" / f"resource-command-v{VERSIONS['COMMAND_VERSION']}"
    plugin.mkdir(parents=True)
    (plugin / "pulumi-resource-command").write_text("")
    found = build.present(VERSIONS)
    assert found["pulumi-resource-command"] and not found["pulumi-resource-tls"]


def test_unknown_route_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("ENGINE_ROUTE", "carrier-pigeon")
    assert build.main([]) == 1
    assert "ENGINE_ROUTE='carrier-pigeon': use go, installer or auto" in capsys.readouterr().err


# -- make up's set-up with the real CLI ------------------------------------------------------------

def test_local_stack_config_and_secrets_stay_under_the_state_dir(tmp_path):
    """prepare: stack created in the file backend, passphrase 0600, secrets generated once and
    encrypted, the repository's Pulumi.local.yaml untouched; a second run changes no secret."""
    repo_stack = (ROOT / "Pulumi.local.yaml").read_bytes()
    state = tmp_path / "vm"
    assert local_stack.main(["prepare", "--state-dir", str(state)]) == 0
    assert (ROOT / "Pulumi.local.yaml").read_bytes() == repo_stack
    assert stat.S_IMODE((state / "passphrase").stat().st_mode) == 0o600
    laid = yaml.safe_load((state / "Pulumi.local.yaml").read_text())
    assert laid["encryptionsalt"].startswith("v1:")
    secrets = laid["config"]["outpost:secrets"]
    assert set(local_stack.GENERATED_SECRETS) <= set(secrets)
    assert all(set(v) == {"secure"} for v in secrets.values())
    values = {name: local_stack.pulumi(["config", "get", "--path", f"outpost:secrets.{name}"], state).stdout
              for name in local_stack.GENERATED_SECRETS}
    assert all(len(v.strip()) >= 24 for v in values.values())
    text = (state / "Pulumi.local.yaml").read_text()
    assert not any(v.strip() in text for v in values.values())
    assert (state / "passphrase").read_text().strip() not in text

    assert local_stack.main(["prepare", "--state-dir", str(state)]) == 0
    again = {name: local_stack.pulumi(["config", "get", "--path", f"outpost:secrets.{name}"], state).stdout
             for name in local_stack.GENERATED_SECRETS}
    assert again == values
    assert (ROOT / "Pulumi.local.yaml").read_bytes() == repo_stack


def test_make_up_stops_before_booting_when_the_toolchain_is_incomplete(tmp_path, monkeypatch, capsys):
    def incomplete():
        raise local_stack.Failed("the Pulumi toolchain is incomplete (route: installed). Missing: x")
    monkeypatch.setattr(local_stack, "engine_complete", incomplete)
    started = []
    monkeypatch.setattr(local_stack.subprocess, "run",
                        lambda argv, **kw: started.append(argv) or subprocess.CompletedProcess(argv, 0, "", ""))
    monkeypatch.setattr(local_stack, "prepare", lambda state: None)
    assert local_stack.main(["up", "--state-dir", str(tmp_path)]) == 1
    assert not any("vm.py" in " ".join(map(str, a)) for a in started)
    assert "make up: the Pulumi toolchain is incomplete" in capsys.readouterr().err


@pytest.mark.parametrize("line", ["PULUMI_VERSION", "COMMAND_VERSION", "ACME_MODULE"])
def test_makefile_reads_the_same_versions_file(line):
    out = subprocess.run(["make", "-s", "-f", "-", "show"], cwd=ROOT, capture_output=True, text=True,
                         input=f"include tools/engine/versions.env\nshow:\n\t@echo $({line})\n")
    assert out.stdout.strip() == VERSIONS[line]


def test_make_up_serves_the_demo_bucket_and_make_down_stops_it(tmp_path):
    """make up's S3 server: on the port of the local stack's bucket endpoint (which the VM reaches
    through its guest forward as host_endpoint), started once, stopped by make down."""
    import socket
    import boto3
    import yaml
    buckets = yaml.safe_load((ROOT / "Pulumi.local.yaml").read_text())["config"]["outpost:buckets"]
    assert local_stack.s3_port() == 9000
    assert {b["host_endpoint"] for b in buckets.values()} == {"http://10.0.2.100:9000"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        local_stack.start_s3(tmp_path, port)
        pid = (tmp_path / "s3.pid").read_text()
        local_stack.start_s3(tmp_path, port)              # a second make up keeps it
        assert (tmp_path / "s3.pid").read_text() == pid
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id="demo", aws_secret_access_key="demo")
        client.create_bucket(Bucket="outpost-backups")
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["outpost-backups"]
    finally:
        local_stack.stop_s3(tmp_path)
    assert not (tmp_path / "s3.pid").exists()
    reaped, _ = os.waitpid(int(pid), os.WNOHANG)      # it exited (our child here; make up's is init's)
    assert reaped == int(pid)
