"""Tests for components/geodns/ against local fakes of the Gcore and Bunny DNS APIs over HTTP.

The GeoRecordProvider methods are called directly (no Pulumi engine), each against a fresh fake
server; the GeoRecord component is checked under pulumi.runtime.set_mocks.
"""

from __future__ import annotations

import base64
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import dill
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pulumi  # noqa: E402
from pulumi.dynamic.dynamic import serialize_provider  # noqa: E402
from pulumi.output import Unknown  # noqa: E402

from components import geodns  # noqa: E402
from components.program import install_mocks  # noqa: E402
from components.geodns import (  # noqa: E402
    CONTINENT_POINTS,
    GeoDNSError,
    GeoRecord,
    GeoRecordArgs,
    GeoRecordProvider,
    HttpApi,
)
from fake_geodns_api import FakeBunny, FakeGcore  # noqa: E402

TOKEN = "outpost-test-token-do-not-print"
ZONE = "linkedlist.org"
EU, NA, AU = "192.0.2.10", "198.51.100.20", "203.0.113.30"


def record_props(provider: str, api_url: str, **overrides: Any) -> dict[str, Any]:
    """Inputs as GeoRecord passes them (DESIGN.md's example, hosts already turned into addresses)."""
    props: dict[str, Any] = {
        "provider": provider,
        "api_url": api_url,
        "token": TOKEN,
        "zone": ZONE,
        "name": "@",
        "type": "A",
        "ttl": 300,
        "pools": {"eu": [EU], "na": [NA], "default": [AU]},
        "rules": {"eu": ["EU", "AF", "SA"], "na": ["NA"]},
        "default_pool": "default",
        "health": {"path": "/", "port": 443},
    }
    props.update(overrides)
    return props


@dataclass
class Live:
    """One fake API plus provider-specific ways to look at and tamper with the record set."""

    provider: str
    api: Any
    addresses: Callable[[], dict[str, set[str]]]  # pool → addresses the API serves
    exists: Callable[[], bool]
    move_address: Callable[[str, str], None]  # replace an address behind the provider's back


def _gcore_live(api: FakeGcore, fqdn: str = ZONE, rtype: str = "A") -> Live:
    def rrset() -> Any:
        return api.rrset(ZONE, fqdn, rtype)

    def addresses() -> dict[str, set[str]]:
        pools: dict[str, set[str]] = {}
        for record in rrset()["resource_records"]:
            pool = record["meta"]["notes"].removeprefix("outpost pool=").removesuffix(" default")
            pools.setdefault(pool, set()).add(record["content"][0])
        return pools

    def move(old: str, new: str) -> None:
        with api.lock:
            for record in rrset()["resource_records"]:
                if record["content"] == [old]:
                    record["content"] = [new]

    return Live("gcore", api, addresses, lambda: rrset() is not None, move)


def _bunny_live(api: FakeBunny, label: str = "", rtype: str = "A") -> Live:
    def addresses() -> dict[str, set[str]]:
        pools: dict[str, set[str]] = {}
        for record in api.records(ZONE, label, rtype):
            pool = record["Comment"].removeprefix("outpost pool=").removesuffix(" default")
            pools.setdefault(pool, set()).add(record["Value"])
        return pools

    def move(old: str, new: str) -> None:
        with api.lock:
            for record in api.records(ZONE, label, rtype):
                if record["Value"] == old:
                    record["Value"] = new

    return Live("bunny", api, addresses, lambda: bool(api.records(ZONE, label, rtype)), move)


@pytest.fixture(params=["gcore", "bunny"])
def live(request: pytest.FixtureRequest) -> Iterator[Live]:
    if request.param == "gcore":
        with FakeGcore(TOKEN, zones=(ZONE, "other.example")) as api:
            yield _gcore_live(api)
    else:
        with FakeBunny(TOKEN, zones=("a.example", "b.example", ZONE), max_page_size=2) as api:
            yield _bunny_live(api)


@pytest.fixture
def provider() -> GeoRecordProvider:
    return GeoRecordProvider()


def checked(provider: GeoRecordProvider, props: dict[str, Any]) -> dict[str, Any]:
    result = provider.check({}, {**props, "__provider": "serialized"})
    assert result.failures == [], [(f.property, f.reason) for f in result.failures]
    return result.inputs


def create(provider: GeoRecordProvider, live: Live, **overrides: Any) -> tuple[str, dict[str, Any]]:
    inputs = checked(provider, record_props(live.provider, live.api.url, **overrides))
    result = provider.create(inputs)
    return result.id, result.outs


# ------------------------------------------------------------------------------------------------
# Lifecycle, both providers


def test_create_writes_the_geo_routed_set(provider: GeoRecordProvider, live: Live) -> None:
    id_, outs = create(provider, live)

    assert id_ == f"{live.provider}:{ZONE}/@/A"
    assert live.addresses() == {"eu": {EU}, "na": {NA}, "default": {AU}}
    assert outs["pools"] == {"default": [AU], "eu": [EU], "na": [NA]}
    assert outs["rules"] == {"eu": ["AF", "EU", "SA"], "na": ["NA"]}
    assert outs["health"] == {"protocol": "https", "port": 443, "path": "/"}
    assert outs["token"] == TOKEN  # returned as given; GeoRecord marks it secret


def test_gcore_set_carries_geo_meta_pickers_and_failover(provider: GeoRecordProvider) -> None:
    with FakeGcore(TOKEN, zones=(ZONE,)) as api:
        create(provider, _gcore_live(api))
        rrset = api.rrset(ZONE, ZONE, "A")

    metas = {r["content"][0]: r["meta"] for r in rrset["resource_records"]}
    assert metas[EU] == {"notes": "outpost pool=eu", "continents": ["af", "eu", "sa"]}
    assert metas[NA] == {"notes": "outpost pool=na", "continents": ["na"]}
    assert metas[AU] == {"notes": "outpost pool=default default", "default": True}
    assert rrset["pickers"] == [{"type": "geodns", "strict": False}, {"type": "default", "strict": False}]
    assert rrset["ttl"] == 300
    assert rrset["meta"]["failover"] == {
        "protocol": "HTTP", "port": 443, "frequency": 30, "timeout": 5,
        "method": "GET", "url": "/", "tls": True, "host": ZONE,
    }


def test_gcore_countries_and_tcp_check(provider: GeoRecordProvider) -> None:
    with FakeGcore(TOKEN, zones=(ZONE,)) as api:
        create(provider, _gcore_live(api, f"www.{ZONE}"), name="www",
               rules={"eu": ["de", "EU"], "na": ["NA"]}, health={"protocol": "tcp", "port": 5432})
        rrset = api.rrset(ZONE, f"www.{ZONE}", "A")

    eu = next(r for r in rrset["resource_records"] if r["content"] == [EU])
    assert eu["meta"]["continents"] == ["eu"] and eu["meta"]["countries"] == ["de"]
    assert rrset["meta"]["failover"] == {"protocol": "TCP", "port": 5432, "frequency": 30, "timeout": 5}


def test_gcore_icmp_check_reads_back_without_drift(provider: GeoRecordProvider) -> None:
    with FakeGcore(TOKEN, zones=(ZONE,)) as api:
        id_, outs = create(provider, _gcore_live(api), health={"protocol": "icmp"})
        failover = api.rrset(ZONE, ZONE, "A")["meta"]["failover"]
        read = provider.read(id_, outs)

    assert failover["protocol"] == "ICMP" and failover["port"] == 80  # Gcore wants a port even here
    assert read.outs == outs and outs["health"] == {"protocol": "icmp", "port": None, "path": None}


def test_bunny_records_sit_at_rule_points_with_monitor(provider: GeoRecordProvider) -> None:
    with FakeBunny(TOKEN, zones=(ZONE,)) as api:
        create(provider, _bunny_live(api))
        records = api.records(ZONE, "", "A")

    points = {(r["Value"], r["GeolocationLatitude"], r["GeolocationLongitude"]) for r in records}
    expected = {(EU, *CONTINENT_POINTS[c]) for c in ("EU", "AF", "SA")}
    expected |= {(NA, *CONTINENT_POINTS["NA"])}
    expected |= {(AU, *CONTINENT_POINTS[c]) for c in ("AN", "AS", "OC")}  # continents no rule names
    assert points == expected and len(records) == len(expected)
    assert {r["SmartRoutingType"] for r in records} == {2}  # Geolocation
    assert {r["MonitorType"] for r in records} == {1}  # Ping: Bunny's Http monitor only checks port 80
    assert {r["Ttl"] for r in records} == {300}
    assert {r["Comment"] for r in records if r["Value"] == AU} == {"outpost pool=default default"}


def test_bunny_country_rule_and_http_monitor(provider: GeoRecordProvider) -> None:
    with FakeBunny(TOKEN, zones=(ZONE,)) as api:
        create(provider, _bunny_live(api, "www"), name="www", rules={"eu": ["DE"], "na": ["NA"]},
               health={"path": "/health", "port": 80})
        records = api.records(ZONE, "www", "A")

    eu = [r for r in records if r["Value"] == EU]
    assert [(r["GeolocationLatitude"], r["GeolocationLongitude"]) for r in eu] == [(51.0, 9.0)]  # Germany's centre
    assert {r["MonitorType"] for r in records} == {2}  # Http


def test_read_returns_the_inputs_and_diff_is_empty(provider: GeoRecordProvider, live: Live) -> None:
    id_, outs = create(provider, live)

    read = provider.read(id_, {**outs, "__provider": "serialized"})

    assert read.id == id_
    assert read.outs == outs
    news = checked(provider, record_props(live.provider, live.api.url))
    assert provider.diff(id_, read.outs, news).changes is False


def test_drift_behind_the_providers_back_shows_in_read_and_diff(provider: GeoRecordProvider, live: Live) -> None:
    id_, outs = create(provider, live)
    live.move_address(EU, "192.0.2.99")

    read = provider.read(id_, outs)

    assert read.id == id_
    assert read.outs["pools"]["eu"] == ["192.0.2.99"]
    assert read.outs["pools"]["na"] == [NA] and read.outs["rules"]["eu"] == ["AF", "EU", "SA"]
    news = checked(provider, record_props(live.provider, live.api.url))
    diff = provider.diff(id_, read.outs, news)
    assert diff.changes is True and diff.replaces == []


def test_update_repairs_drift_and_applies_changes(provider: GeoRecordProvider, live: Live) -> None:
    id_, outs = create(provider, live)
    live.move_address(EU, "192.0.2.99")
    news = checked(provider, record_props(
        live.provider, live.api.url, ttl=120,
        pools={"eu": [EU, "192.0.2.11"], "na": [NA], "default": [AU]},
        rules={"eu": ["EU"], "na": ["NA", "SA"]},
    ))

    updated = provider.update(id_, outs, news)

    assert live.addresses() == {"eu": {EU, "192.0.2.11"}, "na": {NA}, "default": {AU}}
    again = provider.read(id_, updated.outs)
    assert again.outs == updated.outs
    assert provider.diff(id_, again.outs, news).changes is False


def test_update_recreates_a_set_deleted_behind_the_providers_back(provider: GeoRecordProvider, live: Live) -> None:
    id_, outs = create(provider, live)
    provider.delete(id_, outs)
    assert not live.exists()

    provider.update(id_, outs, outs)

    assert live.addresses() == {"eu": {EU}, "na": {NA}, "default": {AU}}


def test_delete_removes_exactly_the_set(provider: GeoRecordProvider, live: Live) -> None:
    other_id, other = create(provider, live, type="AAAA",
                             pools={"eu": ["2001:db8::1"], "na": ["2001:db8::2"], "default": ["2001:db8::3"]})
    id_, outs = create(provider, live)

    provider.delete(id_, outs)

    assert not live.exists()
    assert provider.read(id_, outs).id == ""
    assert provider.read(other_id, other).outs == other  # the AAAA set of the same name is untouched


def test_delete_of_a_missing_set_is_fine(provider: GeoRecordProvider, live: Live) -> None:
    id_, outs = create(provider, live)
    provider.delete(id_, outs)

    provider.delete(id_, outs)  # no error

    assert not live.exists()


def test_create_refuses_to_overwrite_an_existing_set(provider: GeoRecordProvider, live: Live) -> None:
    create(provider, live)

    with pytest.raises(GeoDNSError, match="already exists.*import it"):
        create(provider, live)


def test_bad_token_gives_a_clear_error_without_the_token(provider: GeoRecordProvider, live: Live) -> None:
    wrong = "wrong-token-that-must-not-appear"
    inputs = checked(provider, record_props(live.provider, live.api.url, token=wrong))

    with pytest.raises(GeoDNSError) as excinfo:
        provider.create(inputs)

    message = str(excinfo.value)
    assert "HTTP 401" in message and "check the API token" in message and live.provider in message
    assert wrong not in message and TOKEN not in message
    id_ = f"{live.provider}:{ZONE}/@/A"
    for call in (lambda: provider.read(id_, inputs), lambda: provider.delete(id_, inputs)):
        with pytest.raises(GeoDNSError, match="HTTP 401") as excinfo:
            call()
        assert wrong not in str(excinfo.value)


def test_unreachable_api_is_a_clear_error(provider: GeoRecordProvider) -> None:
    inputs = checked(provider, record_props("gcore", "http://127.0.0.1:9"))

    with pytest.raises(GeoDNSError, match="cannot reach http://127.0.0.1:9"):
        provider.create(inputs)


def test_missing_bunny_zone_is_a_clear_error(provider: GeoRecordProvider) -> None:
    with FakeBunny(TOKEN, zones=("elsewhere.example",)) as api:
        inputs = checked(provider, record_props("bunny", api.url))
        with pytest.raises(GeoDNSError, match=f"zone {ZONE} does not exist"):
            provider.create(inputs)
        assert provider.read(f"bunny:{ZONE}/@/A", inputs).id == ""
        provider.delete(f"bunny:{ZONE}/@/A", inputs)


def test_bunny_create_rolls_back_when_a_record_is_rejected(provider: GeoRecordProvider) -> None:
    with FakeBunny(TOKEN, zones=(ZONE,)) as api:
        backend = geodns.BunnyBackend(geodns.GeoRecordSpec.from_props(record_props("bunny", api.url)))
        good = backend.render()
        backend.render = lambda: good[:2] + [{**good[2], "GeolocationLatitude": 123.0}]  # type: ignore[method-assign]
        with pytest.raises(GeoDNSError, match="HTTP 400: GeolocationLatitude must be between -90 and 90"):
            backend.create()
        assert api.records(ZONE, "", "A") == []


# ------------------------------------------------------------------------------------------------
# The fakes reject what the real APIs reject


def test_gcore_fake_rejects_malformed_bodies() -> None:
    with FakeGcore(TOKEN, zones=(ZONE,)) as fake:
        api = HttpApi("gcore", fake.url, {"Authorization": f"APIKey {TOKEN}"}, TOKEN)
        path = f"/v2/zones/{ZONE}/{ZONE}/A"
        bad = [
            ({"ttl": 60}, "resource_records is required"),
            ({"resource_records": [{"content": ["not-an-ip"]}]}, "not a valid IP"),
            ({"resource_records": [{"content": [EU], "meta": {"continents": ["europe-ish"]}}]}, "invalid continent"),
            ({"resource_records": [{"content": [EU]}], "pickers": [{"type": "healthcheck"}]}, "pickers\\[0\\].type"),
            ({"resource_records": [{"content": [EU]}], "meta": {"failover": {"protocol": "HTTP", "port": 443,
                                                                             "frequency": 5, "timeout": 5}}},
             "frequency must be between 10 and 3600"),
        ]
        for body, message in bad:
            with pytest.raises(geodns.ApiError, match=f"HTTP 400: .*{message}"):
                api.call("POST", path, body)
        assert fake.rrset(ZONE, ZONE, "A") is None


def test_bunny_fake_rejects_malformed_bodies() -> None:
    with FakeBunny(TOKEN, zones=(ZONE,)) as fake:
        api = HttpApi("bunny", fake.url, {"AccessKey": TOKEN}, TOKEN)
        zone_id = fake.zone_by_domain(ZONE)["Id"]
        bad = [
            ({"Value": EU}, "Type must be one of"),
            ({"Type": 0, "Value": "2001:db8::1"}, "not an IPv4 address"),
            ({"Type": 0, "Value": EU, "SmartRoutingType": 2}, "GeolocationLatitude must be between"),
            ({"Type": 0, "Value": EU, "MonitorType": 7}, "MonitorType must be one of"),
        ]
        for body, message in bad:
            with pytest.raises(geodns.ApiError, match=f"HTTP 400: .*{message}.*ErrorKey=validation_error"):
                api.call("PUT", f"/dnszone/{zone_id}/records", body, ok=(201,))
        assert fake.zone_by_domain(ZONE)["Records"] == []


# ------------------------------------------------------------------------------------------------
# check and diff


def test_check_reports_every_problem_at_once(provider: GeoRecordProvider) -> None:
    props = record_props(
        "route53", "ftp://x", zone="not a zone", name="bad name!", type="MX", ttl=0,
        pools={"eu": [EU, "nope"], "na": [EU], "lonely": [NA]},
        rules={"eu": ["EU", "XX"], "na": ["EU"], "ghost": ["AS"]},
        default_pool="missing", health={"path": "health", "port": 70000, "protocol": "smtp"},
    )

    failures = {(f.property, f.reason) for f in provider.check({}, props).failures}

    reasons = " | ".join(reason for _, reason in failures)
    for fragment in ("provider must be one of gcore, bunny", "api_url must be an http(s) URL", "zone must be",
                     "name must be '@'", "type must be A or AAAA", "ttl must be", "'nope' is not an IP address",
                     "address 192.0.2.10 is in pools 'eu' and 'na'", "'XX' is neither a continent",
                     "EU is in the rules of pools 'eu' and 'na'", "rule for pool 'ghost'",
                     "default_pool must name one of the pools", "pool 'lonely' has no rule",
                     "health.protocol must be one of", "health.port must be", "health.path must start with '/'"):
        assert fragment in reasons
    assert {p for p, _ in failures} >= {"provider", "api_url", "zone", "name", "type", "ttl", "pools", "rules",
                                         "default_pool", "health"}


def test_check_normalises_and_fills_defaults(provider: GeoRecordProvider) -> None:
    inputs = checked(provider, {
        "provider": "gcore", "token": TOKEN, "zone": "LinkedList.org.", "name": "WWW",
        "pools": {"eu": ["192.0.2.2", "192.0.2.1"], "default": [AU]}, "rules": {"eu": ["eu", "de"]},
        "default_pool": "default", "health": {"port": 443.0},
    })

    assert inputs["api_url"] == "https://api.gcore.com/dns"
    assert (inputs["zone"], inputs["name"], inputs["type"], inputs["ttl"]) == (ZONE, "www", "A", 300)
    assert inputs["pools"] == {"default": [AU], "eu": ["192.0.2.1", "192.0.2.2"]}
    assert inputs["rules"] == {"eu": ["DE", "EU"]}
    assert inputs["health"] == {"protocol": "https", "port": 443, "path": "/"}


def test_check_and_diff_accept_unknowns_during_preview(provider: GeoRecordProvider) -> None:
    props = record_props("gcore", "https://api.gcore.com/dns", pools={"eu": [Unknown()], "na": [NA], "default": [AU]})

    assert provider.check({}, props).failures == []
    olds = checked(provider, record_props("gcore", "https://api.gcore.com/dns"))
    diff = provider.diff("id", olds, props)
    assert diff.changes is True and diff.replaces == []


@pytest.mark.parametrize("key,value", [("provider", "bunny"), ("zone", "other.example"), ("name", "www"),
                                       ("type", "AAAA")])
def test_identity_changes_replace(provider: GeoRecordProvider, key: str, value: str) -> None:
    olds = checked(provider, record_props("gcore", "https://api.gcore.com/dns"))
    news = {**olds, key: value}
    if key == "type":
        news["pools"] = {"eu": ["2001:db8::1"], "na": ["2001:db8::2"], "default": ["2001:db8::3"]}

    diff = provider.diff("id", olds, news)

    assert diff.changes is True and key in diff.replaces


def test_other_changes_update_in_place(provider: GeoRecordProvider) -> None:
    olds = checked(provider, record_props("gcore", "https://api.gcore.com/dns"))
    for key, value in (("ttl", 60), ("token", "rotated"), ("rules", {"eu": ["EU"], "na": ["NA"]}),
                       ("health", None), ("default_pool", "eu")):
        diff = provider.diff("id", olds, {**olds, key: value})
        assert diff.changes is True and diff.replaces == [], key


def test_serialized_provider_holds_no_token() -> None:
    serialized = serialize_provider(GeoRecordProvider())

    assert TOKEN not in base64.b64decode(serialized).decode("latin-1")
    assert isinstance(dill.loads(base64.b64decode(serialized)), GeoRecordProvider)


# ------------------------------------------------------------------------------------------------
# Component under mocks


@pulumi.runtime.test
def test_georecord_registers_child_with_secret_token_and_parent() -> Any:
    monitor = install_mocks()
    record = GeoRecord("apex", GeoRecordArgs(
        provider="gcore", token=TOKEN, zone=ZONE, name="@",
        pools={"eu": [EU], "default": [AU]}, rules={"eu": ["EU"]}, default_pool="default",
        health={"path": "/", "port": 443},
    ))

    async def token_is_secret() -> bool:
        return await record.record_set.token.is_secret()

    def verify(values: list[Any]) -> None:
        component_urn, child_urn, fqdn, secret = values
        by_name = monitor.by_name()
        parent, child = by_name["apex"], by_name["apex-record"]
        assert parent.type == "outpost:dns:GeoRecord" and not parent.custom
        assert child.custom and child.type == "pulumi-python:dynamic/outpost:GeoRecordSet"
        assert child.parent == component_urn
        assert "outpost:dns:GeoRecord$pulumi-python:dynamic/outpost:GeoRecordSet::apex-record" in child_urn
        assert child.additional_secret_outputs == ["token"]
        assert "token" in child.secret_inputs and child.inputs["token"] == TOKEN
        assert fqdn == ZONE and secret is True

    return pulumi.Output.all(
        record.urn, record.record_set.urn, record.fqdn, pulumi.Output.from_input(token_is_secret())
    ).apply(verify)
