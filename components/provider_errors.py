"""What a failing dynamic provider (buckets.py, geodns.py) shows the user: its error's message,
not a Python traceback.

The engine runs dynamic providers in their own process (`pulumi-resource-pulumi-python`, i.e.
`python -m pulumi.dynamic`), whose servicer reports every exception a provider raises as
`traceback.format_exc()` (pulumi/dynamic/__main__.py `_abort_with_traceback`, SDK 3.272.0): a
dozen lines of SDK and outpost frames before the one line that says what failed. Upstream keeps it
so (pulumi/pulumi#10416, open). Our providers' errors are written to be read alone (the API call,
its status and message, the bucket, never a credential), so in that process the traceback is
limited to nothing: `format_exc` honours `sys.tracebacklimit` (Lib/traceback.py), and with 0 it
prints the exception line only.

`configure` is the hook for it: the dynamic-provider process calls it once per provider, after
unpickling it and before any check/diff/create/read/update/delete (get_provider in the SDK's
__main__.py); the program's own process never calls it, so a bug in the program keeps its
traceback. Tests under mocks call the providers' methods directly and never see any of this.
"""

from __future__ import annotations

import sys

import pulumi.dynamic


class MessageOnlyErrors(pulumi.dynamic.ResourceProvider):
    """A dynamic provider whose errors reach the engine as their message alone."""

    def configure(self, req: pulumi.dynamic.ConfigureRequest) -> None:
        sys.tracebacklimit = 0
