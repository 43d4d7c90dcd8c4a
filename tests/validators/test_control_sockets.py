"""Local control surfaces are root's and the proxy's alone, checked with the real Caddy 2.6 and
HAProxy: Caddy's admin API listens on the rendered unix socket inside its 0700 runtime directory
(nothing on TCP 2019) and the drop-in's ExecReload reloads through it; HAProxy's admin and master
sockets get the rendered owner and modes. A process of another user (nobody, standing in for a
service user) can connect to none of them."""

from __future__ import annotations

import grp
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from components.render.proxy import (CADDY_ADMIN_SOCKET, CADDY_DROPIN, HAPROXY_DROPIN, MAIN_CONFIG,
                                     render_proxy)
from tests.render.proxy_cases import CASES

NOBODY = 65534


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect_as_nobody(path: str) -> subprocess.CompletedProcess:
    probe = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
             "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    sys.exit(13)\nprint('connected')")
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           "/usr/bin/python3", "-c", probe, path], capture_output=True, text=True, timeout=30)


def wait_for(path: Path, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{path} never appeared\n{log.read_text()}"
        time.sleep(0.1)


@pytest.fixture
def world_dir():
    """A directory every user may traverse (pytest's tmp_path is root's alone, which would hide
    what the sockets' own permissions do)."""
    path = Path(tempfile.mkdtemp(prefix="outpost-sockets-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def started():
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_caddy_admin_is_a_unix_socket_for_root_and_caddy_only(world_dir, started):
    if os.getuid() != 0 or shutil.which("caddy") is None:
        pytest.skip("needs root (to try as nobody) and caddy")
    root = str(world_dir)
    files = {f.path: f.content for f in render_proxy(CASES["caddy-none"], root=root)}
    dropin = files[f"{root}{CADDY_DROPIN}"]
    assert "RuntimeDirectory=caddy\n" in dropin and "RuntimeDirectoryMode=0700\n" in dropin
    caddyfile = files[f"{root}{MAIN_CONFIG['caddy']}"]
    assert f"\tadmin unix/{root}{CADDY_ADMIN_SOCKET}\n" in caddyfile
    http = free_port()
    for path, content in files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(content)
    main = Path(f"{root}{MAIN_CONFIG['caddy']}")
    main.write_text(caddyfile.replace("\n{\n", f"\n{{\n\thttp_port {http}\n\tdefault_bind 127.0.0.1\n", 1))
    (world_dir / "var/log/caddy").mkdir(parents=True)
    run_dir = Path(f"{root}{CADDY_ADMIN_SOCKET}").parent
    run_dir.mkdir(parents=True)
    run_dir.chmod(0o700)                                  # what RuntimeDirectoryMode=0700 makes
    log = world_dir / "caddy.log"
    with log.open("wb") as out:
        started.append(subprocess.Popen(["caddy", "run", "--config", str(main), "--adapter", "caddyfile"],
                                        stdout=out, stderr=subprocess.STDOUT, cwd=world_dir,
                                        env={"PATH": os.environ["PATH"], "HOME": str(world_dir)}))
    sock = Path(f"{root}{CADDY_ADMIN_SOCKET}")
    wait_for(sock, started[0], log)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", 2019), timeout=2).close()
    assert ":2019" not in log.read_text()
    # the drop-in's ExecReload, as systemd would run it (as root: "+"): the drain tool, then the
    # reload through the socket
    [reload] = [line.removeprefix("ExecReload=+") for line in dropin.splitlines() if line.startswith("ExecReload=+/")]
    assert f"{root}/usr/local/lib/outpost/outpost-proxy-reload" in reload
    result = subprocess.run(shlex.split(reload), capture_output=True, text=True, timeout=60,
                            env={"PATH": os.environ["PATH"], "HOME": str(world_dir)})
    assert result.returncode == 0, result.stderr
    nobody = connect_as_nobody(str(sock))
    assert nobody.returncode == 13, (nobody.stdout, nobody.stderr)


def test_haproxy_admin_and_master_sockets_are_root_and_haproxy_only(world_dir, started):
    if os.getuid() != 0 or shutil.which("haproxy") is None:
        pytest.skip("needs root (to try as nobody) and haproxy")
    files = {f.path: f.content for f in render_proxy(CASES["haproxy-none"])}
    [stats] = re.findall(r"^\tstats socket (\S+) (.*)$", files[MAIN_CONFIG["haproxy"]], re.M)
    assert stats[1] == "mode 660 user root group haproxy level admin"
    [master] = re.findall(r"^ExecStart=.* -S (\S+)$", files[HAPROXY_DROPIN], re.M)
    master_path, _, master_options = master.partition(",")
    assert master_options == "mode,600"
    admin_sock, master_sock = world_dir / "admin.sock", world_dir / "master.sock"
    config = world_dir / "haproxy.cfg"
    config.write_text(f"global\n\tstats socket {admin_sock} {stats[1]}\n"
                      "defaults\n\tmode http\n\ttimeout connect 1s\n\ttimeout client 1s\n\ttimeout server 1s\n"
                      f"frontend f\n\tbind 127.0.0.1:{free_port()}\n")
    log = world_dir / "haproxy.log"
    with log.open("wb") as out:
        started.append(subprocess.Popen(["haproxy", "-W", "-f", str(config), "-S", f"{master_sock},{master_options}"],
                                        stdout=out, stderr=subprocess.STDOUT, cwd=world_dir))
    wait_for(admin_sock, started[0], log)
    wait_for(master_sock, started[0], log)
    admin_stat, master_stat = admin_sock.stat(), master_sock.stat()
    assert stat.S_IMODE(admin_stat.st_mode) == 0o660
    assert (admin_stat.st_uid, admin_stat.st_gid) == (0, grp.getgrnam("haproxy").gr_gid)
    assert stat.S_IMODE(master_stat.st_mode) == 0o600 and master_stat.st_uid == 0
    for path in (admin_sock, master_sock):
        nobody = connect_as_nobody(str(path))
        assert nobody.returncode == 13, (path, nobody.stdout, nobody.stderr)
