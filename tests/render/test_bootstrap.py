"""The static host's bootstrap and its `delete`, run by dash against stand-ins for the user
database and systemd (the real thing runs on the VM in tests/e2e/test_local_stack.py).

The stand-ins keep a tiny passwd in a directory: `useradd` adds a line, `userdel` refuses while
the user still has processes (as a real userdel does while the user manager lingers) and those
go away only after `pkill`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from components.load import load_file
from components.render.base import ADMIN_MARK, bootstrap_script, unbootstrap_script
from tests.conftest import ROOT

STUBS = {
    "id": '''if [ "$1" = -u ] && [ $# -eq 1 ]; then echo 0; exit 0; fi
if [ "$1" = -un ]; then echo "${AS_USER:-root}"; exit 0; fi
grep -q "^$2:" "$DB/passwd"''',
    "getent": 'grep "^$2:" "$DB/passwd"',
    "useradd": '''eval "name=\\${$#}"; comment=""
while [ $# -gt 1 ]; do [ "$1" = --comment ] && comment="$2"; shift; done
echo "$name:x:1000:1000:$comment:/home/$name:/bin/bash" >> "$DB/passwd"''',
    "userdel": '''eval "name=\\${$#}"
if [ -e "$DB/procs" ]; then echo "userdel: user $name is currently used by process 516" >&2; exit 8; fi
grep -v "^$name:" "$DB/passwd" > "$DB/passwd.new"; mv "$DB/passwd.new" "$DB/passwd"''',
    "pkill": '/bin/rm -f "$DB/procs"',
    "loginctl": "true",
    "sleep": "true",
    "sudo": "true",
    "install": "true",
    "tee": "cat >/dev/null",
    "chown": "true",
    "chmod": "true",
    "rm": "true",
}


@pytest.fixture
def host(tmp_path):
    bin_dir, db = tmp_path / "bin", tmp_path / "db"
    bin_dir.mkdir(), db.mkdir()
    (db / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    for name, body in STUBS.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "DB": str(db)}

    def run(script: str, **extra) -> subprocess.CompletedProcess:
        return subprocess.run(["dash", "-c", script], env={**env, **extra}, capture_output=True, text=True,
                              timeout=30)
    return run, db


@pytest.fixture(scope="module")
def stack():
    return load_file(ROOT / "Pulumi.local.yaml")


def test_destroy_removes_the_admin_the_bootstrap_made_even_while_its_processes_linger(host, stack):
    run, db = host
    made = run(bootstrap_script(stack))
    assert made.returncode == 0, made.stderr
    assert f"admin:x:1000:1000:{ADMIN_MARK}:" in (db / "passwd").read_text()
    (db / "procs").touch()                    # the admin's user manager hasn't gone yet
    gone = run(unbootstrap_script(stack))
    assert gone.returncode == 0, gone.stderr
    assert "admin admin removed" in gone.stdout
    assert "admin:" not in (db / "passwd").read_text()


def test_destroy_keeps_an_admin_user_outpost_did_not_create(host, stack):
    run, db = host
    (db / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1000:Ada:/home/admin:/bin/bash\n")
    made = run(bootstrap_script(stack))
    assert made.returncode == 0, made.stderr
    kept = run(unbootstrap_script(stack))
    assert kept.returncode == 0 and "kept (not created by outpost)" in kept.stdout
    assert "admin:x:1000:1000:Ada:" in (db / "passwd").read_text()


def test_destroy_never_deletes_the_user_it_runs_as(host, stack):
    run, db = host
    run(bootstrap_script(stack))
    kept = run(unbootstrap_script(stack), AS_USER="admin")
    assert "kept" in kept.stdout and "admin:" in (db / "passwd").read_text()


def test_destroy_gives_up_with_userdel_s_own_error_when_the_processes_never_end(host, stack, tmp_path):
    run, db = host
    run(bootstrap_script(stack))
    (db / "procs").touch()
    stubborn = tmp_path / "bin" / "pkill"
    stubborn.write_text("#!/bin/sh\ntrue\n")
    failed = run(unbootstrap_script(stack))
    assert failed.returncode != 0 and "currently used by process 516" in failed.stderr
    assert os.path.exists(db / "procs") and "admin:" in (db / "passwd").read_text()


def test_bootstrap_updates_the_package_lists_before_installing_sudo(stack):
    """A fresh image has no package lists: `apt-get install sudo` alone fails there."""
    [line] = [line for line in bootstrap_script(stack).splitlines() if "install -y -q sudo" in line]
    assert line.index("apt-get update") < line.index("apt-get install"), line
    assert line.startswith("command -v sudo >/dev/null || {")


def test_bootstrap_refuses_an_existing_admin_whose_home_is_elsewhere(host, stack):
    """The base setup writes the admin's keys below /home/<admin>; the home is looked up, and an
    account living elsewhere is not taken over."""
    run, db = host
    (db / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1000:Ada:/srv/admin:/bin/bash\n")
    made = run(bootstrap_script(stack))
    assert made.returncode == 1
    assert "user admin exists with home /srv/admin, not /home/admin" in made.stderr
    assert "ready" not in made.stdout
