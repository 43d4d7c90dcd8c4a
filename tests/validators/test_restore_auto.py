"""The rendered restic restore script's `--auto` mode, run for real: Debian's restic against moto's
S3 server (a free port on 127.0.0.1), with the backup's paths under the test's directory.

Only the env file's path differs from production (rendered with `env_path=`); restic is the real
/usr/bin/restic, python3 and the script's every other line are as shipped. Checks the guards the
automatic restore relies on: a path that holds anything is never restored over, a missing
repository or one without snapshots is "nothing to restore" (exit 0), an unreadable one (wrong
password, missing bucket) fails with restic's own words and no secret, and a missing or empty
path comes back from the newest snapshot.
"""

from __future__ import annotations

import copy
import subprocess
import uuid
from pathlib import Path

import pytest

from components.load import parse
from components.render.backups import restic_restore
from components.render.secret_values import systemd_env_inner
from tests.e2e.backing import moto_server
from tests.e2e.test_backup_restore import free_port
from tests.render.test_backups import BASE

PASSWORD = "restore-test pw $HOME \"q\" `id`"
KEY_ID, SECRET_KEY = "AKIARESTORETEST", "s3-secret-restore-test-value"


@pytest.fixture(scope="module")
def s3():
    """moto's S3 server; yields (endpoint, boto3 client)."""
    import boto3
    with moto_server() as port:
        endpoint = f"http://127.0.0.1:{port}"
        yield endpoint, boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                                     aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET_KEY)


class Repo:
    """One backup `files` of paths under tmp_path, its repository in a fresh bucket."""

    def __init__(self, tmp_path: Path, endpoint: str, bucket: str, password: str = PASSWORD):
        self.root = tmp_path
        self.paths = [tmp_path / "data" / "files", tmp_path / "data" / "other"]
        config = copy.deepcopy(BASE)
        config["outpost:buckets"] = {bucket: {"endpoint": endpoint, "region": "us-east-1",
                                              "credentials": {"access_key": "s3_key_id", "secret_key": "s3_secret"}}}
        config["outpost:backups"] = {"files": {"host": "vps1", "paths": [str(p) for p in self.paths],
                                               "bucket": bucket, "password": "restic_password"}}
        stack = parse(config, "restore-test")
        self.env = tmp_path / "files.env"
        self.write_env(endpoint, bucket, password)
        self.script = tmp_path / "outpost-restore-files"
        self.script.write_text(restic_restore(stack, "files", stack.backups["files"], env_path=str(self.env)))
        self.script.chmod(0o700)

    def write_env(self, endpoint: str, bucket: str, password: str) -> None:
        values = {"RESTIC_REPOSITORY": f"s3:{endpoint}/{bucket}/files", "RESTIC_PASSWORD": password,
                  "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                  "AWS_DEFAULT_REGION": "us-east-1", "RESTIC_CACHE_DIR": str(self.root / "cache")}
        self.env.write_text("".join(f'{k}="{systemd_env_inner(v)}"\n' for k, v in values.items()))
        self.env.chmod(0o600)

    def restic(self, *args: str) -> str:
        """restic with the repository settings, the way the script reads them (its own loader)."""
        env = {"PATH": "/usr/bin:/bin", "HOME": str(self.root)}
        for line in self.env.read_text().splitlines():
            key, _, value = line.partition("=")
            env[key] = value[1:-1].replace('\\"', '"').replace("\\`", "`").replace("\\$", "$").replace("\\\\", "\\")
        result = subprocess.run(["/usr/bin/restic", *args], capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def auto(self) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.script), "--auto"], capture_output=True, text=True, timeout=300,
                              env={"PATH": "/usr/bin:/bin", "HOME": str(self.root)})


def new_bucket(client) -> str:
    name = f"restore-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


def no_secret(result: subprocess.CompletedProcess) -> None:
    for secret in (PASSWORD, SECRET_KEY, "wrong-" + PASSWORD):
        assert secret not in result.stdout + result.stderr


def test_no_repository_is_nothing_to_restore(tmp_path, s3):
    repo = Repo(tmp_path, s3[0], new_bucket(s3[1]))
    result = repo.auto()
    assert result.returncode == 0, result.stderr
    for p in repo.paths:
        assert f"nothing to restore for {p} (no repository yet)" in result.stderr
        assert not p.exists()
    no_secret(result)


def test_repository_without_snapshots_is_nothing_to_restore(tmp_path, s3):
    repo = Repo(tmp_path, s3[0], new_bucket(s3[1]))
    repo.restic("init")
    result = repo.auto()
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [f"nothing to restore for {p}" for p in repo.paths]


def test_restores_the_newest_snapshot_into_missing_and_empty_paths_only(tmp_path, s3):
    repo = Repo(tmp_path, s3[0], new_bucket(s3[1]))
    files, other = repo.paths
    files.mkdir(parents=True)
    other.mkdir()
    (other / "kept.txt").write_text("old other\n")
    repo.restic("init")
    (files / "a.txt").write_text("version 1\n")
    repo.restic("backup", str(files), str(other))
    (files / "a.txt").write_text("version 2\n")
    (files / "sub").mkdir()
    (files / "sub" / "b.txt").write_text("b\n")
    repo.restic("backup", str(files), str(other))
    newest = repo.restic("snapshots", "--json", "--latest", "1")
    import json
    newest_id = max(json.loads(newest), key=lambda s: s["time"])["short_id"]

    subprocess.run(["rm", "-rf", str(files)], check=True)        # missing
    (other / "kept.txt").write_text("changed since the backup\n")  # not empty: never touched
    result = repo.auto()
    assert result.returncode == 0, result.stderr
    assert (files / "a.txt").read_text() == "version 2\n"
    assert (files / "sub" / "b.txt").read_text() == "b\n"
    assert (other / "kept.txt").read_text() == "changed since the backup\n"
    lines = [line for line in result.stderr.splitlines() if line.startswith(("restored", "skipped", "nothing"))]
    assert lines[0].startswith(f"restored {files} from snapshot {newest_id} (")
    assert lines[1] == f"skipped {other}: not empty"
    no_secret(result)

    # an empty directory counts as missing; a second run finds both paths full and skips them
    subprocess.run(["rm", "-rf", str(files)], check=True)
    files.mkdir()
    assert repo.auto().returncode == 0 and (files / "a.txt").read_text() == "version 2\n"
    again = repo.auto()
    assert again.returncode == 0
    assert [line for line in again.stderr.splitlines() if line.startswith("skipped")] == \
        [f"skipped {p}: not empty" for p in repo.paths]


def test_wrong_password_fails_with_restics_message(tmp_path, s3):
    bucket = new_bucket(s3[1])
    repo = Repo(tmp_path, s3[0], bucket)
    repo.restic("init")
    repo.write_env(s3[0], bucket, "wrong-" + PASSWORD)
    result = repo.auto()
    assert result.returncode != 0
    assert "wrong password" in result.stderr
    assert "cannot read the repository" in result.stderr
    assert not repo.paths[0].exists()
    no_secret(result)


def test_missing_bucket_fails_with_restics_message(tmp_path, s3):
    repo = Repo(tmp_path, s3[0], f"restore-missing-{uuid.uuid4().hex[:8]}")
    result = repo.auto()
    assert result.returncode != 0
    assert "bucket does not exist" in result.stderr
    assert "nothing to restore" not in result.stderr
    no_secret(result)


def test_refuses_a_path_reached_through_a_symlink(tmp_path, s3):
    repo = Repo(tmp_path, s3[0], new_bucket(s3[1]))
    repo.restic("init")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "data").symlink_to(elsewhere)
    result = repo.auto()
    assert result.returncode != 0
    assert "a symlink on the way" in result.stderr
    assert list(elsewhere.iterdir()) == []


def test_paths_with_data_never_need_the_repository(tmp_path, s3):
    """The unit runs on every boot and the services require it: a healthy host must come up while
    the bucket is unreachable (here: a port nothing listens on)."""
    closed = f"http://127.0.0.1:{free_port()}"
    repo = Repo(tmp_path, closed, "unreachable")
    for path in repo.paths:
        path.mkdir(parents=True)
        (path / "kept").write_text("data")
    result = repo.auto()
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [f"skipped {p}: not empty" for p in repo.paths]
    repo.paths[1].joinpath("kept").unlink()
    result = repo.auto()                      # one empty path: now the repository is needed
    assert result.returncode != 0 and "cannot read the repository" in result.stderr
    no_secret(result)
