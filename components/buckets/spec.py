"""A bucket's inputs: checked (every problem at once, each naming its key) and held as a
`BucketSpec`; the endpoint shown without credentials. Pure: no network, no Pulumi engine.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
DEFAULT_LOCK_MODE = "GOVERNANCE"
SECRET_INPUTS = ("access_key", "secret_key")
# Inputs whose change needs a new bucket; every other input is updated in place.
REPLACE_KEYS = ("bucket", "endpoint", "region")
UPDATE_KEYS = (
    "access_key",
    "secret_key",
    "versioning",
    "object_lock_days",
    "object_lock_mode",
    "expire_days",
    "noncurrent_expire_days",
    "force_destroy",
)
INPUT_KEYS = REPLACE_KEYS + UPDATE_KEYS
# Output-only properties: what read() finds on the real bucket beyond the inputs.
OUTPUT_ONLY_KEYS = ("object_lock_enabled",)
_PROVIDER_KEY = "__provider"
_UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # pulumi.runtime.rpc.UNKNOWN (preview placeholder)
_BUCKET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class BucketError(Exception):
    """A bucket operation failed; the message says which, on which bucket, and why."""


@dataclass(frozen=True)
class BucketSpec:
    """The validated, normalised inputs of one bucket."""

    bucket: str
    endpoint: str
    region: str
    access_key: str
    secret_key: str
    versioning: bool = False
    object_lock_days: Optional[int] = None
    object_lock_mode: str = DEFAULT_LOCK_MODE
    expire_days: Optional[int] = None
    noncurrent_expire_days: Optional[int] = None
    force_destroy: bool = False

    @property
    def noncurrent_days(self) -> Optional[int]:
        """When noncurrent versions expire: noncurrent_expire_days, else with expire_days."""
        return noncurrent_days(self.expire_days, self.noncurrent_expire_days)

    @classmethod
    def from_props(cls, props: Mapping[str, Any]) -> "BucketSpec":
        """Build from engine props (numbers arrive as floats, optional keys may be missing)."""
        missing = [k for k in ("bucket", "endpoint", "access_key", "secret_key") if not props.get(k)]
        if missing:
            raise BucketError(f"missing required bucket properties: {', '.join(missing)}")
        return cls(
            bucket=str(props["bucket"]),
            endpoint=str(props["endpoint"]),
            region=str(props.get("region") or ""),
            access_key=str(props["access_key"]),
            secret_key=str(props["secret_key"]),
            versioning=bool(props.get("versioning") or False),
            object_lock_days=_as_int(props.get("object_lock_days")),
            object_lock_mode=str(props.get("object_lock_mode") or DEFAULT_LOCK_MODE),
            expire_days=_as_int(props.get("expire_days")),
            noncurrent_expire_days=_as_int(props.get("noncurrent_expire_days")),
            force_destroy=bool(props.get("force_destroy") or False),
        )

    def inputs(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in INPUT_KEYS}

    def outputs(self) -> dict[str, Any]:
        """Inputs plus what a bucket built from them reports (secrets returned as given)."""
        return {
            **self.inputs(),
            "object_lock_enabled": self.object_lock_days is not None,
            # what the lifecycle rule does to noncurrent versions (read() reports the same)
            "noncurrent_expire_days": self.noncurrent_days,
        }


def noncurrent_days(expire_days: Optional[int], noncurrent_expire_days: Optional[int]) -> Optional[int]:
    return noncurrent_expire_days if noncurrent_expire_days is not None else expire_days


def _as_int(value: Any) -> Any:
    """Integral floats (how protobuf carries numbers) → int; anything else unchanged."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _is_unknown(value: Any) -> bool:
    return value == _UNKNOWN


def safe_endpoint(endpoint: Any) -> str:
    """The endpoint as it may appear in messages: without any user:password@ part."""
    try:
        parts = urlsplit(str(endpoint))
    except ValueError:
        return "<invalid endpoint>"
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        parts = parts._replace(netloc=host)
    return urlunsplit(parts)


def bucket_name_problem(name: str) -> Optional[str]:
    """Why NAME is not a valid S3 bucket name, or None when it is."""
    if not 3 <= len(name) <= 63:
        return f"bucket name {name!r} must be 3 to 63 characters long (it has {len(name)})"
    if not _BUCKET_NAME_RE.match(name):
        return (
            f"bucket name {name!r} may contain only lowercase letters, digits, '-' and '.', "
            "and must start and end with a letter or digit"
        )
    if ".." in name or ".-" in name or "-." in name:
        return f"bucket name {name!r} must not contain '..', '.-' or '-.'"
    try:
        ipaddress.IPv4Address(name)
        return f"bucket name {name!r} must not look like an IP address"
    except ValueError:
        pass
    for prefix in ("xn--", "sthree-", "amzn-s3-demo-"):
        if name.startswith(prefix):
            return f"bucket name {name!r} must not start with {prefix!r}"
    for suffix in ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"):
        if name.endswith(suffix):
            return f"bucket name {name!r} must not end with {suffix!r}"
    return None


def _positive_days_problem(key: str, value: Any) -> Optional[str]:
    value = _as_int(value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{key} must be a whole number of days or null (got {type(value).__name__})"
    if value <= 0:
        return f"{key} must be greater than 0 (got {value}); use null to turn it off"
    return None


def validate(props: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Every problem with the bucket inputs, as (property, reason). Unknown values pass."""
    failures: list[tuple[str, str]] = []

    def fail(key: str, reason: str) -> None:
        failures.append((key, reason))

    for key in props:
        if key not in INPUT_KEYS and key not in OUTPUT_ONLY_KEYS and key != _PROVIDER_KEY:
            fail(key, f"unknown bucket property {key!r}; known: {', '.join(INPUT_KEYS)}")

    name = props.get("bucket")
    if not _is_unknown(name):
        if not isinstance(name, str) or not name:
            fail("bucket", "bucket name is required")
        elif (problem := bucket_name_problem(name)) is not None:
            fail("bucket", problem)

    endpoint = props.get("endpoint")
    if not _is_unknown(endpoint):
        if not isinstance(endpoint, str) or not endpoint:
            fail("endpoint", "endpoint is required, e.g. https://hel1.your-objectstorage.com")
        else:
            try:
                parts = urlsplit(endpoint)
                has_userinfo = parts.username is not None or parts.password is not None
                port_ok = parts.port is None or parts.port > 0
            except ValueError:
                parts, has_userinfo, port_ok = None, False, False
            if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
                fail("endpoint", "endpoint must be an http:// or https:// URL with a host, "
                     "e.g. https://hel1.your-objectstorage.com")
            elif has_userinfo:
                fail("endpoint", "endpoint must not contain credentials; use access_key and secret_key")

    region = props.get("region")
    if not _is_unknown(region):
        if not isinstance(region, str) or not region:
            fail("region", "region is required (e.g. hel1, fr-par, us-east-1)")
        elif not _REGION_RE.match(region):
            fail("region", f"region {region!r} may contain only letters, digits, '.', '_' and '-'")

    for key in SECRET_INPUTS:
        value = props.get(key)
        if not _is_unknown(value) and (not isinstance(value, str) or not value):
            fail(key, f"{key} is required (a non-empty string, normally from outpost:secrets)")

    for key in ("versioning", "force_destroy"):
        value = props.get(key)
        if value is not None and not _is_unknown(value) and not isinstance(value, bool):
            fail(key, f"{key} must be true or false (got {type(value).__name__})")

    for key in ("object_lock_days", "expire_days", "noncurrent_expire_days"):
        value = props.get(key)
        if not _is_unknown(value) and (problem := _positive_days_problem(key, value)) is not None:
            fail(key, problem)

    mode = props.get("object_lock_mode")
    if mode is not None and not _is_unknown(mode) and mode not in LOCK_MODES:
        fail("object_lock_mode", f"object_lock_mode must be GOVERNANCE or COMPLIANCE (got {mode!r})")

    lock_days = props.get("object_lock_days")
    versioning = props.get("versioning")
    if (
        lock_days is not None
        and not _is_unknown(lock_days)
        and not _is_unknown(versioning)
        and versioning is not True
    ):
        fail("versioning", "object_lock_days requires versioning: true "
             "(Object Lock works on object versions and S3 cannot suspend versioning on a locked bucket)")
    return failures
