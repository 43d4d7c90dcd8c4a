"""End-to-end fixtures: one local VM per session, the program run under (realistic) mocks with the
VM's address, ports and keys, and an engine that executes its Commands over real SSH. The VM
reaches an S3 server on the host for the stack's backups (tests/e2e/backing.py), since a backup
that restores automatically reads its repository on the first apply.

Every scenario's wall time goes into the report (tests/e2e/report.py) at the end of the session.
"""

from __future__ import annotations

import copy
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from components.program import Registered, run_program, stack_config
from tests.conftest import ROOT
from tests.e2e import report
from tests.e2e.backing import S3, place_litestream, s3_server
from tests.e2e.engine import Engine
from tests.e2e.report import record
from tests.e2e.realistic import RealisticMocks
from tools.vm import VM

DEMO_SECRETS = {"demo_token": "e2e-demo-token-9f3k", "s3_key_id": "e2e-key-id", "s3_secret": "e2e-s3-secret-7d1q",
                "restic_password": "e2e-restic-password-c81m"}


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


class Deployment:
    """A stack (the local one unless told: Pulumi.STACK.yaml in PROJECT_DIR) pointed at the VM;
    `config` is edited by scenarios, `up()` applies it."""

    def __init__(self, vm: VM, workdir: Path, stack: str = "local", project_dir: Path = ROOT):
        self.vm = vm
        self.workdir = workdir
        self.stack = stack
        self.engine = Engine()
        self.mocks = RealisticMocks()
        base = stack_config(stack, secrets={**DEMO_SECRETS, "deploy_key": Path(vm.private_key_path).read_text()},
                            project_dir=project_dir)
        base["outpost:hosts"]["vm"].update(address="127.0.0.1", port=vm.ssh_port, host_key=vm.host_key)
        base["outpost:admin"]["ssh_keys"] = [vm.public_key]
        self.config = base
        self.registered: list[Registered] = []

    def program(self) -> list[Registered]:
        self.registered = run_program(self.stack, copy.deepcopy(self.config), mocks=self.mocks)
        return self.registered

    def up(self):
        return self.engine.up(self.program())

    @property
    def services(self) -> dict:
        return self.config["outpost:services"]

    def ca_file(self) -> str:
        ca = next(r for r in self.registered if r.type == "tls:index/selfSignedCert:SelfSignedCert")
        path = self.workdir / "ca.pem"
        path.write_text(ca.outputs["cert_pem"])
        return str(path)

    def admin_ssh(self, command: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        """A shell command in the VM as the admin outpost created (root logins are refused)."""
        argv = self.vm.ssh_argv()
        argv[-1] = f"{self.config['outpost:admin']['user']}@127.0.0.1"
        result = subprocess.run([*argv, "--", command], capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"{command!r} exited {result.returncode}: {result.stderr.strip()}")
        return result


@pytest.fixture(scope="session")
def deployment(vm, tmp_path_factory) -> Deployment:
    return Deployment(vm, tmp_path_factory.mktemp("deploy"))


def stack_file_config(stack: str) -> dict:
    return copy.deepcopy(yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"])
