"""S3-compatible buckets: one `Bucket` component per `outpost:buckets` entry.

Creates, on any S3-compatible endpoint (Hetzner Object Storage, Scaleway, MinIO, AWS), a bucket
with optional versioning, Object Lock default retention (GOVERNANCE or COMPLIANCE) and a lifecycle
rule that expires current versions after `expire_days` and noncurrent ones after
`noncurrent_expire_days` (default: with the current ones). There is no Pulumi provider for
"any S3 endpoint", so this is a `pulumi.dynamic.ResourceProvider` (`BucketProvider`) built on boto3.

Layout (the package; the provider and the component stay in this module, where Pulumi states
recorded `BucketProvider` by reference when it was one file, so every state stays loadable and its
serialized provider unchanged):

- `spec.py`: `BucketSpec`, the validated inputs, and `validate()` listing every problem at once;
- `s3.py`: plain functions that take a boto3 S3 client (`create_bucket`, `read_bucket`,
  `set_versioning`, `set_object_lock`, `set_lifecycle`, `empty_bucket`, `delete_bucket`) and raise
  `BucketError`; they are tested directly against a local S3 server;
- here: `BucketProvider`, the dynamic provider: check / diff / create / read / update / delete;
  `Bucket` + `BucketArgs`, the component (`outpost:storage:Bucket`) with one child dynamic
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

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi.dynamic

from ..dynamic import dynamic_child
from ..provider_errors import MessageOnlyErrors
from .s3 import (LIFECYCLE_RULE_ID, _describe, create_bucket, delete_bucket, empty_bucket, is_empty,
                 make_client, needs_location_constraint, read_bucket, set_lifecycle, set_object_lock,
                 set_versioning)
from .spec import (DEFAULT_LOCK_MODE, INPUT_KEYS, LOCK_MODES, OUTPUT_ONLY_KEYS, REPLACE_KEYS,
                   SECRET_INPUTS, UPDATE_KEYS, _PROVIDER_KEY, BucketError, BucketSpec, _as_int,
                   _is_unknown, bucket_name_problem, noncurrent_days, safe_endpoint, validate)

__all__ = ["Bucket", "BucketArgs", "BucketError", "BucketProvider", "BucketSpec", "DEFAULT_LOCK_MODE",
           "INPUT_KEYS", "LIFECYCLE_RULE_ID", "LOCK_MODES", "OUTPUT_ONLY_KEYS", "REPLACE_KEYS",
           "SECRET_INPUTS", "TYPE_TOKEN", "UPDATE_KEYS", "bucket_name_problem", "create_bucket",
           "delete_bucket", "empty_bucket", "is_empty", "make_client", "needs_location_constraint",
           "noncurrent_days", "read_bucket", "safe_endpoint", "set_lifecycle", "set_object_lock",
           "set_versioning", "validate"]


TYPE_TOKEN = "outpost:storage:Bucket"


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
        self.resource = dynamic_child(_BucketResource, f"{name}-bucket", args, SECRET_INPUTS, self, opts)
        self.bucket = self.resource.bucket
        self.endpoint = self.resource.endpoint
        self.region = self.resource.region
        self.register_outputs({"bucket": self.bucket, "endpoint": self.endpoint, "region": self.region})
