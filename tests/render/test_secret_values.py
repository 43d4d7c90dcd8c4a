"""Secret values in every file format a secret can land in: the value arrives intact, as data,
or is refused with an error that names the secret and the file but never shows the value.

Every place: each file of every repository stack and render case that holds a `<secret:NAME>`
(podman env files, systemd env files of process services and backups, secret_files, PEM bundles,
WireGuard configs), filled with a value holding ' " $ ` % \\ and a shell command, then read back
the way its reader reads it; newline and NUL go where the format can carry them and are refused
where it cannot.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys

import pytest

from components.render import render_stack
from components.render.backups import ENV_LOADER, backup_manifests
from components.render.manifest import Manifest
from components.render.secret_values import FORMATS, SecretValueError
from tests.render.services_cases import CASES, stack
from tests.render.test_backups import BACKUPS, stack_with

MARK = "hunter2-MARK"
# Every character the issue names, a command that must never run, and a recognisable marker.
NASTY = "' \" $ ` % \\ $(touch PWNED) `touch PWNED` '; touch PWNED; ' %i $HOME \\n " + MARK


def secret_files() -> list[tuple[str, str, str, str]]:
    """(case, host, manifest, path) of every rendered file that holds a secret."""
    found = []
    for case in CASES:
        for host, manifests in render_stack(stack(case)).items():
            for m in manifests:
                found += [(case, host, m.name, f.path) for f in m.files if f.secrets]
    return found


PLACES = secret_files()


def _manifest(case: str, host: str, name: str) -> Manifest:
    return next(m for m in render_stack(stack(case))[host] if m.name == name)


def _filled(m: Manifest, path: str, value: str) -> str:
    """PATH's content with every secret in it set to VALUE (the file alone: the same secret may
    also land in a file of another format, tested on its own)."""
    one = Manifest(name=m.name, files=[f for f in m.files if f.path == path])
    doc = json.loads(one.encode({s: value for s in one.secrets}))
    return doc["files"][0]["content"]


def read_systemd_env(tmp_path, text: str) -> dict[str, str]:
    """The variables a systemd env file sets, read by the restore scripts' loader (never sourced)."""
    env_file = tmp_path / "x.env"
    env_file.write_text(text)
    out = subprocess.run([sys.executable, "-c", ENV_LOADER, str(env_file), "/usr/bin/env", "-0"],
                         capture_output=True, check=True, env={}, cwd=tmp_path).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if item)


def test_every_place_is_covered():
    formats = {_manifest(c, h, m).files[[f.path for f in _manifest(c, h, m).files].index(p)].secret_format
               for c, h, m, p in PLACES}
    assert formats == set(FORMATS), formats


@pytest.mark.parametrize("case, host, name, path", PLACES)
def test_a_secret_lands_intact_and_inert(case, host, name, path, tmp_path):
    m = _manifest(case, host, name)
    f = next(f for f in m.files if f.path == path)
    assert f.secret_format in FORMATS
    assert not (path.endswith(".env") and f.secret_format == "raw"), "an env file needs its format declared"
    value = "x" + NASTY if f.secret_format == "podman-env" else NASTY   # podman: no leading quote
    text = _filled(m, path, value)
    assert not (tmp_path / "PWNED").exists()
    if f.secret_format == "raw":
        assert text == f.content.replace(f"<secret:{f.secrets[0]}>", value) if len(f.secrets) == 1 else value in text
    elif f.secret_format == "systemd-env":
        env = read_systemd_env(tmp_path, text)
        keys = [line.split("=", 1)[0] for line in f.content.splitlines() if "<secret:" in line]
        assert keys and all(env[k] == value for k in keys), (keys, env)
        assert not (tmp_path / "PWNED").exists()
    elif f.secret_format == "podman-env":     # podman: KEY=rest of the line, literally
        values = dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
        keys = [line.split("=", 1)[0] for line in f.content.splitlines() if "<secret:" in line]
        assert keys and all(values[k] == value for k in keys)
    else:
        assert value in text and text.count("\n") == f.content.count("\n")


@pytest.mark.parametrize("case, host, name, path", PLACES)
@pytest.mark.parametrize("bad", ["two\nlines", "nul\0byte", "cr\rhere"])
def test_a_value_the_format_cannot_hold_is_refused_without_showing_it(case, host, name, path, bad):
    m = _manifest(case, host, name)
    f = next(f for f in m.files if f.path == path)
    value = f"{MARK} {bad}"
    if f.secret_format == "raw":
        assert value in _filled(m, path, value)     # a file that *is* the value holds anything
        return
    with pytest.raises(SecretValueError) as info:
        _filled(m, path, value)
    message = str(info.value)
    assert MARK not in message and bad not in message
    assert path in message and "secret '" in message


def test_podman_env_refuses_a_leading_quote():
    m = _manifest("edge-haproxy", "h1", "svc-web")
    with pytest.raises(SecretValueError, match="starts with a quote") as info:
        _filled(m, "/etc/outpost/services/web.secret.env", f"'{MARK}")
    assert MARK not in str(info.value)


def test_the_restore_script_reads_the_env_file_as_data(tmp_path):
    """The review's case: a restic password holding ' made the root restore script run a command
    (it sourced the env file). The real rendered script runs here with a fake restic."""
    [m] = [m for m in backup_manifests(stack_with(BACKUPS["restic"]), "vps1") if m.name == "backup-nextcloud"]
    env_path, script_path = "/etc/outpost/backup/nextcloud.env", "/usr/local/sbin/outpost-restore-nextcloud"
    files = {f["path"]: f["content"] for f in json.loads(m.encode({s: NASTY for s in m.secrets}))["files"]}
    (tmp_path / "nextcloud.env").write_text(files[env_path])
    fake = tmp_path / "restic"
    fake.write_text(f"#!/bin/sh\nprintf '%s' \"$RESTIC_PASSWORD\" > {shlex.quote(str(tmp_path / 'seen'))}\n")
    script = tmp_path / "restore"
    script.write_text(files[script_path].replace(shlex.quote(env_path), shlex.quote(str(tmp_path / "nextcloud.env")))
                      .replace("/usr/bin/restic", shlex.quote(str(fake))))
    for p in (fake, script):
        p.chmod(p.stat().st_mode | stat.S_IXUSR)
    proc = subprocess.run([str(script), "--list"], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "PWNED").exists()
    assert (tmp_path / "seen").read_text() == NASTY
