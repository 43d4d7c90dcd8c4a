"""S3-compatible buckets: one `Bucket` component per `outpost:buckets` entry.

Creates, on any S3-compatible endpoint (Hetzner Object Storage, Scaleway, MinIO, AWS), a bucket
with optional versioning, Object Lock default retention (GOVERNANCE or COMPLIANCE) and a lifecycle
rule that expires current versions after `expire_days` and noncurrent ones after
`noncurrent_expire_days` (default: with the current ones). There is no Pulumi provider for
"any S3 endpoint", so this is a `pulumi.dynamic.ResourceProvider` (`BucketProvider`) built on boto3.

Layout:

- plain functions that take a boto3 S3 client (`create_bucket`, `read_bucket`, `set_versioning`,
  `set_object_lock`, `set_lifecycle`, `empty_bucket`, `delete_bucket`) and raise `BucketError`;
  they are tested directly against a local S3 server;
- `BucketProvider`, the dynamic provider: check / diff / create / read / update / delete;
- `Bucket` + `BucketArgs`, the component (`outpost:storage:Bucket`) with one child dynamic
  resource `f"{name}-bucket"`.

Decisions:

- The resource id is the bucket name. `bucket`, `endpoint` and `region` changes replace, always
  delete-before-replace (bucket names are global per endpoint).
- Object Lock: turning it on for a bucket created without it replaces the bucket. AWS can enable
  Object Lock on an existing versioned bucket, but Hetzner (Ceph), MinIO and most others accept it
  only at creation, so replacement is the one behaviour that works everywhere. Replacement deletes
  first, which fails with a clear message while the bucket holds data and `force_destroy` is false,
  so data is never dropped implicitly. Object Lock cannot be switched off once on; setting
  `object_lock_days` to null removes the default retention rule and keeps lock enabled.
  `object_lock_days` requires `versioning: true` (S3 cannot suspend versioning on a locked bucket).
- LocationConstraint is sent when `region` is set and is not `us-east-1` (AWS semantics, which
  moto enforces: it rejects a missing or mismatched constraint outside us-east-1 and any
  constraint inside it). Hetzner (`fsn1`, `nbg1`, `hel1`) and Scaleway (`fr-par`, ...) name their
  regions like their endpoints, so the constraint matches; MinIO uses `us-east-1` unless configured
  otherwise. An endpoint that rejects the constraint gets an error naming the region, never a
  silent retry without it (that could put the bucket in the wrong place).
- Path-style addressing (supported by all four, required for IP endpoints) and checksums only
  where the API requires them (boto3 >= 1.36 otherwise sends CRC headers that several
  S3-compatible servers reject).
- Credentials never appear in errors or logs: messages are built from S3 error codes, and every
  message leaving the provider is scrubbed of both keys; endpoints are shown without userinfo.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

import boto3
import pulumi
import pulumi.dynamic
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from .provider_errors import MessageOnlyErrors

TYPE_TOKEN = "outpost:storage:Bucket"
LIFECYCLE_RULE_ID = "outpost-expire"
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

_NOT_FOUND_CODES = {"404", "NoSuchBucket", "NotFound"}
_NO_LOCK_CODES = {
    "ObjectLockConfigurationNotFoundError",
    "NoSuchObjectLockConfiguration",
    "ObjectLockConfigurationNotFound",
    "InvalidBucketState",
}
_NO_LIFECYCLE_CODES = {"NoSuchLifecycleConfiguration"}
_BUCKET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


_SESSION: Optional[boto3.session.Session] = None
_SESSION_LOCK = threading.Lock()


class BucketError(Exception):
    """A bucket operation failed; the message says which, on which bucket, and why."""


# --------------------------------------------------------------------------------------------
# Inputs


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


# --------------------------------------------------------------------------------------------
# boto3 logic, no Pulumi


def make_client(endpoint: str, region: str, access_key: str, secret_key: str) -> Any:
    """A boto3 S3 client for an S3-compatible endpoint (path-style, s3v4)."""
    config = BotoConfig(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 5, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    global _SESSION
    # One session per process caches the loaded S3 model; creating clients from a shared session
    # is not thread-safe (the provider serves requests on a thread pool), hence the lock.
    with _SESSION_LOCK:
        if _SESSION is None:
            _SESSION = boto3.session.Session()
        return _SESSION.client(
            "s3",
            endpoint_url=endpoint,
            region_name=region or "us-east-1",
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
        )


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _describe(exc: Exception) -> str:
    """An S3 error as code + message, without request details."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        message = err.get("Message") or ""
        return f"{code}: {message}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


@contextmanager
def _s3(action: str, name: str) -> Iterator[None]:
    """Turn boto errors into BucketError("<action> bucket 'x': <code>: <message>")."""
    try:
        yield
    except BucketError:
        raise
    except (ClientError, BotoCoreError) as exc:
        raise BucketError(f"{action} bucket {name!r} failed: {_describe(exc)}") from None


def needs_location_constraint(region: Optional[str]) -> bool:
    """S3 wants LocationConstraint for every region except us-east-1 (where it must be absent)."""
    return bool(region) and region != "us-east-1"


def create_bucket(
    client: Any,
    name: str,
    *,
    region: Optional[str] = None,
    versioning: bool = False,
    object_lock_days: Optional[int] = None,
    object_lock_mode: str = DEFAULT_LOCK_MODE,
    expire_days: Optional[int] = None,
    noncurrent_expire_days: Optional[int] = None,
) -> None:
    """Create NAME and configure it. If configuring fails, the new (empty) bucket is removed again
    so a retry does not trip over a half-made bucket."""
    # Refuse to adopt: AWS us-east-1 answers 200 to re-creating a bucket you own, and adopting one
    # would let a later destroy delete a bucket this stack never made.
    try:
        client.head_bucket(Bucket=name)
        exists = True
    except ClientError as exc:
        if _error_code(exc) in ("403", "AccessDenied", "Forbidden"):
            raise BucketError(
                f"bucket name {name!r} is taken by another account on this endpoint; "
                "bucket names are global, choose another"
            ) from None
        if _error_code(exc) not in _NOT_FOUND_CODES:
            raise BucketError(f"create bucket {name!r} failed: {_describe(exc)}") from None
        exists = False
    except BotoCoreError as exc:
        raise BucketError(f"create bucket {name!r} failed: {_describe(exc)}") from None
    if exists:
        raise BucketError(
            f"bucket {name!r} already exists and belongs to these credentials; import it "
            "(pulumi import) or delete it before creating it here"
        )

    kwargs: dict[str, Any] = {"Bucket": name}
    if needs_location_constraint(region):
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    if object_lock_days is not None:
        kwargs["ObjectLockEnabledForBucket"] = True
    try:
        client.create_bucket(**kwargs)
    except ClientError as exc:
        code = _error_code(exc)
        if code == "BucketAlreadyOwnedByYou":
            raise BucketError(
                f"bucket {name!r} already exists and belongs to these credentials; import it "
                f"(pulumi import) or delete it before creating it here"
            ) from None
        if code == "BucketAlreadyExists":
            raise BucketError(
                f"bucket name {name!r} is taken by another account on this endpoint; "
                "bucket names are global, choose another"
            ) from None
        if "LocationConstraint" in code:
            raise BucketError(
                f"create bucket {name!r} failed: the endpoint rejected region {region!r} as "
                f"LocationConstraint ({_describe(exc)}); set region to the endpoint's own region "
                "name (e.g. hel1, fr-par), or us-east-1 for servers without regions"
            ) from None
        raise BucketError(f"create bucket {name!r} failed: {_describe(exc)}") from None
    except BotoCoreError as exc:
        raise BucketError(f"create bucket {name!r} failed: {_describe(exc)}") from None

    try:
        if versioning:
            set_versioning(client, name, True)
        if object_lock_days is not None:
            set_object_lock(client, name, object_lock_days, object_lock_mode)
        if expire_days is not None or noncurrent_expire_days is not None:
            set_lifecycle(client, name, expire_days, noncurrent_expire_days)
    except BucketError as exc:
        try:
            client.delete_bucket(Bucket=name)
            note = "the new bucket was removed again"
        except (ClientError, BotoCoreError) as cleanup:
            note = f"removing the new bucket failed too ({_describe(cleanup)}); delete it by hand"
        raise BucketError(f"{exc}; {note}") from None


def read_bucket(client: Any, name: str) -> dict[str, Any]:
    """The real state of NAME.

    Keys: exists, versioning (bool), versioning_status ("Enabled" | "Suspended" | None),
    object_lock_enabled, object_lock_mode, object_lock_days, expire_days, noncurrent_expire_days.
    A missing bucket gives {"exists": False} plus None/False for the rest.
    """
    state: dict[str, Any] = {
        "exists": False,
        "versioning": False,
        "versioning_status": None,
        "object_lock_enabled": False,
        "object_lock_mode": None,
        "object_lock_days": None,
        "expire_days": None,
        "noncurrent_expire_days": None,
    }
    try:
        client.head_bucket(Bucket=name)
    except ClientError as exc:
        if _error_code(exc) in _NOT_FOUND_CODES:
            return state
        if _error_code(exc) in ("403", "AccessDenied", "Forbidden"):
            raise BucketError(
                f"read bucket {name!r} failed: access denied; the credentials cannot see this "
                "bucket (it may belong to another account)"
            ) from None
        raise BucketError(f"read bucket {name!r} failed: {_describe(exc)}") from None
    except BotoCoreError as exc:
        raise BucketError(f"read bucket {name!r} failed: {_describe(exc)}") from None
    state["exists"] = True

    with _s3("read versioning of", name):
        status = client.get_bucket_versioning(Bucket=name).get("Status")
    state["versioning_status"] = status
    state["versioning"] = status == "Enabled"

    try:
        lock = client.get_object_lock_configuration(Bucket=name).get("ObjectLockConfiguration", {})
    except ClientError as exc:
        if _error_code(exc) not in _NO_LOCK_CODES:
            raise BucketError(f"read Object Lock of bucket {name!r} failed: {_describe(exc)}") from None
        lock = {}
    except BotoCoreError as exc:
        raise BucketError(f"read Object Lock of bucket {name!r} failed: {_describe(exc)}") from None
    state["object_lock_enabled"] = lock.get("ObjectLockEnabled") == "Enabled"
    retention = lock.get("Rule", {}).get("DefaultRetention") or {}
    if retention:
        state["object_lock_mode"] = retention.get("Mode")
        days = retention.get("Days")
        if days is None and retention.get("Years") is not None:
            days = int(retention["Years"]) * 365
        state["object_lock_days"] = days

    try:
        rules = client.get_bucket_lifecycle_configuration(Bucket=name).get("Rules", [])
    except ClientError as exc:
        if _error_code(exc) not in _NO_LIFECYCLE_CODES:
            raise BucketError(f"read lifecycle of bucket {name!r} failed: {_describe(exc)}") from None
        rules = []
    except BotoCoreError as exc:
        raise BucketError(f"read lifecycle of bucket {name!r} failed: {_describe(exc)}") from None
    for rule in rules:
        if rule.get("ID") == LIFECYCLE_RULE_ID and rule.get("Status") == "Enabled":
            state["expire_days"] = rule.get("Expiration", {}).get("Days")
            state["noncurrent_expire_days"] = rule.get("NoncurrentVersionExpiration", {}).get(
                "NoncurrentDays"
            )
    return state


def set_versioning(client: Any, name: str, enabled: bool) -> None:
    """Enable versioning, or suspend it (S3 cannot turn it fully off once it was on)."""
    with _s3("set versioning on", name):
        client.put_bucket_versioning(
            Bucket=name,
            VersioningConfiguration={"Status": "Enabled" if enabled else "Suspended"},
        )


def set_object_lock(client: Any, name: str, days: Optional[int], mode: str = DEFAULT_LOCK_MODE) -> None:
    """Set the default retention (DAYS in MODE) of a lock-enabled bucket; None removes the rule
    (Object Lock itself stays on: S3 cannot disable it)."""
    config: dict[str, Any] = {"ObjectLockEnabled": "Enabled"}
    if days is not None:
        config["Rule"] = {"DefaultRetention": {"Mode": mode, "Days": int(days)}}
    with _s3("set Object Lock on", name):
        client.put_object_lock_configuration(Bucket=name, ObjectLockConfiguration=config)


def set_lifecycle(
    client: Any, name: str, expire_days: Optional[int], noncurrent_expire_days: Optional[int] = None
) -> None:
    """Expire current versions after EXPIRE_DAYS and noncurrent versions after
    NONCURRENT_EXPIRE_DAYS (default: EXPIRE_DAYS too). With only NONCURRENT_EXPIRE_DAYS, current
    versions stay forever: what a restic repository on a versioned bucket needs (old versions of
    its files go, the files it still has stay). Neither: the rule is removed."""
    noncurrent = noncurrent_days(expire_days, noncurrent_expire_days)
    with _s3("set lifecycle on", name):
        if expire_days is None and noncurrent is None:
            client.delete_bucket_lifecycle(Bucket=name)
            return
        rule: dict[str, Any] = {"ID": LIFECYCLE_RULE_ID, "Status": "Enabled", "Filter": {"Prefix": ""}}
        if expire_days is not None:
            rule["Expiration"] = {"Days": int(expire_days)}
        rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": int(noncurrent)}
        client.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [rule]})


def _first_page(client: Any, name: str, limit: int = 1000) -> list[dict[str, str]]:
    """Up to LIMIT object versions and delete markers of NAME, as delete_objects entries."""
    with _s3("list objects of", name):
        page = client.list_object_versions(Bucket=name, MaxKeys=limit)
    entries = page.get("Versions", []) + page.get("DeleteMarkers", [])
    return [{"Key": e["Key"], "VersionId": e.get("VersionId") or "null"} for e in entries][:limit]


def is_empty(client: Any, name: str) -> bool:
    """True when NAME holds no object versions and no delete markers."""
    return not _first_page(client, name, limit=1)


def empty_bucket(client: Any, name: str, *, bypass_governance: bool = True, page_size: int = 1000) -> int:
    """Delete every object version, delete marker and unfinished upload in NAME.

    With BYPASS_GOVERNANCE, GOVERNANCE-mode retention is bypassed (the credentials need that
    right). COMPLIANCE-mode retention cannot be bypassed by anyone: such versions make this raise
    BucketError naming them. Deletes PAGE_SIZE (at most 1000, the S3 limit) per request.
    Returns how many versions and markers were deleted.
    """
    deleted = 0
    while batch := _first_page(client, name, limit=page_size):
        kwargs: dict[str, Any] = {"Bucket": name, "Delete": {"Objects": batch, "Quiet": True}}
        if bypass_governance:
            kwargs["BypassGovernanceRetention"] = True
        with _s3("delete objects of", name):
            response = client.delete_objects(**kwargs)
        errors = response.get("Errors", [])
        deleted += len(batch) - len(errors)
        if errors:
            shown = ", ".join(
                f"{e.get('Key')}@{e.get('VersionId', '?')} ({e.get('Code', 'error')})" for e in errors[:5]
            )
            more = f" and {len(errors) - 5} more" if len(errors) > 5 else ""
            raise BucketError(
                f"emptying bucket {name!r} failed: {len(errors)} object version(s) could not be "
                f"deleted: {shown}{more}. Versions under COMPLIANCE retention (or GOVERNANCE "
                "retention without the right to bypass it) stay until their retention ends"
            )
    with _s3("list uploads of", name):
        uploads = client.list_multipart_uploads(Bucket=name).get("Uploads", [])
    for upload in uploads:
        with _s3("abort uploads of", name):
            client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    return deleted


def delete_bucket(client: Any, name: str, *, force_destroy: bool = False) -> None:
    """Delete NAME. With FORCE_DESTROY empty it first; without, refuse while it holds anything.
    A bucket that is already gone is fine."""
    state = read_bucket(client, name)
    if not state["exists"]:
        return
    not_empty = (
        f"bucket {name!r} is not empty: it still holds objects, object versions or delete markers. "
        "Empty it yourself, or set force_destroy: true (and apply) to delete its contents with it"
    )
    if force_destroy:
        empty_bucket(client, name, bypass_governance=state["object_lock_enabled"])
    elif not is_empty(client, name):
        raise BucketError(not_empty)
    try:
        client.delete_bucket(Bucket=name)
    except ClientError as exc:
        if _error_code(exc) in _NOT_FOUND_CODES:
            return
        if _error_code(exc) == "BucketNotEmpty":
            raise BucketError(not_empty) from None
        raise BucketError(f"delete bucket {name!r} failed: {_describe(exc)}") from None
    except BotoCoreError as exc:
        raise BucketError(f"delete bucket {name!r} failed: {_describe(exc)}") from None


# --------------------------------------------------------------------------------------------
# Dynamic provider


def _scrub(message: str, *secrets: Optional[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            message = message.replace(secret, "***")
    return message


@contextmanager
def _clean_errors(props: Mapping[str, Any]) -> Iterator[None]:
    """Re-raise any failure as BucketError whose text holds no credentials and no traceback chain."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - everything leaving the provider is scrubbed
        message = str(exc) if isinstance(exc, BucketError) else _describe(exc)
        endpoint = props.get("endpoint")
        if endpoint and str(endpoint) not in message:
            message = f"{message} (endpoint {safe_endpoint(endpoint)})"
        message = _scrub(message, props.get("access_key"), props.get("secret_key"))
        if endpoint and str(endpoint) != safe_endpoint(endpoint):
            message = message.replace(str(endpoint), safe_endpoint(endpoint))
        raise BucketError(message) from None


def _client_for(spec: BucketSpec) -> Any:
    return make_client(spec.endpoint, spec.region, spec.access_key, spec.secret_key)


class BucketProvider(MessageOnlyErrors):
    """CRUD for one S3-compatible bucket; see the module docstring for the rules it follows."""

    # The serialized provider holds no secrets (credentials are inputs), but keep Pulumi's default.
    serialize_as_secret_always = True

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.CheckResult:
        failures = [pulumi.dynamic.CheckFailure(k, reason) for k, reason in validate(news)]
        inputs = {k: _as_int(v) for k, v in news.items() if k in INPUT_KEYS}
        inputs.setdefault("versioning", False)
        inputs.setdefault("force_destroy", False)
        inputs.setdefault("object_lock_days", None)
        inputs.setdefault("expire_days", None)
        inputs.setdefault("noncurrent_expire_days", None)
        if inputs.get("object_lock_mode") is None:
            inputs["object_lock_mode"] = DEFAULT_LOCK_MODE
        if inputs.get("versioning") is None:
            inputs["versioning"] = False
        if inputs.get("force_destroy") is None:
            inputs["force_destroy"] = False
        return pulumi.dynamic.CheckResult(inputs, failures)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        def norm(props: Mapping[str, Any], key: str) -> Any:
            value = _as_int(props.get(key))
            if key in ("versioning", "force_destroy") and value is None:
                return False
            if key == "object_lock_mode" and value is None:
                return DEFAULT_LOCK_MODE
            if key == "region" and value is None:
                return ""
            return value

        changed: list[str] = []
        replaces: list[str] = []
        for key in INPUT_KEYS:
            old, new = norm(olds, key), norm(news, key)
            if key == "object_lock_mode" and norm(news, "object_lock_days") is None:
                continue  # the mode means nothing without a retention rule
            if key == "noncurrent_expire_days":
                # compared as what the rule does: unset means "with expire_days"; the old output
                # holds what the rule did when last applied or read (drift included)
                new = noncurrent_days(norm(news, "expire_days"), new)
                if _is_unknown(new) or _is_unknown(norm(news, "expire_days")) or new != old:
                    changed.append(key)
                continue
            if _is_unknown(new) or new != old:
                changed.append(key)
                if key in REPLACE_KEYS:
                    replaces.append(key)

        # Object Lock can only be switched on when the bucket is created (on most providers).
        new_lock = norm(news, "object_lock_days")
        old_lock_enabled = olds.get("object_lock_enabled")
        if old_lock_enabled is None:
            old_lock_enabled = norm(olds, "object_lock_days") is not None
        if new_lock is not None and not old_lock_enabled:
            if "object_lock_days" not in changed:
                changed.append("object_lock_days")
            replaces.append("object_lock_days")

        return pulumi.dynamic.DiffResult(
            changes=bool(changed),
            replaces=replaces,
            stables=[],
            delete_before_replace=True,
        )

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        with _clean_errors(props):
            spec = BucketSpec.from_props(props)
            create_bucket(
                _client_for(spec),
                spec.bucket,
                region=spec.region,
                versioning=spec.versioning,
                object_lock_days=spec.object_lock_days,
                object_lock_mode=spec.object_lock_mode,
                expire_days=spec.expire_days,
                noncurrent_expire_days=spec.noncurrent_expire_days,
            )
            return pulumi.dynamic.CreateResult(spec.bucket, spec.outputs())

    def read(self, id_: str, props: dict[str, Any]) -> pulumi.dynamic.ReadResult:
        with _clean_errors(props):
            if not props.get("endpoint") or not props.get("access_key") or not props.get("secret_key"):
                raise BucketError(
                    f"read bucket {id_!r} failed: no endpoint and credentials in its state; "
                    "declare it in the stack config with the same name instead of importing it bare"
                )
            spec = BucketSpec.from_props({**props, "bucket": id_})
            state = read_bucket(_client_for(spec), id_)
            if not state["exists"]:
                return pulumi.dynamic.ReadResult("", {})
            outs = {k: v for k, v in props.items() if k != _PROVIDER_KEY}
            outs.update(
                bucket=id_,
                versioning=state["versioning"],
                object_lock_enabled=state["object_lock_enabled"],
                object_lock_days=state["object_lock_days"],
                expire_days=state["expire_days"],
                noncurrent_expire_days=state["noncurrent_expire_days"],
            )
            if state["object_lock_mode"] is not None:
                outs["object_lock_mode"] = state["object_lock_mode"]
            return pulumi.dynamic.ReadResult(id_, outs)

    def update(
        self, _id: str, _olds: dict[str, Any], news: dict[str, Any]
    ) -> pulumi.dynamic.UpdateResult:
        with _clean_errors(news):
            spec = BucketSpec.from_props(news)
            client = _client_for(spec)
            state = read_bucket(client, spec.bucket)
            name = spec.bucket
            if not state["exists"]:
                raise BucketError(
                    f"bucket {name!r} no longer exists; run `pulumi refresh` and apply again to recreate it"
                )
            if not spec.versioning and state["object_lock_enabled"]:
                raise BucketError(
                    f"bucket {name!r} has Object Lock enabled, so its versioning cannot be suspended; "
                    "keep versioning: true (or replace the bucket under a new name)"
                )
            if spec.object_lock_days is not None and not state["object_lock_enabled"]:
                raise BucketError(
                    f"bucket {name!r} was created without Object Lock, which most S3 providers "
                    "cannot enable later; replace the bucket (e.g. with a new name) to turn it on"
                )

            if spec.versioning != state["versioning"] and (spec.versioning or state["versioning_status"]):
                set_versioning(client, name, spec.versioning)
            if state["object_lock_enabled"] and (
                spec.object_lock_days != state["object_lock_days"]
                or (spec.object_lock_days is not None and spec.object_lock_mode != state["object_lock_mode"])
            ):
                set_object_lock(client, name, spec.object_lock_days, spec.object_lock_mode)
            if spec.expire_days != state["expire_days"] or spec.noncurrent_days != state["noncurrent_expire_days"]:
                set_lifecycle(client, name, spec.expire_days, spec.noncurrent_expire_days)

            outs = spec.outputs()
            outs["object_lock_enabled"] = state["object_lock_enabled"]
            return pulumi.dynamic.UpdateResult(outs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        with _clean_errors(props):
            spec = BucketSpec.from_props({**props, "bucket": id_})
            delete_bucket(_client_for(spec), id_, force_destroy=spec.force_destroy)


# --------------------------------------------------------------------------------------------
# Component


class _BucketResource(pulumi.dynamic.Resource, module="outpost", name="Bucket"):
    """The dynamic resource behind `Bucket` (type pulumi-python:dynamic/outpost:Bucket)."""

    bucket: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    region: pulumi.Output[str]
    versioning: pulumi.Output[bool]
    object_lock_enabled: pulumi.Output[bool]
    object_lock_days: pulumi.Output[Optional[int]]
    object_lock_mode: pulumi.Output[str]
    expire_days: pulumi.Output[Optional[int]]
    noncurrent_expire_days: pulumi.Output[Optional[int]]
    access_key: pulumi.Output[str]
    secret_key: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(BucketProvider(), name, {**props, **dict.fromkeys(OUTPUT_ONLY_KEYS)}, opts)


@dataclass
class BucketArgs:
    """Inputs of one `Bucket` (one `outpost:buckets` entry with its secrets resolved)."""

    bucket: pulumi.Input[str]
    endpoint: pulumi.Input[str]
    region: pulumi.Input[str]
    access_key: pulumi.Input[str]
    secret_key: pulumi.Input[str]
    versioning: pulumi.Input[bool] = False
    object_lock_days: Optional[pulumi.Input[int]] = None
    object_lock_mode: pulumi.Input[str] = DEFAULT_LOCK_MODE
    expire_days: Optional[pulumi.Input[int]] = None
    noncurrent_expire_days: Optional[pulumi.Input[int]] = None
    force_destroy: pulumi.Input[bool] = False


class Bucket(pulumi.ComponentResource):
    """An S3-compatible bucket with its versioning, Object Lock and lifecycle settings.

    Outputs: `bucket` (name), `endpoint`, `region`.
    """

    bucket: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    region: pulumi.Output[str]

    def __init__(self, name: str, args: BucketArgs, opts: Optional[pulumi.ResourceOptions] = None) -> None:
        super().__init__(TYPE_TOKEN, name, None, opts)
        props: dict[str, Any] = {
            "bucket": args.bucket,
            "endpoint": args.endpoint,
            "region": args.region,
            "access_key": pulumi.Output.secret(args.access_key),
            "secret_key": pulumi.Output.secret(args.secret_key),
            "versioning": args.versioning,
            "object_lock_days": args.object_lock_days,
            "object_lock_mode": args.object_lock_mode,
            "expire_days": args.expire_days,
            "noncurrent_expire_days": args.noncurrent_expire_days,
            "force_destroy": args.force_destroy,
        }
        self.resource = _BucketResource(
            f"{name}-bucket",
            props,
            pulumi.ResourceOptions(
                parent=self,
                protect=opts.protect if opts is not None else None,
                additional_secret_outputs=list(SECRET_INPUTS),
            ),
        )
        self.bucket = self.resource.bucket
        self.endpoint = self.resource.endpoint
        self.region = self.resource.region
        self.register_outputs({"bucket": self.bucket, "endpoint": self.endpoint, "region": self.region})
