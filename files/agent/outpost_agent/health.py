"""Asking what runs whether it is well: one HTTP health probe (127.0.0.1 only, no redirects,
no proxies) and haproxy's admin socket (drain, ready, sessions).

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
