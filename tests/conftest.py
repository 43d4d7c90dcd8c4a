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


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(HOST_PAGE)))
        self.end_headers()
        self.wfile.write(HOST_PAGE)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def host_page_port():
    """A page on the host that only the VM's guest forward may reach (on an OUTPOST_TEST_VM, the
    port it was started with: `tools/vm.py start --guestfwd-port N`, nothing listening on N)."""
    from tools.vm import VM
    running = os.environ.get("OUTPOST_TEST_VM")
    attached = VM.attach(running) if running else None
    port = attached.guestfwd_port or 0 if attached else 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def shared_vm(tmp_path_factory, host_page_port):
    """One fresh VM from the cached image for the session (or the one OUTPOST_TEST_VM names)."""
    from tools.vm import VM
    running = os.environ.get("OUTPOST_TEST_VM")
    if running:
        machine = VM.attach(running)
        assert machine is not None, f"OUTPOST_TEST_VM={running}: no VM runs from there"
        yield machine
        return
    machine = VM.start(state_dir=tmp_path_factory.mktemp("shared-vm"), guestfwd_port=host_page_port)
    try:
        yield machine
    finally:
        machine.stop()
