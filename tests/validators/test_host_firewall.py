"""The base setup's host firewall and sshd drop-in, checked by the real tools: `nft -c -f` (the
check the agent runs on the staged ruleset) and `sshd -t` with the drop-in included, for every
host of every repository stack."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from components.load import load_file
from components.render.base import base_manifest
from components.render.firewall import RULESET_PATH
from tests.conftest import ROOT, STACKS

SSHD_DROPIN = "/etc/ssh/sshd_config.d/10-outpost.conf"


def hosts():
    for name in STACKS:
        stack = load_file(ROOT / f"Pulumi.{name}.yaml")
        for host in stack.hosts:
            yield name, host, {f.path: f.content for f in base_manifest(stack, host).files}


CASES = list(hosts())
IDS = [f"{name}-{host}" for name, host, _ in CASES]


@pytest.mark.parametrize("name, host, files", CASES, ids=IDS)
def test_nft_accepts_the_ruleset(name, host, files, tmp_path):
    nft = shutil.which("nft") or "/usr/sbin/nft"
    path = tmp_path / "firewall.nft"
    path.write_text(files[RULESET_PATH])
    result = subprocess.run([nft, "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr, result.stderr


@pytest.mark.parametrize("name, host, files", CASES, ids=IDS)
def test_sshd_accepts_the_dropin(name, host, files, tmp_path):
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.isdir("/run/sshd"):       # sshd -t wants its privilege separation directory
        try:
            os.makedirs("/run/sshd", mode=0o755)
        except OSError as exc:
            pytest.skip(f"sshd -t needs /run/sshd: {exc}")
    key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=60)
    dropin = tmp_path / "10-outpost.conf"
    dropin.write_text(files[SSHD_DROPIN])
    main = tmp_path / "sshd_config"
    main.write_text(f"Include {dropin}\nHostKey {key}\nPidFile none\n")
    result = subprocess.run([sshd, "-t", "-f", str(main)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr, result.stderr
    # sshd -T prints the effective settings: the drop-in's are in force
    effective = subprocess.run([sshd, "-T", "-f", str(main), "-C", "user=admin,host=h,addr=192.0.2.1"],
                               capture_output=True, text=True, timeout=60).stdout.splitlines()
    for line in ("allowusers admin", "allowtcpforwarding no", "allowagentforwarding no", "permittunnel no",
                 "allowstreamlocalforwarding no", "permitrootlogin no"):
        assert line in effective, line
