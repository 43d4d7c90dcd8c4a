"""The pinned Pulumi toolchain (`make engine`, tools/engine/) and the real CLI driving the local
stack's set-up (`make up`'s first steps, tools/local_stack.py): pins agree with pyproject.toml, the
CLI built by `make setup` is the pinned one, what is missing is said in one paragraph, and the local
stack's config, passphrase and secrets stay under the state directory."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tools import local_stack
from tools.engine import build, recipes

VERSIONS = build.read_versions()
CLI = ROOT / ".engine" / "bin" / "pulumi"


def pyproject_pins() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return dict(re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", d).groups() for d in deps if "==" in d)


PIECES = recipes.pieces(VERSIONS)
PLUGINS = [p for p in PIECES if p.plugin]
SOURCES = build.sources_dir()


def test_plugin_pins_equal_the_python_sdk_pins():
    pins = pyproject_pins()
    packages = {"command": "pulumi-command", "tls": "pulumi-tls", "random": "pulumi-random",
                "hcloud": "pulumi-hcloud", "acme": "pulumiverse-acme"}
    assert {p.plugin for p in PLUGINS} == set(packages)
    for piece in PLUGINS:
        assert piece.version == pins[packages[piece.plugin]], f"{piece.name} vs pyproject's {packages[piece.plugin]}"
    # The CLI may be newer than the Python SDK, never older.
    cli = tuple(int(x) for x in VERSIONS["PULUMI_VERSION"].split("."))
    assert cli >= tuple(int(x) for x in pins["pulumi"].split("."))


def source_archives() -> dict[str, str]:
    """archive file name → the tag SOURCES.md gives it ('' for a commit without a tag)."""
    rows = {}
    for line in (SOURCES / "SOURCES.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].endswith(".tar.gz"):
            tag = re.search(r"\((v[0-9.]+)\)", cells[2])
            rows[cells[0]] = tag.group(1) if tag else ""
    return rows


def test_every_piece_and_dependency_names_an_archive_at_its_pinned_version():
    """The pins, the SDK pins (above) and the source archives agree: each piece's archive is listed
    in ENGINE_SOURCES/SOURCES.md at the tag of the piece's version, and is there."""
    assert SOURCES.is_dir(), f"ENGINE_SOURCES={SOURCES}: the source archives make engine builds from"
    listed = source_archives()
    for piece in PIECES[1:]:
        assert listed.get(piece.archive) == f"v{piece.version}", (piece.name, piece.archive, listed.get(piece.archive))
        assert (SOURCES / piece.archive).is_file(), piece.archive
        for dep in piece.deps:
            assert dep.archive in listed and (SOURCES / dep.archive).is_file(), (piece.name, dep.archive)


def test_cli_wrapper_module_requires_the_pinned_cli():
    gomod = (ROOT / "tools" / "engine" / "cli" / "go.mod").read_text()
    assert f"github.com/pulumi/pulumi/pkg/v3 v{VERSIONS['PULUMI_VERSION']}" in gomod
    assert "tool github.com/pulumi/pulumi/pkg/v3/cmd/pulumi" in gomod


def test_setup_built_the_pinned_cli_and_the_language_host():
    """make setup (make engine) ran before the tests: the real CLI says the pinned version and the
    language host, its exec script and the dynamic-provider script sit beside it."""
    assert CLI.exists(), "no .engine/bin/pulumi: make setup runs tools/engine/build.py"
    out = subprocess.run([str(CLI), "version"], capture_output=True, text=True, check=True,
                         env={**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"})
    assert out.stdout.strip() == f"v{VERSIONS['PULUMI_VERSION']}"
    for name in (recipes.LANGUAGE_HOST, "pulumi-language-python-exec", recipes.DYNAMIC_SCRIPT):
        assert (CLI.parent / name).stat().st_mode & stat.S_IXUSR, name
    assert "-m pulumi.dynamic" in (CLI.parent / recipes.DYNAMIC_SCRIPT).read_text()


def test_every_plugin_is_installed_at_its_pin_and_answers_its_version():
    """`pulumi plugin install --file` put each plugin in PULUMI_HOME; the CLI lists it at the pin."""
    listed = subprocess.run([str(CLI), "plugin", "ls", "--json"], capture_output=True, text=True, check=True,
                            env={**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"}).stdout
    have = {(p["name"], p["version"]) for p in json.loads(listed) if p["kind"] == "resource"}
    for piece in PLUGINS:
        assert (piece.plugin, piece.version) in have, (piece.plugin, piece.version, sorted(have))
        assert build.plugin_path(piece).is_file()


def test_a_second_build_builds_nothing():
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "engine" / "build.py")], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "building" not in result.stderr and "built (" not in result.stderr, result.stderr
    assert result.stderr.count(", cached,") == len(PIECES), result.stderr
    print(f"warm make engine: {time.monotonic() - started:.1f} s")


def test_missing_pieces_are_one_paragraph_naming_each(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pulumi").write_text("")
    monkeypatch.setattr(build, "LINK", bin_dir)
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "home"))
    assert build.main(["--check"]) == 1
    err = capsys.readouterr().err
    paragraph = err.strip().splitlines()[-1]
    assert "Traceback" not in err
    for name in (recipes.LANGUAGE_HOST, recipes.DYNAMIC_SCRIPT, *(p.name for p in PLUGINS)):
        assert name in paragraph
    assert "ENGINE_SOURCES" in paragraph and "ENGINE_ROUTE=installer" in paragraph


def test_a_missing_archive_is_named_with_the_piece_and_the_step(tmp_path, monkeypatch):
    """The archive route without its archive: the piece, the archive and the step, nothing built."""
    monkeypatch.setenv("ENGINE_SOURCES", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tls = next(p for p in PIECES if p.plugin == "tls")
    outcome = build.obtain(tls, VERSIONS, ["archive"], lambda message: None)
    assert outcome.directory is None
    assert f"archive (archive {tls.archive}): extract:" in outcome.why, outcome.why
    assert str(tmp_path / "empty") in outcome.why
    assert not list((tmp_path / "cache" / "outpost" / "engine" / "pieces").glob("*"))


def test_a_plugin_installed_by_pulumi_counts_as_present(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "LINK", tmp_path / "bin")
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "home"))
    command = next(p for p in PLUGINS if p.plugin == "command")
    plugin = tmp_path / "home" / "plugins" / f"resource-command-v{command.version}"
    plugin.mkdir(parents=True)
    (plugin / "pulumi-resource-command").write_text("")
    found = build.present(PIECES)
    assert found["pulumi-resource-command"] and not found["pulumi-resource-tls"]


def test_unknown_route_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("ENGINE_ROUTE", "carrier-pigeon")
    assert build.main([]) == 1
    assert "ENGINE_ROUTE='carrier-pigeon': use proxy, archive, installer or auto" in capsys.readouterr().err


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
    values = {name: local_stack.cli(state).get(f"outpost:secrets.{name}") for name in local_stack.GENERATED_SECRETS}
    assert all(len(v.strip()) >= 24 for v in values.values())
    text = (state / "Pulumi.local.yaml").read_text()
    assert not any(v.strip() in text for v in values.values())
    assert (state / "passphrase").read_text().strip() not in text

    assert local_stack.main(["prepare", "--state-dir", str(state)]) == 0
    again = {name: local_stack.cli(state).get(f"outpost:secrets.{name}") for name in local_stack.GENERATED_SECRETS}
    assert again == values
    assert (ROOT / "Pulumi.local.yaml").read_bytes() == repo_stack


def test_make_up_stops_before_booting_when_the_toolchain_is_incomplete(tmp_path, monkeypatch, capsys):
    def incomplete():
        raise local_stack.Failed("the Pulumi toolchain is incomplete (route: installed). Missing: x")
    monkeypatch.setattr(local_stack, "engine_complete", incomplete)
    started = []
    monkeypatch.setattr(local_stack.subprocess, "run",
                        lambda argv, **kw: started.append(argv) or subprocess.CompletedProcess(argv, 0, "", ""))
    monkeypatch.setattr(local_stack, "prepare", lambda state, vm=None: None)
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
