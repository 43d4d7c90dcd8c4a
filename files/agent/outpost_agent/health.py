"""Asking what runs whether it is well: one HTTP health probe (127.0.0.1 only, no redirects,
no proxies), haproxy's admin socket (drain, ready, sessions) and the kernel's TCP tables (what is
still connected to a replica's port).

Touches nothing on disk; every call is bounded by a timeout.
"""

import http.client
import socket
import urllib.error
import urllib.request

from .base import AgentError, one_line


def probe(url, timeout):
    """GET url once; return (healthy, 'HTTP status: body' or 'connection error: ...')."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)
    try:
        with opener.open(url, timeout=timeout) as resp:
            status, body = resp.status, resp.read(500)
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read(500)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        return False, f"connection error: {getattr(e, 'reason', e)}"
    return 200 <= status < 300, f"HTTP {status}: {one_line(body.decode('utf-8', 'replace'), 500)}"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def haproxy_command(sock_path, command, timeout=5):
    """Send one command to haproxy's admin socket; return its answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(sock_path)
            s.sendall(command.encode() + b"\n")
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
    except OSError as e:
        raise AgentError(f"haproxy admin socket {sock_path}: {command!r} failed: {e}") from None
    return b"".join(chunks).decode("utf-8", "replace")


def haproxy_sessions(sock_path, backend, server):
    """Current sessions of BACKEND/SERVER, from `show stat`."""
    lines = haproxy_command(sock_path, "show stat").splitlines()
    header = lines[0].lstrip("# ").split(",") if lines else []
    for line in lines[1:]:
        row = dict(zip(header, line.split(",")))
        if row.get("pxname") == backend and row.get("svname") == server:
            return int(row.get("scur") or 0)
    raise AgentError(f"haproxy at {sock_path} has no server {backend}/{server}")


TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
ESTABLISHED, SYN_RECV, LISTEN = "01", "03", "0A"


def port_connections(port, tables=TCP_TABLES):
    """What still ties the local TCP PORT to its clients: connections established or being set
    up, and connections waiting in a listening socket's accept queue (its rx_queue in
    /proc/net/tcp is the queue's length)."""
    count = 0
    for table in tables:
        try:
            with open(table, encoding="ascii") as lines:
                next(lines, None)
                for line in lines:
                    fields = line.split()
                    if len(fields) < 5 or int(fields[1].rsplit(":", 1)[1], 16) != port:
                        continue
                    if fields[3] in (ESTABLISHED, SYN_RECV):
                        count += 1
                    elif fields[3] == LISTEN:
                        count += int(fields[4].split(":")[1], 16)
        except FileNotFoundError:   # no IPv6 in this kernel
            continue
    return count
