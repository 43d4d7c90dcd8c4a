"""Small bounded HTTPS load generators for the end-to-end suite, on the host against the VM's
forwarded proxy port (127.0.0.1 only); each stops by itself and counts every failure by kind.

* `Load`: N clients, one kept-alive connection each, GETs only, every response checked.
* `ClientLoad`: clients that behave like browsers and API clients (several kept-alive connections
  each, GETs and POSTs with an Idempotency-Key, retries only as RFC 9112 §9.3.1 allows), per
  operation (`phase`), with lost and duplicated POSTs proven against the app's store afterwards.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import select
import socket
import ssl
import threading
import time
import uuid
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


class _Clients:
    """The thread lifecycle both loads share: `_client(index)` runs in CLIENTS daemon threads from
    `with` until the block ends; each is joined for at most JOIN seconds."""

    clients: int
    join = 30.0

    def _start_threads(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def _client(self, index: int) -> None:
        raise NotImplementedError

    def __enter__(self):
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.join)


class Load(_Clients):
    """`with Load(...) as load: ...` runs CLIENTS loops until the block ends (or MAX_SECONDS /
    MAX_REQUESTS), then `load.result` holds what was sent and what failed."""

    def __init__(self, port: int, host: str, path: str, ca_file: str, clients: int = 6,
                 max_seconds: float = 600, max_requests: int = 20000, pause: float = 0.1):
        self.args = (port, host, path, ca_file)
        self.clients, self.max_seconds, self.max_requests, self.pause = clients, max_seconds, max_requests, pause
        self.result = LoadResult()
        self._start_threads()

    def _client(self, index: int) -> None:
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


# --- clients that behave like browsers and API clients -------------------------------------------

# An exchange that failed with one of these before any byte of a response arrived was cut by the
# connection closing (RFC 9112 §9.3.1's "asynchronous close"): a GET that met it on a reused
# connection may be sent again on a new one; a POST never is.
CLOSED_BEFORE_ANSWER = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError,
                        http.client.RemoteDisconnected, ssl.SSLEOFError, ssl.SSLZeroReturnError)


@dataclass(frozen=True)
class Target:
    """What some of the clients talk to: one hostname (TLS name and Host), GETs to PATH, POSTs to
    POSTS (None: GETs only)."""

    host: str
    path: str = "/"
    posts: str | None = "/posts"


@dataclass
class Tally:
    """What the clients saw while one operation ran. `requests` counts each request once, however
    often it was sent; `failures` (by method and kind) are the requests lost, POSTs that were
    answered but are missing from the app's store included."""

    requests: int = 0
    gets: int = 0
    posts: int = 0
    retried: int = 0            # GETs sent again on a new connection (RFC 9112 §9.3.1)
    reconnects: int = 0         # idle connections found closed before reuse (not a failure)
    failures: Counter = field(default_factory=Counter)
    slowest: float = 0.0        # seconds, the longest answered request (its retry included)
    duplicated: int = 0         # POSTs the app kept more than once (after `verify_posts`)
    redelivered: int = 0        # POSTs that reached the app more than once (a proxy resent them)
    stored_after_failure: int = 0  # POSTs the client saw fail that the app did keep
    verified: bool = False
    events: list = field(default_factory=list)   # every failure: (time, method, host, kind, detail)
    post_outcomes: dict[tuple[str, str], str] = field(default_factory=dict)  # (host, key) → "ok" | kind

    @property
    def lost(self) -> int:
        return sum(self.failures.values())


class _Counting(io.RawIOBase):
    """The response side of a socket, counting every byte received (a retry is allowed only when
    none was)."""

    def __init__(self, owner: "_CountingSocket"):
        self.owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.owner.sock.recv_into(buffer)
        self.owner.received += n
        return n

    def close(self) -> None:
        if not self.closed:
            super().close()
            self.owner.readers -= 1
            self.owner.close_when_unused()


class _CountingSocket:
    """A socket for http.client whose reads are counted; like socket.makefile, closing it while a
    response is still being read leaves the socket open until that reader is closed too."""

    def __init__(self, sock: socket.socket):
        self.sock, self.received, self.readers, self.closing = sock, 0, 0, False

    def makefile(self, mode: str, *args, **kwargs):
        self.readers += 1
        return io.BufferedReader(_Counting(self))

    def close(self) -> None:
        self.closing = True
        self.close_when_unused()

    def close_when_unused(self) -> None:
        if self.closing and not self.readers:
            self.sock.close()

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


def dropped(sock: socket.socket, timeout: float) -> bool:
    """Whether an idle kept-alive connection is unusable (the server closed it, or sent something
    unasked), checked without blocking, as clients do before they reuse one (urllib3's
    is_connection_dropped, a browser's idle-socket check). A TLS record that carries no data (a
    session ticket) does not count."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    sock.setblocking(False)
    try:
        sock.recv(1)
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(timeout)
    return True


class ClientLoad(_Clients):
    """`with ClientLoad(port, targets, ca_file) as load:` runs CLIENTS clients until the block ends
    (or MAX_SECONDS / MAX_REQUESTS): each keeps CONNECTIONS kept-alive HTTPS connections to its
    target and uses them in turn, every POST_EVERY-th request a POST carrying a unique
    Idempotency-Key (also its body), the rest GETs, PAUSE seconds apart.

    Like a careful real client: an idle connection the server closed is noticed before reuse and
    replaced; a GET whose reused connection closed before any byte of the answer is sent once more
    on a new connection (counted in `retried`); a POST is never sent twice; every other failure
    (an error status, a timeout, a cut answer, a failed retry) is a lost request, counted by kind.
    `with load.phase("switch"):` files what starts inside it under that name (else "between").
    After the load, `verify_posts(fetch)` reads each target's store (fetch(target) → the app's
    `GET /posts` document) and counts POSTs answered but not kept (lost) and kept twice
    (duplicated). Nothing is sampled."""

    def __init__(self, port: int, targets: list[Target], ca_file: str | None, clients: int = 4,
                 connections: int = 2, post_every: int = 3, pause: float = 0.05,
                 max_seconds: float = 900, max_requests: int = 50000, timeout: float = 30.0):
        self.port, self.targets, self.ca_file = port, list(targets), ca_file
        self.clients, self.connections, self.post_every, self.pause = clients, connections, post_every, pause
        self.max_seconds, self.max_requests, self.timeout = max_seconds, max_requests, timeout
        self.run = uuid.uuid4().hex[:8]
        self.tallies: dict[str, Tally] = {}
        self._phase = "between"
        self._sent = 0
        self.join = timeout + 10
        self._start_threads()
        self._context = ssl.create_default_context(cafile=ca_file) if ca_file else None

    # -- phases and results ----------------------------------------------------------------------
    @contextlib.contextmanager
    def phase(self, name: str):
        with self._lock:
            self._phase = name
            self.tallies.setdefault(name, Tally())
        try:
            yield self.tallies[name]
        finally:
            with self._lock:
                self._phase = "between"

    def verify_posts(self, fetch) -> None:
        """Compare what each target's app kept with what its clients were told."""
        for target in self.targets:
            if target.posts is None:
                continue
            listing = fetch(target)
            kept, arrived = listing["posts"], listing["deliveries"]
            ours = {key for key in kept if key.startswith(self.run + "-")} | \
                   {key for key in arrived if key.startswith(self.run + "-")}
            known = set()
            for tally in self.tallies.values():
                for (host, key), outcome in tally.post_outcomes.items():
                    if host != target.host:
                        continue
                    known.add(key)
                    times = kept.get(key, 0)
                    if outcome == "ok" and times == 0:
                        tally.failures["POST answered but not kept"] += 1
                    if outcome != "ok" and times:
                        tally.stored_after_failure += 1
                    if times > 1:
                        tally.duplicated += 1
                    if arrived.get(key, 0) > 1:
                        tally.redelivered += 1
                    tally.verified = True
            strangers = ours - known
            if strangers:
                self.tallies.setdefault("between", Tally()).failures["POST kept that no client sent"] += len(strangers)

    # -- the clients -----------------------------------------------------------------------------
    def _connect(self, host: str) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(host, self.port, timeout=self.timeout)
        raw = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        sock = self._context.wrap_socket(raw, server_hostname=host) if self._context else raw
        conn.sock = _CountingSocket(sock)
        return conn

    def _exchange(self, conns: list, slot: int, target: Target, method: str, key: str,
                  tally: Tally) -> tuple[str, bool, str]:
        """One attempt: (outcome, whether a GET may be sent again, what happened in detail)."""
        conn = conns[slot]
        if conn is not None and dropped(conn.sock.sock, self.timeout):
            conn.close()
            conn = conns[slot] = None
            with self._lock:
                tally.reconnects += 1
        reused = conn is not None
        counting = None
        try:
            if conn is None:
                conn = conns[slot] = self._connect(target.host)
            counting = conn.sock
            counting.received = 0
            if method == "POST":
                body = json.dumps({"key": key}).encode()
                conn.request("POST", target.posts, body=body, headers={
                    "Host": target.host, "Content-Type": "application/json", "Idempotency-Key": key})
            else:
                conn.request("GET", target.path, headers={"Host": target.host})
            response = conn.getresponse()
            response.read()
            if response.will_close:
                conn.close()
                conns[slot] = None
            wanted = (200, 201) if method == "POST" else (200,)
            if response.status in wanted:
                return "ok", False, ""
            return f"HTTP {response.status}", False, f"{'reused' if reused else 'new'} connection"
        except Exception as exc:  # noqa: BLE001 every failure is counted, by kind
            received = counting.received if counting is not None else 0
            if conn is not None:
                conn.close()
            conns[slot] = None
            closed_early = isinstance(exc, CLOSED_BEFORE_ANSWER) and received == 0 and reused
            kind = type(exc).__name__ + (" on a reused connection before any byte" if closed_early else "")
            detail = f"{'reused' if reused else 'new'} connection, {received} bytes received: {exc}"
            return kind, closed_early and method == "GET", detail

    def _client(self, index: int) -> None:
        target = self.targets[index % len(self.targets)]
        conns: list = [None] * self.connections
        deadline = time.monotonic() + self.max_seconds
        n = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if self._sent >= self.max_requests:
                    break
                self._sent += 1
                tally = self.tallies.setdefault(self._phase, Tally())
            n += 1
            method = "POST" if target.posts and n % self.post_every == 0 else "GET"
            key = f"{self.run}-{index}-{n}"
            started = time.monotonic()
            outcome, again, detail = self._exchange(conns, n % self.connections, target, method, key, tally)
            retried = False
            if again:
                retried = True
                outcome, _, detail = self._exchange(conns, n % self.connections, target, method, key, tally)
                if outcome != "ok":
                    outcome += " (after a retry)"
            with self._lock:
                tally.requests += 1
                tally.gets += method == "GET"
                tally.posts += method == "POST"
                tally.retried += retried
                if outcome == "ok":
                    tally.slowest = max(tally.slowest, time.monotonic() - started)
                else:
                    tally.failures[f"{method}: {outcome}"] += 1
                    tally.events.append((round(time.time(), 3), method, target.host, outcome, detail[:300]))
                if method == "POST":
                    tally.post_outcomes[(target.host, key)] = outcome
            time.sleep(self.pause)
        for conn in conns:
            if conn is not None:
                conn.close()
