"""Certificates outpost issues once per stack and ships to every host that serves the name.

`tls: internal` → a stack CA (pulumi-tls) and one certificate per route hostname signed by it;
`tls: acme-dns` → one certificate per route hostname from an ACME CA (Let's Encrypt unless
`outpost:proxy.acme_ca`), issued through DNS-01 with pulumiverse-acme: the challenge's TXT record
goes through the DNS provider holding the name's zone (`outpost:dns` → lego's `hetzner`,
`outpost:geodns` → `gcore` or `bunny`) with that zone's token from `outpost:secrets`;
`tls: files` → the certificate and key from `outpost:secrets`.
With `outpost:proxy.wildcards` (acme-dns, internal) the hostnames a wildcard covers share its
certificate. Either way the result is a map of secret values `tls:<host>.crt` (certificate, then
its issuer chain) / `tls:<host>.key` that fills the render layer's placeholders.

Renewal is `pulumi up`'s: internal leaves are re-signed and ACME certificates re-ordered when they
are within 30 days of expiry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_tls as tls
import pulumiverse_acme as acme

from .config.model import Dns, GeoDns, Stack
from .render.routes import certificate_names

CA_VALIDITY_HOURS = 10 * 365 * 24
CERT_VALIDITY_HOURS = 397 * 24          # browsers' limit for leaf certificates
EARLY_RENEWAL_HOURS = 30 * 24           # `pulumi up` renews within 30 days of expiry
ACME_MIN_DAYS_REMAINING = 30            # the same for ACME certificates
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"
# DNS provider → (lego DNS provider name, the lego setting that carries its API token).
# hetzner: the Cloud API's DNS (zones in the Hetzner Console); lego reads HETZNER_API_TOKEN.
DNS_CHALLENGE = {
    "hetzner": ("hetzner", "HETZNER_API_TOKEN"),
    "gcore": ("gcore", "GCORE_PERMANENT_API_TOKEN"),
    "bunny": ("bunny", "BUNNY_API_KEY"),
}


@dataclass
class CertificatesArgs:
    stack: Stack
    hosts: list[str]                                   # route hostnames that need a certificate
    secrets: dict[str, pulumi.Output[str]]             # config secrets (tls: files, DNS tokens)
    after: list[pulumi.Resource] = field(default_factory=list)  # acme-dns orders wait for these (the zone)


def resource_label(name: str) -> str:
    """A certificate name as part of a resource name: `*.example.org` → `wildcard.example.org`."""
    return name.replace("*", "wildcard", 1)


def chain(certificate_pem: pulumi.Input[str], issuer_pem: pulumi.Input[str]) -> pulumi.Output[str]:
    """The leaf certificate followed by its issuer chain, as one secret PEM text."""
    def join(pems: list[str]) -> str:
        return "".join(p if p.endswith("\n") else p + "\n" for p in pems if p)
    return pulumi.Output.secret(pulumi.Output.all(certificate_pem, issuer_pem).apply(join))


def dns_challenge(zone: Dns | GeoDns, secrets: dict[str, pulumi.Output[str]]) -> acme.CertificateDnsChallengeArgs:
    """The DNS-01 solver for a name in ZONE: lego's provider with the zone's token, secret."""
    provider, setting = DNS_CHALLENGE[zone.provider]
    assert zone.token is not None, "config checks require a token for acme-dns zones"
    return acme.CertificateDnsChallengeArgs(provider=provider,
                                            config={setting: pulumi.Output.secret(secrets[zone.token])})


class Certificates(pulumi.ComponentResource):
    values: dict[str, pulumi.Output[str]]              # "tls:<host>.crt"/".key" → secret value
    ca_certificate: Optional[pulumi.Output[str]]

    def __init__(self, name: str, args: CertificatesArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("outpost:tls:Certificates", name, None, opts)
        proxy = args.stack.proxy
        self.values, self.ca_certificate = {}, None
        names = certificate_names(args.stack)
        if proxy.tls == "files":
            for host in args.hosts:
                self.values[f"tls:{host}.crt"] = args.secrets[proxy.certificate]
                self.values[f"tls:{host}.key"] = args.secrets[proxy.key]
        elif proxy.tls == "internal":
            self._internal(name, names)
        elif proxy.tls == "acme-dns" and names:
            self._acme_dns(name, names, args)
        self.register_outputs({"ca_certificate": self.ca_certificate})

    def _serve(self, hosts: list[str], certificate: pulumi.Output[str], key: pulumi.Output[str]) -> None:
        for host in hosts:
            self.values[f"tls:{host}.crt"] = certificate
            self.values[f"tls:{host}.key"] = pulumi.Output.secret(key)

    def _internal(self, name: str, names: dict[str, list[str]]) -> None:
        child = pulumi.ResourceOptions(parent=self)
        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        ca = tls.SelfSignedCert(
            f"{name}-ca", private_key_pem=ca_key.private_key_pem, is_ca_certificate=True,
            subject=tls.SelfSignedCertSubjectArgs(common_name=f"outpost {pulumi.get_stack()} CA",
                                                  organization="outpost"),
            validity_period_hours=CA_VALIDITY_HOURS, early_renewal_hours=EARLY_RENEWAL_HOURS,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature"], opts=child)
        self.ca_certificate = ca.cert_pem
        for cert_name, hosts in names.items():
            label = resource_label(cert_name)
            key = tls.PrivateKey(f"{name}-{label}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
            request = tls.CertRequest(f"{name}-{label}-csr", private_key_pem=key.private_key_pem,
                                      dns_names=[cert_name], subject=tls.CertRequestSubjectArgs(common_name=cert_name),
                                      opts=child)
            cert = tls.LocallySignedCert(
                f"{name}-{label}", cert_request_pem=request.cert_request_pem,
                ca_private_key_pem=ca_key.private_key_pem, ca_cert_pem=ca.cert_pem,
                validity_period_hours=CERT_VALIDITY_HOURS, early_renewal_hours=EARLY_RENEWAL_HOURS,
                allowed_uses=["digital_signature", "key_encipherment", "server_auth"], opts=child)
            self._serve(hosts, chain(cert.cert_pem, ca.cert_pem), key.private_key_pem)

    def _acme_dns(self, name: str, names: dict[str, list[str]], args: CertificatesArgs) -> None:
        """One ACME account (its key from pulumi-tls), then per name a certificate ordered
        through DNS-01; its private key is made by the provider (a new one on every renewal)."""
        stack, child = args.stack, pulumi.ResourceOptions(parent=self)
        server = acme.Provider(f"{name}-acme", server_url=stack.proxy.acme_ca or LETS_ENCRYPT, opts=child)
        with_server = pulumi.ResourceOptions(parent=self, provider=server)
        account_key = tls.PrivateKey(f"{name}-acme-account-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        account = acme.Registration(f"{name}-acme-account", account_key_pem=account_key.private_key_pem,
                                    email_address=stack.proxy.email, opts=with_server)
        for cert_name, hosts in names.items():
            zone = stack.dns_zone_for(cert_name)
            assert zone is not None, f"config checks put {cert_name} in a zone"
            cert = acme.Certificate(
                f"{name}-{resource_label(cert_name)}", account_key_pem=account.account_key_pem,
                common_name=cert_name, key_type="P256", min_days_remaining=ACME_MIN_DAYS_REMAINING,
                dns_challenges=[dns_challenge(zone, args.secrets)],
                opts=pulumi.ResourceOptions.merge(with_server, pulumi.ResourceOptions(depends_on=args.after)))
            self._serve(hosts, chain(cert.certificate_pem, cert.issuer_pem), cert.private_key_pem)
