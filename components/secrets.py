"""The secret values the program fills into manifests and connections, each a secret Output.

Values come from `outpost:secrets` (set with `pulumi config set --secret --path
'outpost:secrets.NAME' VALUE`); the config layer only ever sees their names.
"""

from __future__ import annotations

import pulumi

from .config.model import Stack


def config_secrets(stack: Stack) -> dict[str, pulumi.Output[str]]:
    values = pulumi.Config("outpost").require_secret_object("secrets")
    return {name: values.apply(lambda v, n=name: str(v[n])) for name in sorted(stack.secrets)}
