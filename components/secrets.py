"""The secret values the program fills into manifests and connections, each a secret Output.

Values come from `outpost:secrets` (set with `pulumi config set --secret --path
'outpost:secrets.NAME' VALUE`); the config layer only ever sees their names.

Short secrets get a warning (`pulumi.log.warn`, naming the secret, never showing it). The Pulumi CLI
masks every secret value it knows wherever it appears inside any text it prints: diagnostics,
property values, the diff (CLI v3.274.1: pkg/engine/events.go filters each through
sdk/go/common/util/logging/log.go `FilterString`, a `strings.Replacer` over all secret values of
3 characters or more, "true" and "false" left out). So a short value also hides ordinary text that
happens to contain it: the secret `tok` turned an hcloud error's "token" into "[secret]en". And a
value under 3 characters is not masked at all. The threshold is 16 characters:
- every credential outpost is built to take is longer (S3 access key ids 20, Hetzner Cloud tokens
  64, Gcore and Bunny API keys dozens, SSH private keys hundreds; `make up` generates 32), so
  the warning is never noise for a real credential;
- output is full of hex and base64 (digests in Command lines, keys, certificates): a 16-character
  value, even one made of hex digits only, turns up by chance in a megabyte of such text with odds
  of about 1e6/16^16 ≈ 1e-13, an 8-character one with about 1e6/16^8 ≈ 2e-4, and a word far more
  often.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import pulumi

from .config.model import Stack

SHORT_SECRET = 16


def short_secrets(values: Mapping[str, Any]) -> list[str]:
    """The keys of VALUES whose value is shorter than SHORT_SECRET characters, sorted."""
    return sorted(key for key, value in values.items() if value is not None and len(str(value)) < SHORT_SECRET)


def warn_short_secrets(values: Mapping[str, Any]) -> None:
    for key in short_secrets(values):
        # No example in the text: the CLI masks the value in this warning too, wherever it occurs.
        pulumi.log.warn(
            f"{key} is shorter than {SHORT_SECRET} characters: the Pulumi CLI masks a secret's value "
            "wherever it appears in what it prints, so a value this short also hides ordinary text that "
            "contains it, and one under 3 characters is not masked at all; use a value of "
            f"{SHORT_SECRET} characters or more")


def config_secrets(stack: Stack) -> dict[str, pulumi.Output[str]]:
    values = pulumi.Config("outpost").require_secret_object("secrets")
    # Checked where the values are known: the program (the config layer sees names only). The
    # applies need no consumer: the SDK awaits every outstanding Output before the program ends.
    values.apply(lambda v: warn_short_secrets({f"outpost:secrets.{n}": v.get(n) for n in sorted(stack.secrets)}))
    token: Optional[pulumi.Output[str]] = pulumi.Config("hcloud").get_secret("token")
    if token is not None:
        token.apply(lambda t: warn_short_secrets({"hcloud:token": t}))
    return {name: values.apply(lambda v, n=name: str(v[n])) for name in sorted(stack.secrets)}
