"""Route hostnames once `{suffix}` is filled in: DNS names the proxies (and DNS) take. The model
checks each hostname's shape as written; only with the stack's suffix is its final length known.

Pure: `check(stack)` yields (key path, message) per bad hostname.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .model import Stack

LABEL_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def check(stack: Stack) -> Iterator[tuple[str, str]]:
    for i, route in enumerate(stack.routes):
        host = stack.with_suffix(route.host)
        if route.host.startswith("*."):
            continue  # wildcard routes: refused by checks.py with their own message
        if len(host) > 253 or not all(LABEL_RE.match(label) for label in host.split(".")):
            yield (f"routes[{i}].host", f"{host!r} (with {{suffix}} filled in) is not a DNS name: labels of 1-63 "
                   "characters a-z 0-9 -, not starting or ending with '-', 253 characters in all")
