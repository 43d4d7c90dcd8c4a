"""outpost:buckets lifecycle keys: restic repositories may sit on a bucket that expires noncurrent
versions (old pack files a newer upload replaced), never on one that expires current objects."""

import copy

import pytest
import yaml

from components.config import ConfigError
from components.load import parse
from tests.conftest import ROOT


def config_with(**bucket) -> dict:
    config = yaml.safe_load((ROOT / "Pulumi.test.yaml").read_text())["config"]
    config["outpost:buckets"]["bus-eta-test"].update(bucket)
    return copy.deepcopy(config)


def test_restic_accepts_a_bucket_that_expires_noncurrent_versions():
    stack = parse(config_with(noncurrent_expire_days=30), "test")
    assert stack.buckets["bus-eta-test"].noncurrent_expire_days == 30
    assert stack.backups["kollektivkart-data"].tool == "restic"


def test_restic_refuses_a_bucket_that_expires_objects():
    with pytest.raises(ConfigError) as err:
        parse(config_with(expire_days=30), "test")
    assert err.value.lines == ["Pulumi.test.yaml: outpost:backups.kollektivkart-data.bucket: bucket 'bus-eta-test' "
                               "expires objects after 30 days: that deletes restic pack files later snapshots still "
                               "need; drop expire_days or use another bucket"]


@pytest.mark.parametrize("bucket, line", [
    ({"noncurrent_expire_days": 0}, "outpost:buckets.bus-eta-test.noncurrent_expire_days: Input should be greater than or equal to 1 (got 0)"),
    ({"noncurrent_expire_days": 30, "versioning": False},
     "outpost:buckets.bus-eta-test.noncurrent_expire_days: only applies with versioning: true (an unversioned bucket "
     "has no noncurrent versions); use expire_days, or turn versioning on"),
])
def test_noncurrent_expiry_mistakes(bucket, line):
    with pytest.raises(ConfigError) as err:
        parse(config_with(**bucket), "test")
    assert err.value.lines == [f"Pulumi.test.yaml: {line}"]
