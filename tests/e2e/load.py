"""A small bounded HTTPS load generator for the end-to-end suite: N clients on the host against the
VM's forwarded proxy port (127.0.0.1 only), each request checked; stops by itself."""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failures: Counter = field(default_factory=Counter)
    bodies: Counter = field(default_factory=Counter)
    slowest: float = 0.0  # seconds, the longest answered request (a proxy may hold one while replicas restart)

    @property
    def lost(self) -> int:
        return self.sent - self.ok


def https_get(port: int, host: str, path: str, ca_file: str, timeout: float = 30.0,
              method: str = "GET", body: bytes | None = None) -> tuple[int, str]:
    """One request through the proxy as a browser would send it (SNI and Host = HOST), verified
    against the stack's CA."""
    context = ssl.create_default_context(cafile=ca_file)
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.sock = context.wrap_socket(raw, server_hostname=host)
        conn.request(method, path, body=body, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()
        raw.close()


class Load:
    """`with Load(...) as load: ...` runs CLIENTS loops until the block ends (or MAX_SECONDS /
    MAX_REQUESTS), then `load.result` holds what was sent and what failed."""

    def __init__(self, port: int, host: str, path: str, ca_file: str, clients: int = 6,
                 max_seconds: float = 600, max_requests: int = 20000, pause: float = 0.1):
        self.args = (port, host, path, ca_file)
        self.clients, self.max_seconds, self.max_requests, self.pause = clients, max_seconds, max_requests, pause
        self.result = LoadResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _client(self) -> None:
        """One client: a kept-alive HTTPS connection (as a browser keeps one), reopened after an
        error; every response must be 200."""
        port, host, path, ca_file = self.args
        context = ssl.create_default_context(cafile=ca_file)
        conn = None
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if self.result.sent >= self.max_requests:
                    break
                self.result.sent += 1
            started = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=30)
                    conn.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), 30),
                                                    server_hostname=host)
                conn.request("GET", path, headers={"Host": host})
                response = conn.getresponse()
                body = response.read().decode(errors="replace")
                outcome = "ok" if response.status == 200 else f"HTTP {response.status}"
            except Exception as exc:  # noqa: BLE001 every failure is counted, by kind
                outcome, body = type(exc).__name__, ""
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                if outcome == "ok":
                    self.result.ok += 1
                    self.result.slowest = max(self.result.slowest, time.monotonic() - started)
                    self.result.bodies[body.strip()[:80]] += 1
                else:
                    self.result.failures[outcome] += 1
            time.sleep(self.pause)
        if conn is not None:
            conn.close()

    def __enter__(self) -> "Load":
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
