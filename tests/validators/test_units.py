"""Real tools on every rendered service unit of every stack (and the edge-case stacks).

* `systemd-analyze verify` on every native unit: system units under `--root=` a scratch tree
  (the host's /usr/lib/systemd/system, the manifest's own files such as artifacts, and an
  executable stub for each ExecStart binary that exists on this host, so a missing binary is
  still an error), user units with `--user`. Any output on stderr fails the test.
* `systemd-analyze security --offline=yes` on every process service: exposure at most 3.0.
* e2e (the Debian 13 VM, podman 5): podman's quadlet generator (`--dryrun`) on every quadlet,
  `systemd-analyze verify` on what it generates, systemd's own parse of the tricky values, and
  the hardened process units actually serving.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from components.render.manifest import File, Manifest
from tests.render.services_cases import CASES, TRICKY_ENV, rendered, stack

SYSTEM_DIR = "/etc/systemd/system/"
USER_DIR_RE = re.compile(r"^/home/[^/]+/\.config/systemd/user/[^/]+$")
UNIT_SUFFIXES = (".service", ".socket", ".timer")
EXEC_RE = re.compile(r"^Exec[A-Za-z]*=([@\-:+!|]*)(\S+)", re.M)
EXPOSURE_RE = re.compile(r"Overall exposure level for (\S+): (\d+\.\d+)")
MAX_EXPOSURE = 3.0
ENV = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_COLORS": "0", "LC_ALL": "C.UTF-8"}



def host_manifests() -> list[tuple[str, str, list[Manifest]]]:
    return [(case, host, ms) for case in CASES for host, ms in rendered(case).items() if ms]


def ids(params) -> list[str]:
    return [f"{case}-{host}" for case, host, _ in params]


HOSTS = host_manifests()


def system_units(manifests: list[Manifest]) -> list[File]:
    return [f for m in manifests for f in m.files
            if f.path.startswith(SYSTEM_DIR) and f.path.count("/") == 4 and f.path.endswith(UNIT_SUFFIXES)]


def user_units(manifests: list[Manifest]) -> list[File]:
    return [f for m in manifests for f in m.files if USER_DIR_RE.match(f.path) and f.path.endswith(UNIT_SUFFIXES)]


def write(root: Path, f: File) -> Path:
    path = root / f.path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f.content if isinstance(f.content, bytes) else f.content.encode())
    path.chmod(int(f.mode, 8))
    return path


def scratch_root(tmp: Path, manifests: list[Manifest]) -> Path:
    """A tree `systemd-analyze --root=` can resolve every unit and executable in."""
    root = tmp / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir(parents=True)
    for link in ("bin", "sbin"):
        (root / link).symlink_to("usr/bin")
    for m in manifests:
        for f in m.files:
            write(root, f)
    for f in system_units(manifests):
        for _, exe in EXEC_RE.findall(f.content):
            target = root / exe.lstrip("/")
            if not target.exists() and os.access(exe, os.X_OK):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("#!/bin/sh\n# stub: the real binary exists on this host\n")
                target.chmod(0o755)
    return root


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=kw.pop("env", ENV), timeout=120, **kw)


WITH_SYSTEM_UNITS = [h for h in HOSTS if system_units(h[2])]


@pytest.mark.parametrize("case, host, manifests", WITH_SYSTEM_UNITS, ids=ids(WITH_SYSTEM_UNITS))
def test_system_units_verify_cleanly(case, host, manifests, tmp_path):
    units = system_units(manifests)
    root = scratch_root(tmp_path, manifests)
    result = run(["systemd-analyze", f"--root={root}", "verify",
                  *[str(root / f.path.lstrip("/")) for f in units]])
    assert (result.returncode, result.stderr, result.stdout) == (0, "", ""), result.stderr


WITH_USER_UNITS = [h for h in HOSTS if user_units(h[2])]


@pytest.mark.parametrize("case, host, manifests", WITH_USER_UNITS, ids=ids(WITH_USER_UNITS))
def test_user_units_verify_cleanly(case, host, manifests, tmp_path):
    units = user_units(manifests)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    paths = [str(write(tmp_path / "home", f)) for f in units]
    result = run(["systemd-analyze", "--user", "verify", *paths],
                 env={**ENV, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(tmp_path)})
    assert (result.returncode, result.stderr, result.stdout) == (0, "", ""), result.stderr


def process_units() -> list[tuple[str, str, str, list[Manifest]]]:
    out = []
    for case, host, manifests in HOSTS:
        st = stack(case)
        for m in manifests:
            name = m.name.removeprefix("svc-")
            if st.services[name].process is not None:
                templated = bool(st.services[name].replicas or st.services[name].socket)
                out.append((case, host, f"{SYSTEM_DIR}{name}{'@' if templated else ''}.service", manifests))
    return out


PROCESS_UNITS = process_units()
SCORES: dict[str, float] = {}


@pytest.mark.parametrize("case, host, unit, manifests", PROCESS_UNITS,
                         ids=[f"{c}-{h}-{Path(u).name}" for c, h, u, _ in PROCESS_UNITS])
def test_process_units_are_sandboxed(case, host, unit, manifests, tmp_path):
    root = scratch_root(tmp_path, manifests)
    result = run(["systemd-analyze", "security", "--offline=yes", f"--root={root}",
                  f"--threshold={int(MAX_EXPOSURE * 10)}", str(root / unit.lstrip("/"))])
    match = EXPOSURE_RE.search(result.stdout)
    assert match, result.stdout + result.stderr
    SCORES[f"{case}/{host}{unit}"] = score = float(match.group(2))
    print(f"exposure {score} {case}/{host}{unit}")
    assert result.stderr == ""
    assert result.returncode == 0 and score <= MAX_EXPOSURE, result.stdout


# --- e2e: the Debian 13 VM ------------------------------------------------------------------------------------

GENERATOR = "/usr/lib/systemd/system-generators/podman-system-generator"


@pytest.fixture(scope="module")
def vm(shared_vm):
    """The session's shared VM (tests/conftest.py); these checks run last on it."""
    return shared_vm


def vm_run(vm, command: str, input: bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return vm.ssh(command, input=input, check=False, timeout=timeout)


def upload(vm, files: dict[str, bytes], modes: dict[str, str] | None = None) -> None:
    """Write files (absolute paths in the VM, 0644 unless `modes` says otherwise) in one tar stream."""
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), int((modes or {}).get(path, "0644"), 8)
            tar.addfile(info, io.BytesIO(data))
    result = vm_run(vm, "tar -C / -xf -", input=buf.getvalue())
    assert result.returncode == 0, result.stderr.decode()


def quadlet_dirs(manifests: list[Manifest]) -> dict[tuple[str, bool], dict[str, File]]:
    """Quadlet files grouped by (directory, is user dir)."""
    out: dict[tuple[str, bool], dict[str, File]] = {}
    for m in manifests:
        for f in m.files:
            if f.path.endswith(".container"):
                directory, name = os.path.split(f.path)
                out.setdefault((directory, directory.startswith("/home/")), {})[name] = f
    return out


def generated_units(stdout: str) -> dict[str, str]:
    """The units `--dryrun` printed, as ---name--- sections."""
    parts = re.split(r"^---(.+)---$", stdout, flags=re.M)
    return {parts[i]: parts[i + 1].strip() + "\n" for i in range(1, len(parts) - 1, 2)}


QUADLET_HOSTS = [(c, h, ms) for c, h, ms in HOSTS if quadlet_dirs(ms)]


@pytest.mark.e2e
@pytest.mark.parametrize("case, host, manifests", QUADLET_HOSTS, ids=ids(QUADLET_HOSTS))
def test_quadlet_generator_accepts_every_quadlet(vm, case, host, manifests):
    for n, ((directory, user), quadlets) in enumerate(sorted(quadlet_dirs(manifests).items())):
        work = f"/tmp/outpost-quadlet/{case}-{host}-{n}"
        upload(vm, {f"{work}/in/{name}": f.content.encode() for name, f in quadlets.items()})
        flag = " --user" if user else ""
        result = vm_run(vm, f"QUADLET_UNIT_DIRS={work}/in {GENERATOR}{flag} --dryrun")
        stderr = result.stderr.decode()
        noise = [line for line in stderr.splitlines()
                 if not re.fullmatch(r"quadlet-generator\[\d+\]: Loading source unit file \S+", line)]
        assert result.returncode == 0 and not noise, stderr
        generated = generated_units(result.stdout.decode())
        expected = {name.removesuffix(".container") + ".service" for name in quadlets}
        assert set(generated) == expected, generated.keys()
        # systemd itself on what quadlet generated, next to the manifest's own units of that manager
        unit_dir = directory.split("/.config/")[0] + "/.config/systemd/user" if user else SYSTEM_DIR.rstrip("/")
        own = {os.path.basename(f.path): f.content.encode() for m in manifests for f in m.files
               if os.path.dirname(f.path) == unit_dir and f.path.endswith(UNIT_SUFFIXES)}
        units = {**own, **{k: v.encode() for k, v in generated.items()}}
        upload(vm, {f"{work}/out/{k}": v for k, v in units.items()})
        paths = " ".join(shlex.quote(f"{work}/out/{k}") for k in sorted(generated))
        env = f"XDG_RUNTIME_DIR={work}/run " if user else ""
        verify = vm_run(vm, f"mkdir -p -m 0700 {work}/run && {env}systemd-analyze{flag} verify {paths}")
        assert (verify.returncode, verify.stderr.decode()) == (0, ""), verify.stderr.decode()


@pytest.mark.e2e
def test_quadlet_parses_tricky_values_as_written(vm):
    """The generated ExecStart carries every env value and command word exactly once, re-escaped by
    quadlet itself (so its parser read our quoting the way we meant it)."""
    (quadlets,) = [q for (d, user), q in quadlet_dirs(rendered("edge-haproxy")["h1"]).items() if not user]
    work = "/tmp/outpost-quadlet/tricky"
    upload(vm, {f"{work}/{name}": f.content.encode() for name, f in quadlets.items()})
    result = vm_run(vm, f"QUADLET_UNIT_DIRS={work} {GENERATOR} --dryrun")
    unit = generated_units(result.stdout.decode())["web@.service"]
    (exec_start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    for expected in ['--env "QUOTE=say \\"hi\\""', '--env "PERCENT=100%% sure %%n %%i"',
                     '--env "DOLLAR=$$HOME and $${TAG}"', '--env "BACKSLASH=a\\\\b\\\\\\\\c"',
                     '--env "SPACES=  two  spaces  "',
                     "registry.example.org:5000/team/web:${TAG} serve --greeting \"hello world\"",
                     '"it\'s 100%% $$real"', '--path "a\\\\b" --x=%i', "--publish 127.0.0.1:%i:8080",
                     "--env-file /etc/outpost/services/web.secret.env"]:
        assert expected in exec_start, (expected, exec_start)


@pytest.mark.e2e
def test_hardened_process_units_serve_and_parse_as_written(vm):
    """Install the edge stack's native units and artifacts, let systemd parse them, start the
    socket-activated and the plain service, and ask them over HTTP."""
    manifests = rendered("edge-haproxy")["h1"]
    wanted = [f for m in manifests for f in m.files
              if f.path.startswith(("/etc/systemd/system/", "/opt/")) and not f.path.endswith(".timer")]
    upload(vm, {f.path: f.content if isinstance(f.content, bytes) else f.content.encode() for f in wanted},
           {f.path: f.mode for f in wanted})
    assert vm_run(vm, "systemctl daemon-reload").returncode == 0
    shown = vm_run(vm, "systemctl show -p Environment -p ExecStart api@7100.service").stdout.decode()
    assert "MODE=blue green" in shown and "PCT=50%" in shown and "OUTPOST_INSTANCE=7100" in shown
    # systemd shows argv before variable expansion: `$$` is the literal `$` it passes at exec time
    assert "argv[]=/opt/api/api --port 7100 --motto it's 100% $$real ;" in shown
    assert "User=api" in vm_run(vm, "systemctl show -p User api@7100.service").stdout.decode()
    started = vm_run(vm, "systemctl start echo@1.socket echo@2.socket httpd.service", timeout=120)
    assert started.returncode == 0, started.stderr.decode()
    answers = vm_run(vm, "for i in $(seq 30); do curl -fsS 127.0.0.1:7200/health && curl -fsS -o /dev/null "
                         "127.0.0.1:7300/ && exit 0; sleep 1; done; exit 1", timeout=120)
    assert answers.returncode == 0, vm_run(vm, "journalctl -n 50 --no-pager").stdout.decode()
    wsgi = vm_run(vm, "curl -fsS 127.0.0.1:7200/wsgi/who").stdout.decode()
    assert '"instance": "' in wsgi
    score = vm_run(vm, "systemd-analyze security --no-pager echo@1.service | tail -1").stdout.decode()
    assert EXPOSURE_RE.search(score) and float(EXPOSURE_RE.search(score).group(2)) <= MAX_EXPOSURE, score
