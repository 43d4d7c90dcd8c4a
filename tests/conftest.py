"""Shared test setup: the repository root on sys.path, so `components` and `tools` import, and the
one VM that the modules testing single pieces on a real host share (`shared_vm`).

Booting a VM costs about a minute under TCG, so tests/vm, tests/agent and the VM part of
tests/validators use one machine instead of three. Their tests run last and back to back, tests/vm
first (it checks the untouched image), so that VM is never up while tests/e2e boot their own fresh
ones for whole-stack deploys. With OUTPOST_TEST_VM=<state dir>, a VM already running there (e.g.
from `python tools/vm.py start --state-dir ...`) is used instead and left running.
"""

import http.server
import os
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STACKS = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))

# What the guest forward (10.0.2.100:9000 in the VM) reaches on the host: tests/vm checks it.
HOST_PAGE = b"hello from the host\n"
# The modules sharing the VM, in the order they run.
SHARED_VM_ORDER = ("tests/vm", "tests/agent", "tests/validators")


def pytest_collection_modifyitems(config, items):
    """Everything under tests/e2e and tests/vm needs the local VM: mark it `e2e`. Tests using the
    shared VM move to the end, grouped as SHARED_VM_ORDER says, each module's own order kept."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT).parts
        if parts[:2] in (("tests", "e2e"), ("tests", "vm")):
            item.add_marker(pytest.mark.e2e)

    def rank(item):
        if "shared_vm" not in item.fixturenames:
            return 0
        path = Path(str(item.fspath)).relative_to(ROOT).as_posix()
        return 1 + next(i for i, d in enumerate(SHARED_VM_ORDER + ("",)) if path.startswith(d))

    items.sort(key=rank)  # stable: order within each rank is pytest's own


def serve_page(body: bytes, port: int = 0) -> http.server.ThreadingHTTPServer:
    """Answer every GET on 127.0.0.1:PORT (0: a free port) with BODY, from a daemon thread."""
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="session")
def running_vm():
    """The VM already running in OUTPOST_TEST_VM=<state dir>, or None when that is not set."""
    from tools.vm import VM
    running = os.environ.get("OUTPOST_TEST_VM")
    if not running:
        return None
    machine = VM.attach(running)
    assert machine is not None, f"OUTPOST_TEST_VM={running}: no VM runs from there"
    return machine


@pytest.fixture(scope="session")
def host_page_port(running_vm):
    """A page on the host that only the VM's guest forward may reach (on an OUTPOST_TEST_VM, the
    port it was started with: `tools/vm.py start --guestfwd-port N`, nothing listening on N)."""
    server = serve_page(HOST_PAGE, running_vm.guestfwd_port or 0 if running_vm else 0)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def shared_vm(tmp_path_factory, host_page_port, running_vm):
    """One fresh VM from the cached image for the session (or the one OUTPOST_TEST_VM names)."""
    from tools.vm import VM
    if running_vm:
        yield running_vm
        return
    machine = VM.start(state_dir=tmp_path_factory.mktemp("shared-vm"), guestfwd_port=host_page_port)
    try:
        yield machine
    finally:
        machine.stop()
