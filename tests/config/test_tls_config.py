"""The TLS part of the contract: which mode needs what, each mistake with its own message.

Based on Pulumi.test.yaml (suffix "-test", routes kollektivkart-test.example.org and
peerbook-test.example.org, outpost:dns holding example.org, tls: acme with Caddy), without its
GeoDNS zone.
"""

import copy

import pytest
import yaml

from components.config import ConfigError
from components.load import parse
from components.render.routes import certificate_names
from tests.conftest import ROOT

BASE = yaml.safe_load((ROOT / "Pulumi.test.yaml").read_text())["config"]
# Without its GeoDNS part (and the route in that zone), and owning its zone (so names need no
# {suffix}): the cases below hold exactly the zones they name.
BASE["outpost:dns"]["create_zone"] = True
del BASE["outpost:geodns"]
BASE["outpost:routes"] = [r for r in BASE["outpost:routes"] if ".geo." not in r["host"]]
GEODNS = {"provider": "bunny", "token": "bunny_token", "zone": "linkedlist.org"}


def config(proxy: dict | None = None, dns: dict | None = None, **keys) -> dict:
    """Pulumi.test.yaml with outpost:proxy / outpost:dns keys merged in and other keys replaced."""
    c = copy.deepcopy(BASE)
    c["outpost:proxy"].update(proxy or {})
    c["outpost:dns"].update(dns or {})
    c["outpost:secrets"].update({n: {"secure": "v1:x"} for n in ("dns_token", "bunny_token", "acme_root")})
    c.update({f"outpost:{k}": v for k, v in keys.items()})
    return c


ACME_DNS = {"tls": "acme-dns"}
WITH_TOKEN = {"token": "dns_token"}


def problems(c: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(c, "test")
    return [line.removeprefix("Pulumi.test.yaml: outpost:") for line in info.value.lines]


def test_acme_dns_through_the_zones_outpost_manages_is_valid():
    routes = BASE["outpost:routes"] + [{"host": "eu.linkedlist.org", "service": "kollektivkart"}]
    stack = parse(config(ACME_DNS, WITH_TOKEN, geodns=GEODNS, routes=routes), "test")
    assert stack.dns_zone_for("kollektivkart-test.example.org") is stack.dns
    assert stack.dns_zone_for("eu.linkedlist.org") is stack.geodns
    assert stack.dns_zone_for("*.example.org") is stack.dns
    assert stack.dns_zone_for("example.com") is None and stack.dns_zone_for("notexample.org") is None


def test_the_longer_zone_holds_a_name_when_both_would():
    stack = parse(config(ACME_DNS, WITH_TOKEN, geodns={**GEODNS, "zone": "eu.example.org"}), "test")
    assert stack.dns_zone_for("app.eu.example.org") is stack.geodns
    assert stack.dns_zone_for("app.example.org") is stack.dns


def test_acme_dns_needs_the_hetzner_token_secret_name():
    assert problems(config(ACME_DNS)) == [
        "dns.token: required for tls: acme-dns (kollektivkart-test.example.org, peerbook-test.example.org in zone "
        "example.org): the name of the secret in outpost:secrets holding a Hetzner API token that may edit the zone "
        "(a Cloud API token, as for zones in the Hetzner Console; it may hold the same value as hcloud:token)"]
    assert problems(config(ACME_DNS, {"token": "nope"})) == [
        "dns.token: secret 'nope' is not in outpost:secrets (set it with "
        "`pulumi config set --secret --path 'outpost:secrets.nope' VALUE`)"]


def test_acme_dns_names_outside_every_zone_are_refused():
    routes = BASE["outpost:routes"] + [{"host": "app.example.com", "service": "kollektivkart"}]
    assert problems(config(ACME_DNS, WITH_TOKEN, routes=routes)) == [
        "routes[2].host: app.example.com is in no zone outpost manages (outpost:dns holds example.org): tls: acme-dns "
        "answers DNS-01 through the provider holding the name's zone; move the name under a zone or use another tls mode"]
    c = config(ACME_DNS)
    del c["outpost:dns"]
    assert problems(c) == ["proxy.tls: acme-dns answers DNS-01 through outpost:dns or outpost:geodns; define one of them"]


def test_acme_and_acme_dns_need_an_email():
    c = config(ACME_DNS, WITH_TOKEN)
    del c["outpost:proxy"]["email"]
    assert problems(c) == ["proxy.email: required for tls: acme-dns (the ACME account contact)"]


@pytest.mark.parametrize("kind", ["haproxy", "nginx"])
def test_acme_with_haproxy_or_nginx_names_the_modes_that_give_it_certificates(kind):
    assert problems(config({"kind": kind})) == [
        f"proxy.tls: acme means the proxy obtains its own certificates, which only kind: caddy does; {kind} needs "
        "its certificates from another mode: acme-dns (outpost issues them from the ACME CA through DNS-01), "
        "internal (a stack CA), files (certificate and key from outpost:secrets) or none (plain HTTP)"]
    parse(config({"kind": kind, "tls": "acme-dns"}, WITH_TOKEN), "test")
    parse(config({"kind": kind, "tls": "internal"}), "test")


def test_wildcards_share_one_certificate_among_the_hostnames_they_cover():
    routes = BASE["outpost:routes"] + [{"host": "api.eu.example.org", "service": "kollektivkart"},
                                       {"host": "example.org", "service": "kollektivkart"}]
    stack = parse(config({**ACME_DNS, "wildcards": ["*.example.org"]}, WITH_TOKEN, routes=routes), "test")
    assert certificate_names(stack) == {
        "*.example.org": ["kollektivkart-test.example.org", "peerbook-test.example.org"],
        "api.eu.example.org": ["api.eu.example.org"],      # two labels below: not covered
        "example.org": ["example.org"],                    # a wildcard never covers the bare parent
    }
    with_suffix = parse(config({"tls": "internal", "wildcards": ["*.apps{suffix}.example.org"]},
                               routes=[{"host": "a.apps{suffix}.example.org", "service": "kollektivkart"}]), "test")
    assert certificate_names(with_suffix) == {"*.apps-test.example.org": ["a.apps-test.example.org"]}


@pytest.mark.parametrize("proxy,expected", [
    ({"wildcards": ["*.example.org"]},
     "proxy.wildcards: only applies to tls: acme-dns or internal (certificates outpost issues)"),
    ({"tls": "internal", "wildcards": ["*.other.org"]},
     "proxy.wildcards[0]: *.other.org covers no route hostname (it covers exactly one label in place of the *, "
     "e.g. app.example.org for *.example.org); remove it or fix it"),
    ({"tls": "internal", "wildcards": ["*.org"]},
     "proxy.wildcards[0]: '*.org' is not a wildcard name like *.example.org"),
    ({"tls": "internal", "wildcards": ["a.*.example.org"]},
     "proxy.wildcards[0]: 'a.*.example.org' is not a wildcard name like *.example.org"),
    ({"tls": "internal", "wildcards": ["*.example.org", "*.example.org"]},
     "proxy.wildcards[1]: *.example.org is listed twice"),
    ({"acme_ca_root": "acme_root"},
     "proxy.acme_ca_root: only applies with acme_ca (a private ACME CA); Let's Encrypt is trusted already"),
    ({"tls": "acme-dns", "acme_ca": "https://ca.example.net/dir", "acme_ca_root": "acme_root"},
     "proxy.acme_ca_root: only applies to tls: acme (Caddy's own ACME client); with acme-dns the machine running "
     "`pulumi up` must trust the CA (lego reads LEGO_CA_CERTIFICATES)"),
    ({"acme_ca": "https://ca.example.net/dir", "acme_ca_root": "missing"},
     "proxy.acme_ca_root: secret 'missing' is not in outpost:secrets"),
    ({"acme_ca": "http://ca.example.net/dir"},
     "proxy.acme_ca: 'http://ca.example.net/dir' is not an ACME directory URL like "
     "https://acme-staging-v02.api.letsencrypt.org/directory (ACME needs https)"),
    ({"tls": "internal", "acme_ca": "https://ca.example.net/dir"},
     "proxy.acme_ca: only applies to tls: acme or acme-dns"),
])
def test_tls_option_mistakes(proxy, expected):
    found = problems(config(proxy, WITH_TOKEN))
    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_wildcard_outside_every_zone_is_refused_for_acme_dns():
    routes = [{"host": "a.example.com", "service": "kollektivkart"}]
    found = problems(config({**ACME_DNS, "wildcards": ["*.example.com"]}, WITH_TOKEN, routes=routes))
    assert found == ["proxy.wildcards[0]: *.example.com is in no zone outpost manages (outpost:dns holds example.org): "
                     "tls: acme-dns answers DNS-01 through the provider holding the name's zone; move the name under "
                     "a zone or use another tls mode"]


def test_wildcard_routes_point_to_wildcard_certificates_instead():
    routes = [{"host": "*.example.org", "service": "kollektivkart"}]
    assert problems(config(routes=routes)) == [
        "routes[0].host: wildcard routes are not supported (the proxy configurations outpost renders name each host); "
        "list each hostname: they can share one certificate with outpost:proxy.wildcards"]


def test_a_private_acme_ca_with_its_root_is_valid_for_caddy_acme():
    stack = parse(config({"acme_ca": "https://127.0.0.1:14000/dir", "acme_ca_root": "acme_root"}), "test")
    assert stack.proxy.acme_ca_root == "acme_root"
