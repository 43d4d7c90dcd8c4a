"""Tests for components/buckets/ against moto's S3 server over real HTTP on 127.0.0.1.

The boto3 functions and the BucketProvider methods are called directly (no Pulumi engine); the
Bucket component is checked under pulumi.runtime.set_mocks.
"""

from __future__ import annotations

import base64
import itertools
import logging
import sys
from pathlib import Path
from typing import Any, Iterator

import dill
import pytest
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import pulumi  # noqa: E402
from pulumi.dynamic.dynamic import serialize_provider  # noqa: E402

from components import buckets  # noqa: E402
from components.program import install_mocks  # noqa: E402
from components.buckets import (  # noqa: E402
    Bucket,
    BucketArgs,
    BucketError,
    BucketProvider,
    create_bucket,
    delete_bucket,
    empty_bucket,
    make_client,
    read_bucket,
)

ACCESS_KEY = "OUTPOSTTESTACCESSKEY"
SECRET_KEY = "outpost-test-secret-key-do-not-print"
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
_names = itertools.count()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(params=["hel1", "us-east-1"], scope="module")
def region(request: pytest.FixtureRequest) -> str:
    """hel1 sends a LocationConstraint (moto requires it outside us-east-1); us-east-1 must not."""
    return request.param


@pytest.fixture
def client(endpoint: str, region: str) -> Any:
    return make_client(endpoint, region, ACCESS_KEY, SECRET_KEY)


@pytest.fixture
def provider() -> BucketProvider:
    return BucketProvider()


def fresh_name(prefix: str = "outpost-test") -> str:
    return f"{prefix}-{next(_names)}"


def props(endpoint: str, region: str, **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "bucket": fresh_name(),
        "endpoint": endpoint,
        "region": region,
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "versioning": False,
        "object_lock_days": None,
        "object_lock_mode": "GOVERNANCE",
        "expire_days": None,
        "force_destroy": False,
    }
    base.update(overrides)
    return base


def put(client: Any, bucket: str, key: str, body: bytes = b"data") -> str:
    # Object Lock buckets demand a checksum on upload (as AWS does).
    return client.put_object(Bucket=bucket, Key=key, Body=body, ChecksumAlgorithm="CRC32").get("VersionId")


def assert_no_credentials(message: str) -> None:
    assert ACCESS_KEY not in message
    assert SECRET_KEY not in message


# ---------------------------------------------------------------------------------------------
# check


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("ab", "3 to 63"),
        ("x" * 64, "3 to 63"),
        ("Upper-Case", "lowercase"),
        ("under_score", "lowercase"),
        ("-leading", "start and end"),
        ("trailing-", "start and end"),
        ("two..dots", "'..'"),
        ("192.168.10.1", "IP address"),
        ("xn--punycode", "'xn--'"),
        ("name-s3alias", "'-s3alias'"),
    ],
)
def test_check_rejects_bad_bucket_names(provider: BucketProvider, name: str, fragment: str) -> None:
    result = provider.check({}, props("https://hel1.example.com", "hel1", bucket=name))
    assert [f.property for f in result.failures] == ["bucket"]
    assert fragment in result.failures[0].reason


def test_check_reports_every_problem_at_once(provider: BucketProvider) -> None:
    bad = props(
        "ftp://nowhere",
        "",
        bucket="OK_no",
        access_key="",
        object_lock_days=0,
        object_lock_mode="STRICT",
        expire_days=-3.0,
        versioning=True,
        colour="blue",
    )
    failures = {f.property: f.reason for f in provider.check({}, bad).failures}
    assert set(failures) == {
        "bucket", "endpoint", "region", "access_key", "object_lock_days", "object_lock_mode",
        "expire_days", "colour",
    }
    assert "greater than 0" in failures["object_lock_days"]
    assert "GOVERNANCE or COMPLIANCE" in failures["object_lock_mode"]
    assert "unknown bucket property 'colour'" in failures["colour"]


def test_check_lock_requires_versioning(provider: BucketProvider) -> None:
    result = provider.check({}, props("https://hel1.example.com", "hel1", object_lock_days=30))
    assert [(f.property, "requires versioning" in f.reason) for f in result.failures] == [("versioning", True)]


def test_check_rejects_credentials_in_endpoint_without_echoing_them(provider: BucketProvider) -> None:
    endpoint = f"https://{ACCESS_KEY}:{SECRET_KEY}@hel1.example.com"
    result = provider.check({}, props(endpoint, "hel1"))
    assert [f.property for f in result.failures] == ["endpoint"]
    assert_no_credentials(result.failures[0].reason)


def test_check_fills_defaults_coerces_numbers_and_lets_unknowns_pass(provider: BucketProvider) -> None:
    news = {
        "bucket": UNKNOWN,
        "endpoint": "https://hel1.example.com",
        "region": "hel1",
        "access_key": UNKNOWN,
        "secret_key": UNKNOWN,
        "expire_days": 90.0,
        "object_lock_enabled": None,  # output-only keys the component declares are dropped
    }
    result = provider.check({}, news)
    assert result.failures == []
    assert result.inputs == {
        "bucket": UNKNOWN,
        "endpoint": "https://hel1.example.com",
        "region": "hel1",
        "access_key": UNKNOWN,
        "secret_key": UNKNOWN,
        "expire_days": 90,
        "noncurrent_expire_days": None,
        "versioning": False,
        "force_destroy": False,
        "object_lock_days": None,
        "object_lock_mode": "GOVERNANCE",
    }
    assert isinstance(result.inputs["expire_days"], int)


# ---------------------------------------------------------------------------------------------
# create / read


def test_create_with_versioning_lock_lifecycle_and_read_back(
    endpoint: str, region: str, client: Any, provider: BucketProvider
) -> None:
    p = props(endpoint, region, versioning=True, object_lock_days=30.0, expire_days=90.0)
    created = provider.create(p)
    assert created.id == p["bucket"]
    assert created.outs["access_key"] == ACCESS_KEY and created.outs["secret_key"] == SECRET_KEY
    assert created.outs["object_lock_enabled"] is True
    assert created.outs["object_lock_days"] == 30 and created.outs["expire_days"] == 90

    state = read_bucket(client, p["bucket"])
    assert state == {
        "exists": True,
        "versioning": True,
        "versioning_status": "Enabled",
        "object_lock_enabled": True,
        "object_lock_mode": "GOVERNANCE",
        "object_lock_days": 30,
        "expire_days": 90,
        "noncurrent_expire_days": 90,
    }
    if region != "us-east-1":
        location = client.get_bucket_location(Bucket=p["bucket"])["LocationConstraint"]
        assert location == region

    read = provider.read(created.id, {**created.outs, "__provider": "x"})
    assert read.id == p["bucket"]
    assert read.outs == created.outs  # no drift: the state matches what create reported
    # and the engine's own diff against the refreshed state is empty
    assert provider.diff(created.id, read.outs, p).changes is False


def test_noncurrent_expiry_alone_expires_old_versions_and_keeps_current_ones(
    endpoint: str, region: str, client: Any, provider: BucketProvider
) -> None:
    """A restic repository on a versioned bucket: versions a newer one replaced (or a delete
    marker hid) go after N days; the current objects, which later snapshots still need, stay."""
    p = props(endpoint, region, versioning=True, noncurrent_expire_days=30.0)
    created = provider.create(p)
    assert created.outs["expire_days"] is None and created.outs["noncurrent_expire_days"] == 30
    rules = client.get_bucket_lifecycle_configuration(Bucket=p["bucket"])["Rules"]
    assert len(rules) == 1 and "Expiration" not in rules[0]
    assert rules[0]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    state = read_bucket(client, p["bucket"])
    assert state["expire_days"] is None and state["noncurrent_expire_days"] == 30

    read = provider.read(created.id, {**created.outs, "__provider": "x"})
    assert read.outs == created.outs and provider.diff(created.id, read.outs, p).changes is False

    # from there to expiring everything after 90 days, and back to noncurrent versions only
    both = {**p, "expire_days": 90, "noncurrent_expire_days": None}
    assert provider.diff(created.id, read.outs, both).changes is True
    updated = provider.update(created.id, read.outs, both)
    state = read_bucket(client, p["bucket"])
    assert (state["expire_days"], state["noncurrent_expire_days"]) == (90, 90)
    assert provider.diff(created.id, updated.outs, p).changes is True
    provider.update(created.id, updated.outs, p)
    state = read_bucket(client, p["bucket"])
    assert (state["expire_days"], state["noncurrent_expire_days"]) == (None, 30)


def test_noncurrent_expiry_drift_is_found_and_repaired(
    endpoint: str, region: str, client: Any, provider: BucketProvider
) -> None:
    p = props(endpoint, region, versioning=True, noncurrent_expire_days=30)
    created = provider.create(p)
    buckets.set_lifecycle(client, p["bucket"], None, 5)   # behind the provider's back
    read = provider.read(created.id, created.outs)
    assert read.outs["noncurrent_expire_days"] == 5
    assert provider.diff(created.id, read.outs, p).changes is True
    provider.update(created.id, read.outs, p)
    assert read_bucket(client, p["bucket"])["noncurrent_expire_days"] == 30


def test_check_refuses_a_non_positive_noncurrent_expiry(provider: BucketProvider) -> None:
    result = provider.check({}, props("https://hel1.example.com", "hel1", noncurrent_expire_days=0))
    assert [f.property for f in result.failures] == ["noncurrent_expire_days"]


def test_create_plain_bucket_reads_back_plain(endpoint: str, region: str, client: Any, provider: BucketProvider) -> None:
    p = props(endpoint, region)
    provider.create(p)
    state = read_bucket(client, p["bucket"])
    assert state["exists"] is True
    assert state["versioning"] is False and state["versioning_status"] is None
    assert state["object_lock_enabled"] is False and state["object_lock_days"] is None
    assert state["expire_days"] is None


def test_create_refuses_to_adopt_an_existing_bucket(
    endpoint: str, region: str, client: Any, provider: BucketProvider
) -> None:
    p = props(endpoint, region)
    provider.create(p)
    with pytest.raises(BucketError, match="already exists") as err:
        provider.create(p)
    assert_no_credentials(str(err.value))


def test_read_reports_drift_and_update_repairs_it(
    endpoint: str, region: str, client: Any, provider: BucketProvider
) -> None:
    p = props(endpoint, region, versioning=True, expire_days=14)
    created = provider.create(p)

    # Behind the provider's back: suspend versioning and change the lifecycle rule.
    client.put_bucket_versioning(Bucket=p["bucket"], VersioningConfiguration={"Status": "Suspended"})
    buckets.set_lifecycle(client, p["bucket"], 3)

    read = provider.read(created.id, created.outs)
    assert read.id == p["bucket"]
    assert read.outs["versioning"] is False
    assert read.outs["expire_days"] == 3

    diff = provider.diff(created.id, read.outs, p)
    assert diff.changes is True and diff.replaces == []

    updated = provider.update(created.id, read.outs, p)
    assert updated.outs["versioning"] is True
    state = read_bucket(client, p["bucket"])
    assert state["versioning"] is True and state["expire_days"] == 14


def test_read_of_deleted_bucket_returns_no_id(endpoint: str, region: str, client: Any, provider: BucketProvider) -> None:
    p = props(endpoint, region)
    created = provider.create(p)
    client.delete_bucket(Bucket=p["bucket"])
    result = provider.read(created.id, created.outs)
    assert not result.id
    assert read_bucket(client, p["bucket"])["exists"] is False


# ---------------------------------------------------------------------------------------------
# diff / update


def test_diff_replaces_on_identity_changes_only(provider: BucketProvider) -> None:
    old = {**props("https://hel1.example.com", "hel1", bucket="keep"), "object_lock_enabled": False,
           "noncurrent_expire_days": None, "__provider": "p"}
    assert provider.diff("keep", old, props("https://hel1.example.com", "hel1", bucket="keep")).changes is False
    for key, value in [("bucket", "other"), ("endpoint", "https://fsn1.example.com"), ("region", "fsn1")]:
        diff = provider.diff("keep", old, {**old, key: value})
        assert diff.changes is True and diff.replaces == [key] and diff.delete_before_replace is True
    for key, value in [("versioning", True), ("expire_days", 5), ("force_destroy", True), ("secret_key", "new")]:
        diff = provider.diff("keep", old, {**old, key: value})
        assert diff.changes is True and diff.replaces == [], key
    # an unknown bucket name (preview) might be a new one
    assert provider.diff("keep", old, {**old, "bucket": UNKNOWN}).replaces == ["bucket"]


def test_diff_replaces_when_object_lock_is_turned_on(provider: BucketProvider) -> None:
    unlocked = {**props("https://hel1.example.com", "hel1", bucket="keep", versioning=True),
                "object_lock_enabled": False, "noncurrent_expire_days": None}
    diff = provider.diff("keep", unlocked, {**unlocked, "object_lock_days": 30})
    assert diff.replaces == ["object_lock_days"] and diff.delete_before_replace is True

    locked = {**unlocked, "object_lock_days": 30, "object_lock_enabled": True}
    diff = provider.diff("keep", locked, {**locked, "object_lock_days": 60, "object_lock_mode": "COMPLIANCE"})
    assert diff.changes is True and diff.replaces == []
    # dropping the retention rule keeps the (locked) bucket
    diff = provider.diff("keep", locked, {**locked, "object_lock_days": None})
    assert diff.changes is True and diff.replaces == []


def test_update_changes_lifecycle_days_and_lock_retention(
    endpoint: str, region: str, client: Any, provider: BucketProvider
) -> None:
    p = props(endpoint, region, versioning=True, object_lock_days=1, expire_days=30)
    created = provider.create(p)
    new = {**p, "object_lock_days": 7.0, "object_lock_mode": "COMPLIANCE", "expire_days": 60.0}
    diff = provider.diff(created.id, created.outs, new)
    assert diff.changes is True and diff.replaces == []

    updated = provider.update(created.id, created.outs, new)
    assert updated.outs["object_lock_days"] == 7 and updated.outs["expire_days"] == 60
    state = read_bucket(client, p["bucket"])
    assert state["object_lock_mode"] == "COMPLIANCE" and state["object_lock_days"] == 7
    assert state["expire_days"] == 60 and state["noncurrent_expire_days"] == 60

    # Turning both off: lifecycle rule deleted, lock stays enabled without a default rule.
    off = {**new, "object_lock_days": None, "expire_days": None}
    updated = provider.update(created.id, updated.outs, off)
    state = read_bucket(client, p["bucket"])
    assert state["object_lock_enabled"] is True and state["object_lock_days"] is None
    assert state["expire_days"] is None
    assert updated.outs["object_lock_enabled"] is True


def test_update_refuses_to_suspend_versioning_on_a_locked_bucket(
    endpoint: str, region: str, provider: BucketProvider
) -> None:
    p = props(endpoint, region, versioning=True, object_lock_days=1)
    created = provider.create(p)
    with pytest.raises(BucketError, match="cannot be suspended") as err:
        provider.update(created.id, created.outs, {**p, "versioning": False, "object_lock_days": None})
    assert_no_credentials(str(err.value))


# ---------------------------------------------------------------------------------------------
# Object Lock enforcement


def test_governance_lock_blocks_version_delete_without_bypass(endpoint: str, region: str, client: Any) -> None:
    name = fresh_name()
    create_bucket(client, name, region=region, versioning=True, object_lock_days=1, object_lock_mode="GOVERNANCE")
    version = put(client, name, "backup.tar")
    head = client.head_object(Bucket=name, Key="backup.tar")
    assert head["ObjectLockMode"] == "GOVERNANCE"

    with pytest.raises(ClientError) as err:
        client.delete_object(Bucket=name, Key="backup.tar", VersionId=version)
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    assert [v["VersionId"] for v in client.list_object_versions(Bucket=name)["Versions"]] == [version]

    client.delete_object(Bucket=name, Key="backup.tar", VersionId=version, BypassGovernanceRetention=True)
    assert "Versions" not in client.list_object_versions(Bucket=name)


def test_compliance_lock_blocks_version_delete_even_with_bypass(
    endpoint: str, region: str, client: Any, provider: BucketProvider
) -> None:
    p = props(endpoint, region, versioning=True, object_lock_days=1, object_lock_mode="COMPLIANCE",
              force_destroy=True)
    created = provider.create(p)
    version = put(client, p["bucket"], "ledger.db")

    for bypass in (False, True):
        with pytest.raises(ClientError) as err:
            client.delete_object(Bucket=p["bucket"], Key="ledger.db", VersionId=version,
                                 BypassGovernanceRetention=bypass)
        assert err.value.response["Error"]["Code"] == "AccessDenied"

    # force_destroy cannot break COMPLIANCE retention either: clear failure, bucket kept.
    with pytest.raises(BucketError, match="could not be deleted") as err:
        provider.delete(created.id, created.outs)
    assert "ledger.db" in str(err.value)
    assert_no_credentials(str(err.value))
    assert read_bucket(client, p["bucket"])["exists"] is True


# ---------------------------------------------------------------------------------------------
# delete


def test_delete_non_empty_without_force_destroy_fails_and_keeps_bucket(
    endpoint: str, region: str, client: Any, provider: BucketProvider
) -> None:
    p = props(endpoint, region, versioning=True)
    created = provider.create(p)
    put(client, p["bucket"], "a.txt")
    client.delete_object(Bucket=p["bucket"], Key="a.txt")  # only a delete marker + old version left

    with pytest.raises(BucketError) as err:
        provider.delete(created.id, created.outs)
    message = str(err.value)
    assert f"bucket {p['bucket']!r} is not empty" in message
    assert "force_destroy: true" in message
    assert_no_credentials(message)
    assert read_bucket(client, p["bucket"])["exists"] is True
    assert len(client.list_object_versions(Bucket=p["bucket"])["DeleteMarkers"]) == 1


def test_delete_with_force_destroy_empties_versions_markers_and_locked_objects(
    endpoint: str, region: str, client: Any, provider: BucketProvider
) -> None:
    p = props(endpoint, region, versioning=True, object_lock_days=1, object_lock_mode="GOVERNANCE",
              force_destroy=True)
    created = provider.create(p)
    for key in ("a", "b", "dir/c"):
        put(client, p["bucket"], key, b"v1")
        put(client, p["bucket"], key, b"v2")
    client.delete_object(Bucket=p["bucket"], Key="a")  # delete marker
    listing = client.list_object_versions(Bucket=p["bucket"])
    assert len(listing["Versions"]) == 6 and len(listing["DeleteMarkers"]) == 1

    provider.delete(created.id, created.outs)
    assert read_bucket(client, p["bucket"])["exists"] is False
    assert not provider.read(created.id, created.outs).id
    provider.delete(created.id, created.outs)  # already gone: nothing to do


def test_empty_bucket_handles_unversioned_and_more_than_one_page(endpoint: str, region: str, client: Any) -> None:
    name = fresh_name()
    create_bucket(client, name, region=region)
    for i in range(7):
        client.put_object(Bucket=name, Key=f"k{i}", Body=b"")
    assert empty_bucket(client, name, bypass_governance=False, page_size=3) == 7
    delete_bucket(client, name)
    assert read_bucket(client, name)["exists"] is False


# ---------------------------------------------------------------------------------------------
# credentials never leak


def test_errors_are_scrubbed_of_credentials() -> None:
    secret_props = {"endpoint": f"https://user:{SECRET_KEY}@s3.example.com", "access_key": ACCESS_KEY,
                    "secret_key": SECRET_KEY}
    with pytest.raises(BucketError) as err:
        with buckets._clean_errors(secret_props):
            raise RuntimeError(f"boom {ACCESS_KEY} {SECRET_KEY}")
    assert_no_credentials(str(err.value))
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert buckets.safe_endpoint(secret_props["endpoint"]) == "https://s3.example.com"


def test_unreachable_endpoint_error_is_clear_and_clean(provider: BucketProvider) -> None:
    p = props("http://127.0.0.1:9", "hel1")
    with pytest.raises(BucketError, match="failed") as err:
        provider.read(p["bucket"], p)
    assert_no_credentials(str(err.value))


# ---------------------------------------------------------------------------------------------
# Pulumi wiring


def test_provider_survives_pulumi_serialization() -> None:
    restored = dill.loads(base64.b64decode(serialize_provider(BucketProvider())))
    assert isinstance(restored, BucketProvider)


@pulumi.runtime.test
def test_bucket_component_registers_type_parent_protect_and_secrets() -> Any:
    monitor = install_mocks()
    component = Bucket(
        "backups",
        BucketArgs(
            bucket="outpost-backups",
            endpoint="https://hel1.your-objectstorage.com",
            region="hel1",
            access_key="AKEY",
            secret_key="SKEY",
            versioning=True,
            object_lock_days=30,
            expire_days=90,
        ),
        pulumi.ResourceOptions(protect=True),
    )

    def check(values: list[Any]) -> None:
        component_urn, child_urn, name, endpoint = values
        assert name == "outpost-backups"
        assert endpoint == "https://hel1.your-objectstorage.com"
        by_name = monitor.by_name()
        parent, child = by_name["backups"], by_name["backups-bucket"]
        assert parent.type == "outpost:storage:Bucket" and not parent.custom
        assert child.custom and child.type == "pulumi-python:dynamic/outpost:Bucket"
        assert child.parent == component_urn
        assert "outpost:storage:Bucket$pulumi-python:dynamic/outpost:Bucket::backups-bucket" in child_urn
        assert child.protect is True
        assert sorted(child.additional_secret_outputs) == ["access_key", "secret_key"]
        assert {"access_key", "secret_key"} <= child.secret_inputs

    return pulumi.Output.all(
        component.urn, component.resource.urn, component.bucket, component.endpoint
    ).apply(check)


@pulumi.runtime.test
def test_bucket_component_credentials_are_secret() -> Any:
    monitor = install_mocks()
    component = Bucket(
        "creds",
        BucketArgs(bucket="outpost-creds", endpoint="https://s3.example.com", region="us-east-1",
                   access_key="AKEY", secret_key="SKEY"),
    )

    async def secret_flags() -> tuple[bool, bool, bool]:
        return (
            await component.resource.access_key.is_secret(),
            await component.resource.secret_key.is_secret(),
            await component.bucket.is_secret(),
        )

    def check(flags: tuple[bool, bool, bool]) -> None:
        assert flags == (True, True, False)
        assert not monitor.by_name()["creds-bucket"].protect

    return pulumi.Output.from_input(secret_flags()).apply(check)
