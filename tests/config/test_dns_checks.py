"""outpost:dns and outpost:geodns cross-references: each mistake reported with its key path, and
the names a valid stack publishes (config/records.py) as the README promises."""

import copy

import pytest

from components.load import load_file, parse
from components.config import records
from tests.config.test_validation import base_config, errors_for
from tests.conftest import ROOT


def dns(c):
    return c["outpost:dns"]


def extra(c, **record):
    dns(c)["records"].append(record)


def add_static(c, name="vps1", address="203.0.113.10"):
    c["outpost:hosts"][name] = {"provider": "static", "address": address,
                                "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbq9iEAXqO0l7jEi3b1V6MW3QEh0S1wJ4b6mMRBUHRq"}


def geo(c):
    return c["outpost:geodns"]["records"][0]


CASES = {
    "extra record takes a host's name": (
        lambda c: extra(c, name="web1{suffix}", type="A", value="192.0.2.1"),
        "Pulumi.test.yaml: outpost:dns.records[1].name: web1-test.example.org already gets A records from outpost:hosts.web1"),
    "host named like a route hostname": (
        lambda c: c["outpost:hosts"].update(kollektivkart=dict(c["outpost:hosts"]["web1"], networks={})),
        "Pulumi.test.yaml: outpost:routes[0].host: kollektivkart-test.example.org already gets A records from outpost:hosts.kollektivkart"),
    "CNAME beside a route's addresses": (
        lambda c: extra(c, name="peerbook{suffix}", type="CNAME", value="web1-test.example.org."),
        "Pulumi.test.yaml: outpost:dns.records[1].name: peerbook-test.example.org has a CNAME (outpost:dns.records[1]), "
        "which cannot stand beside other records"),
    "name without suffix in a shared zone": (
        lambda c: extra(c, name="mail", type="MX", value="10 mx.example.net."),
        "Pulumi.test.yaml: outpost:dns.records[1].name: 'mail' has no {suffix}: outpost:dns.create_zone is false"),
    "route without suffix in a shared zone": (
        lambda c: c["outpost:routes"].append({"host": "status.example.org", "service": "peerbook"}),
        "Pulumi.test.yaml: outpost:routes[3].host: 'status.example.org' has no {suffix}"),
    "full name instead of a relative one": (
        lambda c: extra(c, name="txt{suffix}.example.org", type="TXT", value="hello"),
        "Pulumi.test.yaml: outpost:dns.records[1].name: 'txt{suffix}.example.org' is a full name; names are relative"),
    "not a record name": (
        lambda c: extra(c, name="bad name{suffix}", type="TXT", value="hello"),
        "Pulumi.test.yaml: outpost:dns.records[1].name: 'bad name{suffix}' is not a record name"),
    "CNAME at the apex": (
        lambda c: dns(c).update(create_zone=True) or extra(c, name="@", type="CNAME", value="web1.example.org."),
        "Pulumi.test.yaml: outpost:dns.records[1].type: a CNAME record cannot sit at the zone apex"),
    "two TTLs in one record set": (
        lambda c: extra(c, name="t{suffix}", type="TXT", value="a", ttl=60) or extra(c, name="t{suffix}", type="TXT", value="b"),
        "Pulumi.test.yaml: outpost:dns.records[2].ttl: differs from dns.records[1]'s"),
    "geodns and dns in one zone": (
        lambda c: c["outpost:geodns"].update(zone="example.org"),
        "Pulumi.test.yaml: outpost:geodns.zone: 'example.org' is also outpost:dns.zone; one provider serves a zone"),
    "route served by a host addressed by name": (
        lambda c: add_static(c, address="vps1.example.net") or c["outpost:services"]["peerbook"].update(hosts=["web1", "vps1"]),
        "Pulumi.test.yaml: outpost:routes[1].host: peerbook-test.example.org is served by host 'vps1', whose address "
        "'vps1.example.net' is not an IP address"),
    "geo pool host that does not serve the name": (
        lambda c: add_static(c) or geo(c)["pools"].update(default=["vps1"]),
        "Pulumi.test.yaml: outpost:geodns.records[0].pools.default[0]: host 'vps1' does not serve "
        "kollektivkart-test.geo.example.org (the routes for it run on web1)"),
    "geo AAAA on a host without IPv6": (
        lambda c: c["outpost:hosts"]["web1"].update(ipv6=False) or geo(c).update(type="AAAA"),
        "Pulumi.test.yaml: outpost:geodns.records[0].pools.default[0]: host 'web1' has no public IPv6 address for a AAAA record"),
    "geo host in two pools": (
        lambda c: geo(c).update(pools={"eu": ["web1"], "default": ["web1"]}, rules={"eu": ["EU"]}),
        "Pulumi.test.yaml: outpost:geodns.records[0].pools.default[0]: host 'web1' is already in pool 'eu'"),
    "geo pool that never answers": (
        lambda c: add_static(c) or c["outpost:services"]["kollektivkart"].update(hosts=["web1", "vps1"])
        or geo(c).update(pools={"eu": ["vps1"], "default": ["web1"]}),
        "Pulumi.test.yaml: outpost:geodns.records[0].pools.eu: pool 'eu' has no rule and is not the default pool"),
    "geo region in two rules": (
        lambda c: add_static(c) or c["outpost:services"]["kollektivkart"].update(hosts=["web1", "vps1"])
        or geo(c).update(pools={"eu": ["vps1"], "de": ["web1"]}, default="de", rules={"eu": ["EU", "AF"], "de": ["DE", "EU"]}),
        "Pulumi.test.yaml: outpost:geodns.records[0].rules.de[1]: EU already routes to pool 'eu'"),
    "geo record defined twice": (
        lambda c: c["outpost:geodns"]["records"].append(copy.deepcopy(geo(c))),
        "Pulumi.test.yaml: outpost:geodns.records[1].name: geodns.records[0] already defines A records for 'kollektivkart-test'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_dns_mistake_is_reported_with_its_key(case):
    mutate, expected = CASES[case]
    lines = errors_for(mutate)
    assert len(lines) == 1 and lines[0].startswith(expected), lines   # one mistake, one message (not one per A/AAAA)


def test_same_name_different_type_is_no_clash():
    config = base_config()
    extra(config, name="web1{suffix}", type="TXT", value="owner=ops")
    extra(config, name="web1{suffix}", type="CAA", value='0 issue "letsencrypt.org"')
    stack = parse(config, "test")
    assert {(rs.name, rs.type) for rs in records.record_sets(stack)} >= {
        ("web1-test", "A"), ("web1-test", "AAAA"), ("web1-test", "TXT"), ("web1-test", "CAA")}


def test_an_owned_zone_needs_no_suffix():
    config = base_config()
    dns(config)["create_zone"] = True
    extra(config, name="mail", type="MX", value="10 mx.example.net.")
    parse(config, "test")


def test_records_of_the_repository_stacks():
    """Hosts as <host><suffix>, routes by hostname relative to the zone, the geo-zone route left to
    GeoDNS, extras grouped by name and type with TXT quoted for the API."""
    prod = load_file(ROOT / "Pulumi.prod.yaml")
    sets = {(rs.name, rs.type): rs for rs in records.record_sets(prod)}
    H = records.HostAddress
    assert sets[("web1", "A")].values == (H("web1", 4),) and sets[("web1", "AAAA")].values == (H("web1", 6),)
    assert ("vps1", "A") in sets and ("vps1", "AAAA") not in sets           # its address is IPv4
    assert sets[("kollektivkart", "A")].values == (H("web1", 4), H("web2", 4))
    assert sets[("peerbook", "AAAA")].values == (H("web1", 6),)
    assert sets[("geo", "NS")].values == ("ns1.gcorelabs.net.", "ns2.gcdn.services.")
    assert sets[("@", "TXT")].values == ('"v=spf1 -all"',)
    assert not [k for k in sets if "geo" in k[0] and k[1] != "NS"]          # answered by GeoDNS
    test = load_file(ROOT / "Pulumi.test.yaml")
    names = [rs.name for rs in records.record_sets(test)]
    assert names and all(n.endswith("-test") for n in names), names
    assert records.record_value("TXT", 'say "hi"') == '"say \\"hi\\""'
    assert records.record_value("TXT", "x" * 300) == f'"{"x" * 255}" "{"x" * 45}"'


def test_static_host_addressed_by_name_gets_a_cname():
    config = base_config()
    add_static(config, address="vps1.example.net")
    sets = {(rs.name, rs.type): rs for rs in records.record_sets(parse(config, "test"))}
    assert sets[("vps1-test", "CNAME")].values == ("vps1.example.net.",)
    assert ("vps1-test", "A") not in sets


def test_routes_outside_every_zone_are_noted_not_rejected():
    config = base_config()
    config["outpost:routes"].append({"host": "app{suffix}.example.net", "service": "peerbook"})
    config["outpost:routes"].append({"host": "other{suffix}.geo.example.org", "service": "peerbook"})
    stack = parse(config, "test")
    notes = records.notes(stack)
    assert notes == [
        ("routes[3].host", "app-test.example.net is outside example.org or geo.example.org: outpost publishes no "
                           "record for it; point it at the hosts serving it wherever that name lives"),
        ("routes[4].host", "other-test.geo.example.org lies in the GeoDNS zone geo.example.org but no "
                           "outpost:geodns record answers it"),
    ]
    assert not [rs for rs in records.record_sets(stack) if "example.net" in rs.name or rs.name.startswith("other")]


def test_no_notes_without_dns():
    assert records.notes(load_file(ROOT / "Pulumi.local.yaml")) == []


def test_check_prints_notes(tmp_path, monkeypatch, capsys):
    import yaml

    import components.__main__ as cli
    doc = yaml.safe_load((ROOT / "Pulumi.test.yaml").read_text())
    doc["config"]["outpost:routes"].append({"host": "app{suffix}.example.net", "service": "peerbook"})
    (tmp_path / "Pulumi.notes.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setattr(cli, "ROOT", tmp_path)
    assert cli.main(["check", "--stack", "notes"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Pulumi.notes.yaml: ok",
        "Pulumi.notes.yaml: note: outpost:routes[3].host: app-test.example.net is outside example.org or "
        "geo.example.org: outpost publishes no record for it; point it at the hosts serving it wherever that name lives",
    ]
