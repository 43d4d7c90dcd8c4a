"""End-to-end fixtures: one local VM per session and the stack deployed to it by the real Pulumi
engine (`pulumi up`/`destroy` from .engine/bin, a file backend and passphrase secrets under the
test's temporary directory, tools/pulumi_cli.py). The VM reaches moto's S3 server on the host
(tests/e2e/backing.py) as the bucket's `host_endpoint`; the Bucket resource itself is made there by
the dynamic provider, through the bucket's `endpoint`.

Every scenario's wall time goes into the report (tests/e2e/report.py) at the end of the session.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e import report
from tests.e2e.backing import S3, place_litestream, s3_server
from tests.e2e.deployment import DEMO_SECRETS, Deployment
from tests.e2e.report import record
from tools.vm import VM


def pytest_sessionfinish(session, exitstatus):
    report.write(exitstatus)


@pytest.fixture(scope="session")
def s3() -> S3:
    with s3_server(DEMO_SECRETS["s3_key_id"], DEMO_SECRETS["s3_secret"]) as server:
        yield server


@pytest.fixture(scope="session")
def vm(s3, tmp_path_factory):
    started = time.monotonic()
    machine = VM.start(state_dir=tmp_path_factory.mktemp("vm"), guestfwd_port=s3.port)
    record("boot VM to SSH", time.monotonic() - started, machine.info.get("accel", ""))
    place_litestream(machine)
    yield machine
    machine.stop()


@pytest.fixture(scope="session")
def deployment(vm, s3, tmp_path_factory) -> Deployment:
    return Deployment(vm, tmp_path_factory.mktemp("deploy"), s3_port=s3.port)

