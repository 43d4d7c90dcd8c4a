"""The S3 calls, no Pulumi: plain functions over a boto3 client for any S3-compatible endpoint
(path-style, s3v4, checksums only where the API requires them) that create, read, configure,
empty and delete one bucket and raise `BucketError` naming the call and the S3 error code.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from .spec import DEFAULT_LOCK_MODE, BucketError, noncurrent_days

LIFECYCLE_RULE_ID = "outpost-expire"
_NOT_FOUND_CODES = {"404", "NoSuchBucket", "NotFound"}
_NO_LOCK_CODES = {
    "ObjectLockConfigurationNotFoundError",
    "NoSuchObjectLockConfiguration",
    "ObjectLockConfigurationNotFound",
    "InvalidBucketState",
}
_NO_LIFECYCLE_CODES = {"NoSuchLifecycleConfiguration"}
_SESSION: Optional[boto3.session.Session] = None
_SESSION_LOCK = threading.Lock()


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
    with _s3("create", name):
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
                raise
            exists = False
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
    with _s3("create", name):
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
            raise

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
    with _s3("read", name):
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
            raise
    state["exists"] = True

    with _s3("read versioning of", name):
        status = client.get_bucket_versioning(Bucket=name).get("Status")
    state["versioning_status"] = status
    state["versioning"] = status == "Enabled"

    with _s3("read Object Lock of", name):
        try:
            lock = client.get_object_lock_configuration(Bucket=name).get("ObjectLockConfiguration", {})
        except ClientError as exc:
            if _error_code(exc) not in _NO_LOCK_CODES:
                raise
            lock = {}
    state["object_lock_enabled"] = lock.get("ObjectLockEnabled") == "Enabled"
    retention = lock.get("Rule", {}).get("DefaultRetention") or {}
    if retention:
        state["object_lock_mode"] = retention.get("Mode")
        days = retention.get("Days")
        if days is None and retention.get("Years") is not None:
            days = int(retention["Years"]) * 365
        state["object_lock_days"] = days

    with _s3("read lifecycle of", name):
        try:
            rules = client.get_bucket_lifecycle_configuration(Bucket=name).get("Rules", [])
        except ClientError as exc:
            if _error_code(exc) not in _NO_LIFECYCLE_CODES:
                raise
            rules = []
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
    with _s3("delete", name):
        try:
            client.delete_bucket(Bucket=name)
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND_CODES:
                return
            if _error_code(exc) == "BucketNotEmpty":
                raise BucketError(not_empty) from None
            raise
