"""A stack deployed to a test VM by the real Pulumi engine (tools/pulumi_cli.py: `pulumi up`,
`destroy`, a file backend and passphrase secrets under the test's directory): what the end-to-end
modules and `make bench` drive. A plain module, not the conftest: pytest imports a conftest under
its own name, so a class defined there would exist twice and `pytest.raises` miss it.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import yaml

from bench.sshd_log import SshdLog
from tests.conftest import ROOT
from tools.pulumi_cli import CliFailed, StackCli, Step
from tools.vm import VM

DEMO_SECRETS = {"demo_token": "e2e-demo-token-9f3k", "s3_key_id": "e2e-key-id", "s3_secret": "e2e-s3-secret-7d1q",
                "restic_password": "e2e-restic-password-c81m"}
COMMAND = "command:remote:Command"


class CommandFailed(Exception):
    """`pulumi up` failed: the engine's error diagnostics (the failing Command's own output)."""

    def __init__(self, error: CliFailed):
        self.errors = error.errors
        super().__init__(str(error))


class Deployment:
    """A stack (the local one unless told: Pulumi.STACK.yaml in PROJECT_DIR) pointed at the VM and
    deployed by the real CLI; `config` is edited by scenarios, `up()` applies it. Buckets go to the
    S3 server on S3_PORT (the VM reaches it through its guest forward)."""

    def __init__(self, vm: VM, workdir: Path, stack: str = "local", project_dir: Path = ROOT,
                 s3_port: int | None = None):
        self.vm = vm
        self.workdir = workdir
        self.stack = stack
        self.cli = StackCli(stack, workdir / "pulumi")
        base = copy.deepcopy(yaml.safe_load((project_dir / f"Pulumi.{stack}.yaml").read_text())["config"])
        declared = set(base.pop("outpost:secrets", None) or {})
        base["outpost:hosts"]["vm"].update(address="127.0.0.1", port=vm.ssh_port, host_key=vm.host_key)
        base["outpost:admin"]["ssh_keys"] = [vm.public_key]
        for bucket in (base.get("outpost:buckets") or {}).values():
            if s3_port:
                bucket["endpoint"] = f"http://127.0.0.1:{s3_port}"
        self.config = base
        secrets = {**DEMO_SECRETS, "deploy_key": Path(vm.private_key_path).read_text()}
        self.secrets = {name: value for name, value in secrets.items() if name in declared}
        self.last = None                  # the last update, as the engine reported it
        self.sshd = SshdLog(vm)

    def up(self) -> list[Step]:
        """`pulumi up`; the Commands it ran (create, update, replace, delete), with their output."""
        self.cli.lay(self.config, self.secrets)
        try:
            self.last = self.cli.up(timeout=3600)
        except CliFailed as error:
            raise CommandFailed(error) from None
        self.sshd.user = self.config["outpost:admin"]["user"]   # root may not log in any more
        return [s for s in self.last.steps if s.type == COMMAND]

    def destroy(self) -> list[Step]:
        self.last = self.cli.destroy(timeout=1800)
        self.sshd.user = "root"                                  # the admin is gone, root is back
        return [s for s in self.last.steps if s.type == COMMAND]

    @property
    def services(self) -> dict:
        return self.config["outpost:services"]

    def ca_file(self) -> str:
        """The stack CA's certificate (the program's `ca_certificate` output)."""
        path = self.workdir / "ca.pem"
        if not path.exists():
            path.write_text(self.cli.run(["stack", "output", "ca_certificate"]).stdout)
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
