"""The one dynamic resource inside each component built on a `pulumi.dynamic` provider
(components/buckets: `Bucket`, components/geodns: `GeoRecord`): registered the same way for both.

Its inputs are the fields of the component's Args dataclass, the secret ones (credentials, API
tokens) wrapped as secrets and also marked secret among its outputs; it is the component's child
and protected when the component is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Optional

import pulumi
import pulumi.dynamic


def dynamic_child(resource: type[pulumi.dynamic.Resource], name: str, args: Any, secret_keys: Sequence[str],
                  parent: pulumi.Resource, opts: Optional[pulumi.ResourceOptions]) -> Any:
    props: dict[str, Any] = {field.name: getattr(args, field.name) for field in dataclasses.fields(args)}
    props.update({key: pulumi.Output.secret(props[key]) for key in secret_keys})
    return resource(name, props, pulumi.ResourceOptions(
        parent=parent,
        protect=opts.protect if opts is not None else None,
        additional_secret_outputs=list(secret_keys),
    ))
