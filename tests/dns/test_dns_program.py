"""The whole program under mocks: the DNS names each stack publishes, checked against the stack
files and the addresses the mocked servers got (not against config/records.py, which made them)."""

from __future__ import annotations

import ipaddress
import json
import logging

import pytest
import yaml

from components.program import record_program, stack_config
from tests.conftest import ROOT
from tests.program.harness import by_urn, invoked, of_type, registered

ZONE = "hcloud:index/zone:Zone"
RRSET = "hcloud:index/zoneRrset:ZoneRrset"
GEO = "pulumi-python:dynamic/outpost:GeoRecordSet"
SERVER = "hcloud:index/server:Server"
DNS_STACKS = ["prod", "test"]


def config(stack: str) -> dict:
    return yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]


def public_addresses(stack: str, resources) -> dict[str, dict[int, str]]:
    """Host → {4: IPv4, 6: IPv6} as the program's servers got them, or as the static config says."""
    servers = {r.name: r for r in of_type(resources, SERVER)}
    found: dict[str, dict[int, str]] = {}
    for host, cfg in config(stack)["outpost:hosts"].items():
        if cfg["provider"] == "hcloud":
            out = servers[f"{host}-server"].outputs
            found[host] = {4: out["ipv4_address"], 6: out["ipv6_address"]}
        else:
            ip = ipaddress.ip_address(cfg["address"])
            found[host] = {ip.version: cfg["address"]}
    return found


def record_sets(resources) -> dict[tuple[str, str], set[str]]:
    sets: dict[tuple[str, str], set[str]] = {}
    for r in of_type(resources, RRSET):
        key = (r.inputs["name"], r.inputs["type"])
        assert key not in sets, f"two record sets for {key}"
        sets[key] = {v["value"] for v in r.inputs["records"]}
    return sets


def with_suffix(stack: str, text: str) -> str:
    return text.replace("{suffix}", config(stack).get("outpost:suffix", ""))


def relative(fqdn: str, zone: str) -> str | None:
    return "@" if fqdn == zone else fqdn[: -len(zone) - 1] if fqdn.endswith("." + zone) else None


@pytest.mark.parametrize("stack", DNS_STACKS)
def test_every_host_has_its_address_records(stack):
    resources = registered(stack)
    sets = record_sets(resources)
    suffix = config(stack).get("outpost:suffix", "")
    for host, addresses in public_addresses(stack, resources).items():
        for version, rtype in ((4, "A"), (6, "AAAA")):
            if version in addresses:
                assert sets[(f"{host}{suffix}", rtype)] == {addresses[version]}, (host, rtype)
            else:
                assert (f"{host}{suffix}", rtype) not in sets


@pytest.mark.parametrize("stack", DNS_STACKS)
def test_every_route_has_records_pointing_at_the_hosts_that_serve_it(stack):
    cfg = config(stack)
    resources = registered(stack)
    sets = record_sets(resources)
    addresses = public_addresses(stack, resources)
    zone, geo_zone = cfg["outpost:dns"]["zone"], cfg["outpost:geodns"]["zone"]
    geo = {(r.inputs["name"], r.inputs["type"]): r for r in of_type(resources, GEO)}
    serving: dict[str, set[str]] = {}
    for route in cfg["outpost:routes"]:
        serving.setdefault(with_suffix(stack, route["host"]), set()).update(cfg["outpost:services"][route["service"]]["hosts"])
    assert serving
    for fqdn, hosts in serving.items():
        if relative(fqdn, geo_zone) is not None:        # answered by GeoDNS, no plain record
            name = relative(fqdn, geo_zone)
            assert not [k for k in sets if k[0] == relative(fqdn, zone)], fqdn
            pools = geo[(name, "A")].inputs["pools"]
            assert {a for pool in pools.values() for a in pool} <= {addresses[h][4] for h in hosts}
            continue
        name = relative(fqdn, zone)
        assert name is not None, fqdn
        for version, rtype in ((4, "A"), (6, "AAAA")):
            assert sets[(name, rtype)] == {addresses[h][version] for h in hosts if version in addresses[h]}, fqdn


@pytest.mark.parametrize("stack", DNS_STACKS)
def test_extra_records_are_written_as_configured(stack):
    sets = record_sets(registered(stack))
    for rec in config(stack)["outpost:dns"]["records"]:
        value = rec["value"] if rec["type"] != "TXT" else f'"{rec["value"]}"'
        assert with_suffix(stack, value) in sets[(with_suffix(stack, rec["name"]), rec["type"])]
    if stack == "prod":
        assert sets[("geo", "NS")] == {"ns1.gcorelabs.net.", "ns2.gcdn.services."}
        assert sets[("@", "TXT")] == {'"v=spf1 -all"'}


def test_test_stack_names_carry_the_suffix_and_it_owns_no_zone():
    resources = registered("test")
    names = [r.inputs["name"] for r in of_type(resources, RRSET) + of_type(resources, GEO)]
    assert len(names) >= 8 and all("-test" in n for n in names), names
    assert not of_type(resources, ZONE)
    lookups = [i for i in invoked("test") if i.token == "hcloud:index/getZone:getZone"]
    assert [i.args for i in lookups] == [{"name": "example.org"}]
    assert {r.inputs["zone"] for r in of_type(resources, RRSET)} == {"example.org"}
    assert not any(r.protect for r in of_type(resources, RRSET) + of_type(resources, GEO))


def test_prod_owns_its_zone_protected_and_records_follow_it():
    resources = registered("prod")
    zones = of_type(resources, ZONE)
    assert len(zones) == 1
    zone = zones[0]
    assert zone.protect is True and zone.inputs["deleteProtection"] is True
    assert zone.inputs["name"] == "example.org" and zone.inputs["mode"] == "primary"
    assert not [i for i in invoked("prod") if i.token == "hcloud:index/getZone:getZone"]
    for rrset in of_type(resources, RRSET):
        assert rrset.inputs["zone"] == "example.org" and zone.urn in rrset.depends_on, rrset.name
        assert rrset.protect is False and rrset.inputs["labels"] == {"outpost-stack": "prod"}
    geo = of_type(resources, GEO)
    assert geo and all(g.protect for g in geo)


@pytest.mark.parametrize("stack", DNS_STACKS)
def test_geodns_token_is_a_secret_input_and_nowhere_else(stack):
    resources = registered(stack)
    placeholder = "<secret:gcore_token>"
    geo = of_type(resources, GEO)
    assert geo
    for record in geo:
        assert "token" in record.secret_inputs and record.inputs["token"] == placeholder
        assert record.additional_secret_outputs == ["token"]
    for res in resources:
        for key, value in res.inputs.items():
            if key not in res.secret_inputs:
                assert placeholder not in json.dumps(value), (res.name, key)


def test_geo_pools_hold_the_addresses_of_their_hosts():
    resources = registered("prod")
    addresses = public_addresses("prod", resources)
    record = of_type(resources, GEO)[0]
    assert record.inputs["pools"] == {"hel": [addresses["web1"][4]], "default": [addresses["web2"][4]]}
    assert record.inputs["rules"] == {"hel": ["FI", "SE", "NO", "EE"]}
    assert record.inputs["zone"] == "geo.example.org" and record.inputs["name"] == "kollektivkart"
    assert record.inputs["health"] == {"path": "/ready", "port": 443, "protocol": "https"}


def test_proxy_waits_for_the_names_it_serves():
    resources = registered("prod")
    urns = by_urn(resources)
    # the proxy is in each host's bundle: the bundle's Command waits for the names it serves
    bundles = {r.name: r for r in resources if r.name.endswith("-bundle")}
    waits = {host: {urns[u].name for u in p.depends_on if urns[u].type in (RRSET, GEO)}
             for host, p in bundles.items()}
    geo = "dns-geo-kollektivkart.geo.example.org-A-record"
    assert waits["web2-bundle"] == {"dns-kollektivkart.example.org-A", "dns-kollektivkart.example.org-AAAA", geo}
    assert waits["web1-bundle"] == waits["web2-bundle"] | {"dns-peerbook.example.org-A", "dns-peerbook.example.org-AAAA"}
    assert waits["vps1-bundle"] == set()           # no proxy there


def test_dns_resources_sit_under_one_component():
    resources = registered("prod")
    dns = [r for r in resources if r.type == "outpost:dns:Dns"]
    assert len(dns) == 1
    for rrset in of_type(resources, RRSET) + of_type(resources, ZONE):
        assert rrset.parent == dns[0].urn


def test_a_host_without_ipv6_gets_no_aaaa_anywhere():
    hosts = config("test")["outpost:hosts"]
    resources = registered("test", {"outpost:hosts": {"web1": dict(hosts["web1"], ipv6=False)}})
    types = {r.inputs["type"] for r in of_type(resources, RRSET)}
    assert "A" in types and "AAAA" not in types


def test_no_dns_config_no_dns_resources():
    resources = registered("local")
    assert not [r for r in resources if r.type in (ZONE, RRSET, GEO, "outpost:dns:Dns")]


def test_route_outside_every_zone_gets_no_record_and_a_note(caplog):
    cfg = stack_config("test")
    cfg["outpost:routes"] = cfg["outpost:routes"] + [{"host": "app{suffix}.example.net", "service": "peerbook"}]
    with caplog.at_level(logging.INFO):
        resources = record_program("test", cfg).registered
    assert not [r for r in of_type(resources, RRSET) if "example.net" in r.inputs["name"] or r.inputs["name"] == "app-test"]
    assert any("outpost:routes[3].host: app-test.example.net is outside example.org or geo.example.org" in m
               for m in caplog.messages), caplog.messages
