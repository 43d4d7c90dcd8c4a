"""`tls: acme-dns` under Pulumi's mocks: the ACME account and one DNS-01 certificate per route
hostname (or per wildcard), each answered through the provider holding the name's zone, with
every key and token secret, and the results shipped to every host that serves the name.

The issuance itself runs inside the pulumiverse-acme provider plugin (lego), which only the
Pulumi engine starts; the Caddy `tls: acme` path runs against a real Pebble in tests/acme/.
"""

from __future__ import annotations

import json

import yaml

from components.certificates import ACME_MIN_DAYS_REMAINING, LETS_ENCRYPT
from tests.conftest import ROOT
from tests.program.harness import bundle_commands, manifests_of, of_type, registered

CERTIFICATE = "acme:index/certificate:Certificate"
REGISTRATION = "acme:index/registration:Registration"
PROVIDER = "pulumi:providers:acme"
PRIVATE_KEY = "tls:index/privateKey:PrivateKey"
COMMAND = "command:remote:Command"
PROD = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]
TOKENS = {"hetzner_dns_token": "hetzner-token-value", "gcore_token": "gcore-token-value"}


def acme_dns(**proxy) -> dict:
    """prod with tls: acme-dns; kollektivkart also answers eu.linkedlist.org, a GeoDNS (gcore) zone
    that replaces prod's own (with the route prod has in it)."""
    return {
        "outpost:proxy": {"kind": "caddy", "tls": "acme-dns", "email": "ops@example.org", **proxy},
        "outpost:dns": {**PROD["outpost:dns"], "token": "hetzner_dns_token"},
        "outpost:geodns": {"provider": "gcore", "token": "gcore_token", "zone": "linkedlist.org"},
        "outpost:routes": [r for r in PROD["outpost:routes"] if ".geo." not in r["host"]] + [{"host": "eu.linkedlist.org", "service": "kollektivkart"}],
        "outpost:secrets": {**PROD["outpost:secrets"], **{name: {"secure": "v1:x"} for name in TOKENS}},
    }


def by_name(resources, type_):
    return {r.name: r for r in of_type(resources, type_)}


def test_one_certificate_per_route_hostname_through_the_zone_holders_provider():
    resources = registered("prod", acme_dns())
    certs = by_name(resources, CERTIFICATE)
    assert sorted(certs) == ["tls-eu.linkedlist.org", "tls-kollektivkart.example.org", "tls-peerbook.example.org"]
    for name, cert in certs.items():
        assert cert.inputs["commonName"] == name.removeprefix("tls-")
        assert cert.inputs["minDaysRemaining"] == ACME_MIN_DAYS_REMAINING == 30
        assert cert.inputs["keyType"] == "P256"
        assert len(cert.inputs["dnsChallenges"]) == 1
    hetzner = certs["tls-kollektivkart.example.org"].inputs["dnsChallenges"][0]
    assert hetzner == {"provider": "hetzner", "config": {"HETZNER_API_TOKEN": "<secret:hetzner_dns_token>"}}
    gcore = certs["tls-eu.linkedlist.org"].inputs["dnsChallenges"][0]
    assert gcore == {"provider": "gcore", "config": {"GCORE_PERMANENT_API_TOKEN": "<secret:gcore_token>"}}
    # prod creates its zone in the same `pulumi up`: no order is placed before the zone exists.
    [zone] = of_type(resources, "hcloud:index/zone:Zone")
    assert all(zone.urn in cert.depends_on for cert in certs.values())


def test_the_account_and_every_certificate_use_one_acme_server_and_account():
    resources = registered("prod", acme_dns())
    [provider] = of_type(resources, PROVIDER)
    assert provider.inputs["serverUrl"] == LETS_ENCRYPT
    [account] = of_type(resources, REGISTRATION)
    assert account.inputs["emailAddress"] == "ops@example.org"
    account_key = by_name(resources, PRIVATE_KEY)["tls-acme-account-key"]
    assert account.inputs["accountKeyPem"] == account_key.outputs["private_key_pem"]
    for res in [account, *of_type(resources, CERTIFICATE)]:
        assert res.parent.endswith("outpost:tls:Certificates::tls"), res.name
    for cert in of_type(resources, CERTIFICATE):
        assert cert.inputs["accountKeyPem"] == account_key.outputs["private_key_pem"]
    custom = registered("prod", acme_dns(acme_ca="https://acme-staging-v02.api.letsencrypt.org/directory"))
    assert [p.inputs["serverUrl"] for p in of_type(custom, PROVIDER)] == [
        "https://acme-staging-v02.api.letsencrypt.org/directory"]


def test_keys_and_challenge_tokens_are_secret_and_nothing_secret_is_plain():
    resources = registered("prod", acme_dns())
    account_key = by_name(resources, PRIVATE_KEY)["tls-acme-account-key"]
    assert "privateKeyPem" in account_key.additional_secret_outputs
    [account] = of_type(resources, REGISTRATION)
    assert account.secret_inputs == {"accountKeyPem"}
    for cert in of_type(resources, CERTIFICATE):
        assert {"accountKeyPem", "dnsChallenges"} <= cert.secret_inputs, cert.name
        assert "privateKeyPem" in cert.additional_secret_outputs, cert.name
    secret_texts = ["<secret:", "<mock private key"]
    for res in resources:
        plain = {k: v for k, v in res.inputs.items() if k not in res.secret_inputs}
        text = json.dumps(plain)
        assert not any(s in text for s in secret_texts), f"{res.type} {res.name} has a secret in a plain input"


def test_every_host_serving_a_name_gets_its_certificate_chain_and_key_as_secret_stdin():
    resources = registered("prod", acme_dns())
    bundles = bundle_commands(resources)
    served = {"web1": ["eu.linkedlist.org", "kollektivkart.example.org", "peerbook.example.org"],
              "web2": ["eu.linkedlist.org", "kollektivkart.example.org"]}   # peerbook runs on web1 only
    for host, names in served.items():
        assert "stdin" in bundles[host].secret_inputs
        manifests = manifests_of(bundles[host])
        files = {f["path"]: f for f in manifests["tls"]["files"]}
        assert sorted(files) == [f"/etc/outpost/tls/{n}.pem" for n in names]
        for name in names:
            bundle = files[f"/etc/outpost/tls/{name}.pem"]
            assert bundle["content"] == (f"<mock certificate tls-{name}>\n<mock issuer of tls-{name}>\n\n"
                                         f"<mock private key tls-{name}>")
            assert (bundle["mode"], bundle["group"]) == ("0640", "caddy")
        assert list(manifests).index("tls") < list(manifests).index("proxy")
    assert "tls" not in manifests_of(bundles["vps1"])


def test_a_wildcard_certificate_serves_every_hostname_it_covers():
    resources = registered("prod", acme_dns(wildcards=["*.example.org"]))
    certs = by_name(resources, CERTIFICATE)
    assert sorted(certs) == ["tls-eu.linkedlist.org", "tls-wildcard.example.org"]
    assert certs["tls-wildcard.example.org"].inputs["commonName"] == "*.example.org"
    assert certs["tls-wildcard.example.org"].inputs["dnsChallenges"][0]["provider"] == "hetzner"
    web1 = manifests_of(bundle_commands(resources)["web1"])["tls"]
    files = {f["path"]: f["content"] for f in web1["files"]}
    for host in ("kollektivkart.example.org", "peerbook.example.org"):
        assert files[f"/etc/outpost/tls/{host}.pem"].startswith("<mock certificate tls-wildcard.example.org>\n")


def test_internal_tls_signs_a_wildcard_too():
    # prod's routes: two names under example.org, one under geo.example.org (two labels below).
    overrides = {"outpost:proxy": {"kind": "caddy", "tls": "internal", "wildcards": ["*.example.org", "*.geo.example.org"]}}
    resources = registered("prod", overrides)
    leaves = by_name(resources, "tls:index/locallySignedCert:LocallySignedCert")
    assert sorted(leaves) == ["tls-wildcard.example.org", "tls-wildcard.geo.example.org"]
    requests = of_type(resources, "tls:index/certRequest:CertRequest")
    assert sorted(r.inputs["dnsNames"][0] for r in requests) == ["*.example.org", "*.geo.example.org"]
    assert not of_type(resources, CERTIFICATE) and not of_type(resources, PROVIDER)
