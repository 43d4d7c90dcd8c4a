"""outpost's dynamic providers under the real engine: `Bucket` (components/buckets.py) against moto's
S3 server and `GeoRecord` (components/geodns.py) against the fake Gcore and Bunny APIs
(tests/dns/fake_geodns_api.py), built by the small program in programs/dynamic and run by the real
CLI, so the providers run in the engine's dynamic-provider process (pulumi-resource-pulumi-python),
unpickled from the state, with the values the engine hands them; not under mocks.

One scenario, its steps in order (module fixture), each checked by its own test: a fresh `up`, a
no-change `up`, drift repaired by `up --refresh` (the providers' read), `preview --diff` of a
change, the change (update in place, create-before-delete and delete-before-replace replacements),
a provider failure, then `destroy`. About 60 s on two shared cores (eight engine runs of 4-9 s).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from components.buckets import LIFECYCLE_RULE_ID
from tests.conftest import ROOT
from tests.dns.fake_geodns_api import FakeBunny, FakeGcore
from tests.e2e.backing import moto_server
from tools.pulumi_cli import CliFailed, StackCli, Update

PROGRAM = ROOT / "tests" / "engine" / "programs" / "dynamic"
GCORE_ZONE, BUNNY_ZONE = "geo.example.org", "bunny.example.org"
SECRETS = {"s3_key_id": "AKIAOUTPOSTENGINE7Q2M", "s3_secret": "s3-secret-9c4e1b7a2f6d4e83b5a0",
           "gcore_token": "gcore-token-51d04b683f9a7c2e", "bunny_token": "bunny-key-20c94b338e1d5a7f"}
WRONG_BUNNY = "bunny-key-wrong-6a1f0e9d2c7b"


def program_config(s3: int, gcore: str, bunny: str) -> dict[str, Any]:
    pools = {"eu": ["192.0.2.10"], "na": ["192.0.2.20"]}
    return {"outpost:dynamic": {
        "bucket": "outpost-engine", "s3_endpoint": f"http://127.0.0.1:{s3}", "region": "us-east-1",
        "versioning": True, "expire_days": 30,
        "gcore": {"api_url": gcore, "zone": GCORE_ZONE, "name": "www", "pools": pools, "rules": {"na": ["NA"]},
                  "default_pool": "eu", "health": {"path": "/ready", "port": 443}},
        "bunny": {"api_url": bunny, "zone": BUNNY_ZONE, "name": "www", "pools": pools, "rules": {"na": ["NA"]},
                  "default_pool": "eu"},
    }}


@dataclass
class Scenario:
    """What each step did (the engine's report) and what the APIs held after it."""
    updates: dict[str, Update] = field(default_factory=dict)
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)       # everything the CLI printed or exported
    preview: str = ""
    failure: str = ""
    exports: dict[str, Any] = field(default_factory=dict)


def bucket_state(s3, name: str) -> dict[str, Any]:
    try:
        versioning = s3.get_bucket_versioning(Bucket=name).get("Status")
    except ClientError:
        return {"exists": False}
    rules = s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
    return {"exists": True, "versioning": versioning,
            "lifecycle": [(r["ID"], r["Expiration"]["Days"], r["NoncurrentVersionExpiration"]["NoncurrentDays"])
                          for r in rules]}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Scenario:
    run = Scenario()
    with moto_server() as port, FakeGcore(SECRETS["gcore_token"], zones=(GCORE_ZONE,)) as gcore, \
            FakeBunny(SECRETS["bunny_token"], zones=(BUNNY_ZONE,)) as bunny:
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="inspector", aws_secret_access_key="inspector")
        cli = StackCli("engine", tmp_path_factory.mktemp("dynamic"), project=PROGRAM,
                       extra_env={"PYTHONPATH": str(ROOT)})      # the program and its providers import components
        config = program_config(port, gcore.url, bunny.url)

        def look(step: str) -> None:
            run.seen[step] = {
                "buckets": sorted(b["Name"] for b in s3.list_buckets()["Buckets"]),
                "bucket": {name: bucket_state(s3, name) for name in ("outpost-engine", "outpost-engine-2")},
                "gcore": gcore.rrset(GCORE_ZONE, f"www.{GCORE_ZONE}", "A"),
                "bunny": {name: bunny.records(BUNNY_ZONE, name, "A") for name in ("www", "web")},
            }

        def step(name: str, update: Update) -> None:
            run.updates[name] = update
            run.texts.append(update.output)
            look(name)

        cli.lay(config, SECRETS)
        step("fresh", cli.up(outputs=False))
        step("again", cli.up(outputs=False))
        # drift: the lifecycle rule edited behind the stack's back
        s3.put_bucket_lifecycle_configuration(Bucket="outpost-engine", LifecycleConfiguration={"Rules": [{
            "ID": LIFECYCLE_RULE_ID, "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 5},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 5}}]})
        step("refresh", cli.up(outputs=False, refresh=True))

        # the change: the bucket renamed (it holds an object; force_destroy is on) with a longer
        # expiry, Gcore's eu pool moved to another address, Bunny's record renamed
        spec = config["outpost:dynamic"]
        spec.update(bucket="outpost-engine-2", expire_days=60)
        spec["gcore"]["pools"] = {"eu": ["192.0.2.11"], "na": ["192.0.2.20"]}
        spec["bunny"]["name"] = "web"
        cli.lay(config, SECRETS)
        s3.put_object(Bucket="outpost-engine", Key="kept-by-nobody", Body=b"data")
        preview = cli.preview(diff=True, timeout=300)
        assert preview.returncode == 0, preview.stderr[-3000:]
        run.preview = preview.stdout + preview.stderr
        run.texts.append(run.preview)
        step("change", cli.up(outputs=False))

        # a provider failure: Bunny refuses a wrong key (an update of the record's token)
        cli.lay(config, {**SECRETS, "bunny_token": WRONG_BUNNY})
        with pytest.raises(CliFailed) as failed:
            cli.up(outputs=False)
        run.failure = "\n".join(failed.value.errors)
        run.texts.append(failed.value.result.stdout + failed.value.result.stderr)
        cli.lay(config, SECRETS)

        run.exports = {"plain": cli.export(), "shown": cli.export(show_secrets=True)}
        run.texts.append(json.dumps(run.exports["plain"]))
        step("destroy", cli.destroy())
        run.exports["after"] = cli.export()
        run.texts.append(json.dumps(run.exports["after"]))
    return run


def is_debug(line: str) -> bool:
    """A debug diagnostic of the --json event stream, which the CLI's display leaves out (the
    language host logs a failed registration's RPC traceback there)."""
    if not line.startswith("{"):
        return False
    return (json.loads(line).get("diagnosticEvent") or {}).get("severity") == "debug"


def ops(update: Update) -> list[tuple[str, str]]:
    return [(s.name, s.op) for s in update.steps if s.type != "pulumi:providers:pulumi-python"]


def test_a_fresh_up_makes_the_bucket_and_both_record_sets(scenario):
    update, seen = scenario.updates["fresh"], scenario.seen["fresh"]
    assert update.changes == {"create": 7}       # the stack, 3 components, their 3 dynamic resources
    assert {name for name, op in ops(update) if op == "create"} >= {"bucket-bucket", "geo-gcore-record",
                                                                      "geo-bunny-record"}
    assert seen["bucket"]["outpost-engine"] == {"exists": True, "versioning": "Enabled",
                                                "lifecycle": [(LIFECYCLE_RULE_ID, 30, 30)]}
    rrset = seen["gcore"]
    assert sorted(r["content"][0] for r in rrset["resource_records"]) == ["192.0.2.10", "192.0.2.20"]
    assert rrset["meta"]["failover"]["url"] == "/ready" and rrset["meta"]["failover"]["tls"] is True
    assert {r["Value"] for r in seen["bunny"]["www"]} == {"192.0.2.10", "192.0.2.20"}


def test_a_second_up_changes_nothing(scenario):
    update = scenario.updates["again"]
    assert update.changed == 0 and update.steps == [] and update.changes == {"same": 7}
    assert scenario.seen["again"] == scenario.seen["fresh"]


def test_up_with_refresh_reads_the_drift_and_repairs_only_it(scenario):
    update = scenario.updates["refresh"]
    assert ops(update) == [("bucket-bucket", "update")]
    assert scenario.seen["refresh"] == scenario.seen["fresh"]     # the rule is 30 days again


def test_the_preview_of_the_change_names_each_change_and_masks_the_credentials(scenario):
    text = scenario.preview
    assert "~ pulumi-python:dynamic/outpost:GeoRecordSet: (update)" in text
    assert '~ [0]: "192.0.2.10" => "192.0.2.11"' in text
    assert '~ bucket          : "outpost-engine" => "outpost-engine-2"' in text
    assert "~ expire_days     : 30 => 60" in text
    assert '~ name        : "www" => "web"' in text
    assert text.count("+-pulumi-python:dynamic/outpost:") == 2             # bucket and Bunny record replaced
    assert "access_key      : [secret]" in text and "token       : [secret]" in text


def test_the_change_updates_in_place_and_replaces_in_the_order_each_provider_asks(scenario):
    steps = ops(scenario.updates["change"])
    assert ("geo-gcore-record", "update") in steps
    bucket = [op for name, op in steps if name == "bucket-bucket"]
    bunny = [op for name, op in steps if name == "geo-bunny-record"]
    assert bucket == ["delete-replaced", "replace", "create-replacement"]   # bucket names are global
    assert bunny == ["create-replacement", "replace", "delete-replaced"]    # the new set first
    seen = scenario.seen["change"]
    assert seen["buckets"] == ["outpost-engine-2"]                          # the old one emptied and gone
    assert seen["bucket"]["outpost-engine-2"] == {"exists": True, "versioning": "Enabled",
                                                  "lifecycle": [(LIFECYCLE_RULE_ID, 60, 60)]}
    assert sorted(r["content"][0] for r in seen["gcore"]["resource_records"]) == ["192.0.2.11", "192.0.2.20"]
    assert seen["bunny"]["www"] == [] and {r["Value"] for r in seen["bunny"]["web"]} == {"192.0.2.10", "192.0.2.20"}


def test_a_provider_error_is_its_message_not_a_traceback(scenario):
    """The dynamic-provider process reports exceptions as `traceback.format_exc()`; the providers
    limit it to the message (components/provider_errors.py)."""
    assert scenario.failure.splitlines()[0] == (
        "geo-bunny-record: components.geodns.model.GeoDNSError: bunny API GET /dnszone?page=1&perPage=1000 failed: "
        "HTTP 401: Authorization has been denied for this request. (check the API token)")
    shown = [line for text in scenario.texts for line in text.splitlines() if not is_debug(line)]
    assert not [line for line in shown if "Traceback" in line or "File \\\"" in line]


def test_destroy_leaves_nothing(scenario):
    update, seen = scenario.updates["destroy"], scenario.seen["destroy"]
    assert update.changes == {"delete": 7}
    assert seen["buckets"] == [] and seen["gcore"] is None and seen["bunny"] == {"www": [], "web": []}
    assert not (scenario.exports["after"].get("deployment") or {}).get("resources")


def test_no_credential_in_any_output_or_the_state_without_show_secrets(scenario):
    values = [*SECRETS.values(), WRONG_BUNNY]
    for text in scenario.texts:
        for value in values:
            assert value not in text
    # The state does hold them, encrypted: --show-secrets finds each (so the search above can fail).
    shown = json.dumps(scenario.exports["shown"])
    assert all(value in shown for value in SECRETS.values())
    resources = {r["urn"].rsplit("::", 1)[-1]: r for r in scenario.exports["plain"]["deployment"]["resources"]}
    for name, keys in (("bucket-bucket", ("access_key", "secret_key")), ("geo-gcore-record", ("token",)),
                       ("geo-bunny-record", ("token",))):
        for key in (*keys, "__provider"):
            for side in ("inputs", "outputs"):
                assert "ciphertext" in resources[name][side][key], (name, side, key)
