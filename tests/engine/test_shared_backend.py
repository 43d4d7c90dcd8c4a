"""A team's shared state: the real CLI with its state in an S3-compatible bucket (moto's server),
as README "Sharing state in a team" tells it.

- `pulumi login` accepts both URL forms the README gives (the AWS SDK v1-era
  `endpoint=HOST:PORT&disableSSL=true&s3ForcePathStyle=true`, which CLI v3.274.1 translates in
  pkg/backend/diy/backend.go translateLegacyS3Params, and the SDK v2 form with a scheme in the
  endpoint and `use_path_style`), and a teammate logged in there sees the stack;
- two concurrent `pulumi up` of one stack: while the first holds the stack's lock (its Command
  waits on a FIFO, programs/lock), the second is refused with the engine's lock message and
  changes nothing in the state; the first then finishes, leaves no lock behind, and a third `up`
  finds nothing to do.

The bucket's key reaches the CLI through an AWS shared credentials file (0600) and the URL's
`profile`, never an environment variable. About 25 s (four engine runs).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

import boto3
import pytest

from tests.conftest import ROOT
from tests.e2e.backing import moto_server
from tools.pulumi_cli import BIN, CliFailed, StackCli, Update

PROGRAM = ROOT / "tests" / "engine" / "programs" / "lock"
BUCKET, PROFILE = "outpost-state", "outpost-state"
KEY_ID, SECRET = "AKIAOUTPOSTSTATE0001", "state-secret-6f2b8d41c9e07a53"
LOCKED = ("the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end "
          "or delete the lock file with `pulumi cancel`.")


def urls(port: int) -> dict[str, str]:
    return {
        "v1": f"s3://{BUCKET}?endpoint=127.0.0.1:{port}&disableSSL=true&s3ForcePathStyle=true"
              f"&region=us-east-1&response_checksum_validation=when_required&profile={PROFILE}",
        "v2": f"s3://{BUCKET}?endpoint={quote(f'http://127.0.0.1:{port}', safe='')}&use_path_style=true"
              f"&region=us-east-1&response_checksum_validation=when_required&profile={PROFILE}",
    }


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    """moto's S3 server with the state bucket, and the AWS files the CLI reads its key from."""
    home = tmp_path_factory.mktemp("aws")
    credentials = home / "credentials"
    fd = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"[{PROFILE}]\naws_access_key_id = {KEY_ID}\naws_secret_access_key = {SECRET}\n")
    (home / "config").write_text("")                   # nothing of the user's own AWS config
    with moto_server() as port:
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
        s3.create_bucket(Bucket=BUCKET)
        aws = {"AWS_SHARED_CREDENTIALS_FILE": str(credentials), "AWS_CONFIG_FILE": str(home / "config"),
               "AWS_EC2_METADATA_DISABLED": "true"}
        yield port, s3, aws
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600


def cli_env(aws: dict[str, str], home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PULUMI_"))}
    return {**env, **aws, "PULUMI_HOME": str(home), "PULUMI_SKIP_UPDATE_CHECK": "true"}


@pytest.mark.parametrize("form", ["v1", "v2"])
def test_pulumi_login_to_the_bucket_in_either_url_form(form, backend, tmp_path):
    port, _, aws = backend
    url = urls(port)[form]
    env = cli_env(aws, tmp_path / "home")
    login = subprocess.run([str(BIN / "pulumi"), "login", url], env=env, capture_output=True, text=True, timeout=120)
    assert login.returncode == 0, login.stderr
    whoami = subprocess.run([str(BIN / "pulumi"), "whoami", "--verbose"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert f"Backend URL: {url}" in whoami.stdout, whoami.stdout + whoami.stderr
    assert SECRET not in login.stdout + login.stderr + whoami.stdout + whoami.stderr


class Run:
    """A `pulumi up` in a thread: its Update or its failure."""

    def __init__(self, cli: StackCli):
        self.update: Update | None = None
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, args=(cli,), daemon=True)
        self.thread.start()

    def _run(self, cli: StackCli) -> None:
        try:
            self.update = cli.up(outputs=False, timeout=240)
        except Exception as error:  # noqa: BLE001 - handed to the test
            self.error = error


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.1)


def release(fifo: Path, timeout: float = 60) -> None:
    """One line to the Command waiting on FIFO (once it has the FIFO open for reading)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:                                # ENXIO: no reader yet
            assert time.monotonic() < deadline, "the held Command never opened its FIFO"
            time.sleep(0.1)
    with os.fdopen(fd, "w") as out:
        out.write("go\n")


def test_a_second_up_is_refused_while_the_first_holds_the_lock_and_the_state_stays_intact(backend, tmp_path):
    port, s3, aws = backend
    url = urls(port)["v1"]
    held, fifo = tmp_path / "held", tmp_path / "release"
    os.mkfifo(fifo)
    first = StackCli("team", tmp_path / "alice", project=PROGRAM, backend_url=url, extra_env=aws)
    first.lay({"outpost-lock:held": str(held), "outpost-lock:release": str(fifo), "outpost-lock:round": "1"})
    # A second process on the same stack in the same bucket (a teammate, a CI job).
    second = StackCli("team", tmp_path / "alice", project=PROGRAM, backend_url=url, extra_env=aws)

    running = Run(first)
    try:
        wait_for(lambda: held.exists() or not running.thread.is_alive(), 180, "held Command")
        assert held.exists(), running.error
        locks = s3.list_objects_v2(Bucket=BUCKET, Prefix=".pulumi/locks/").get("KeyCount", 0)
        assert locks == 1
        before = first.export()
        with pytest.raises(CliFailed) as refused:
            second.up(outputs=False, timeout=120)
        said = refused.value.result.stdout + refused.value.result.stderr
        assert LOCKED in said, said[-2000:]
        # response_checksum_validation=when_required: the AWS SDK warns on every response from a
        # store that sends no checksums (moto, Ceph-based ones) otherwise
        assert "no supported checksum" not in said
        assert first.export() == before
    finally:
        release(fifo)
        running.thread.join(timeout=240)
    assert running.error is None, running.error
    assert running.update.changes == {"create": 2}                # the stack and the Command
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=".pulumi/locks/").get("KeyCount", 0) == 0

    state = first.export()["deployment"]
    assert not state.get("pending_operations")
    command = next(r for r in state["resources"] if r["type"] == "command:local:Command")
    assert command["outputs"]["stdout"] == "released"
    again = second.up(outputs=False, timeout=240)
    assert again.changed == 0

    # The teammate who ran `pulumi login` (no PULUMI_BACKEND_URL) sees the stack.
    env = cli_env(aws, tmp_path / "bob-home")
    subprocess.run([str(BIN / "pulumi"), "login", url], env=env, capture_output=True, text=True, timeout=120,
                   check=True)
    listed = subprocess.run([str(BIN / "pulumi"), "stack", "ls", "--json"], cwd=PROGRAM, env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert [s["name"] for s in json.loads(listed.stdout)] == ["team"]
    everything = json.dumps(first.export()) + said + running.update.output + again.output
    assert SECRET not in everything and KEY_ID not in everything
    first.destroy(timeout=240)
