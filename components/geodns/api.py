"""The JSON-over-HTTPS client both DNS APIs are spoken through (standard library only): one call,
its status checked, the API's own error message kept, the token scrubbed from every message.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from .model import ApiError, GeoDNSError

HTTP_TIMEOUT = 30


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _api_message(body: bytes) -> str:
    """The human part of an API error body: Gcore sends {"error": ...}, Bunny {"Message": ...}."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300] or "(empty response)"
    if isinstance(data, Mapping):
        parts = [str(data[k]) for k in ("error", "message", "Message", "detail") if data.get(k)]
        extra = [f"{k}={data[k]}" for k in ("ErrorKey", "Field") if data.get(k)]
        if parts or extra:
            return " ".join(parts + ([f"({', '.join(extra)})"] if extra else []))
    return text[:300]


class HttpApi:
    """A JSON API at BASE_URL, authenticated by HEADERS; errors become ApiError/GeoDNSError."""

    def __init__(self, label: str, base_url: str, headers: Mapping[str, str], token: str) -> None:
        self.label = label
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers)
        self.token = token

    def call(self, method: str, path: str, body: Any = None, ok: Sequence[int] = (200,)) -> Any:
        """METHOD PATH with a JSON BODY; the decoded JSON answer (None when empty)."""
        status, payload = self._send(method, path, body)
        if status not in ok:
            message = _scrub(_api_message(payload), self.token)
            hint = " (check the API token)" if status in (401, 403) else ""
            raise ApiError(f"{self.label} API {method} {path} failed: HTTP {status}: {message}{hint}", status)
        if not payload.strip():
            return None
        try:
            return json.loads(payload)
        except ValueError:
            raise GeoDNSError(f"{self.label} API {method} {path} answered HTTP {status} with non-JSON data") from None

    def _send(self, method: str, path: str, body: Any) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json", **self.headers}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = _scrub(str(getattr(exc, "reason", exc)), self.token)
            raise GeoDNSError(
                f"{self.label} API {method} {path} failed: cannot reach {self.base_url}: {reason}"
            ) from None


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")
