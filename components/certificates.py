"""Certificates outpost issues once per stack and ships to every host that serves the name.

`tls: internal` → a stack CA (pulumi-tls) and one certificate per route hostname signed by it;
`tls: files` → the certificate and key from `outpost:secrets`. Either way the result is a map of
secret values `tls:<host>.crt` / `tls:<host>.key` that fills the render layer's placeholders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_tls as tls

from .config.model import Stack

CA_VALIDITY_HOURS = 10 * 365 * 24
CERT_VALIDITY_HOURS = 397 * 24          # browsers' limit for leaf certificates
EARLY_RENEWAL_HOURS = 30 * 24           # `pulumi up` renews within 30 days of expiry


@dataclass
class CertificatesArgs:
    stack: Stack
    hosts: list[str]                                   # route hostnames that need a certificate
    secrets: dict[str, pulumi.Output[str]]             # config secrets (tls: files)


class Certificates(pulumi.ComponentResource):
    values: dict[str, pulumi.Output[str]]              # "tls:<host>.crt"/".key" → secret value
    ca_certificate: Optional[pulumi.Output[str]]

    def __init__(self, name: str, args: CertificatesArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("outpost:tls:Certificates", name, None, opts)
        proxy = args.stack.proxy
        self.values, self.ca_certificate = {}, None
        if proxy.tls == "files":
            for host in args.hosts:
                self.values[f"tls:{host}.crt"] = args.secrets[proxy.certificate]
                self.values[f"tls:{host}.key"] = args.secrets[proxy.key]
        elif proxy.tls == "internal":
            self._internal(name, args)
        self.register_outputs({"ca_certificate": self.ca_certificate})

    def _internal(self, name: str, args: CertificatesArgs) -> None:
        child = pulumi.ResourceOptions(parent=self)
        ca_key = tls.PrivateKey(f"{name}-ca-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        ca = tls.SelfSignedCert(
            f"{name}-ca", private_key_pem=ca_key.private_key_pem, is_ca_certificate=True,
            subject=tls.SelfSignedCertSubjectArgs(common_name=f"outpost {pulumi.get_stack()} CA",
                                                  organization="outpost"),
            validity_period_hours=CA_VALIDITY_HOURS, early_renewal_hours=EARLY_RENEWAL_HOURS,
            allowed_uses=["cert_signing", "crl_signing", "digital_signature"], opts=child)
        self.ca_certificate = ca.cert_pem
        for host in args.hosts:
            key = tls.PrivateKey(f"{name}-{host}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
            request = tls.CertRequest(f"{name}-{host}-csr", private_key_pem=key.private_key_pem,
                                      dns_names=[host], subject=tls.CertRequestSubjectArgs(common_name=host),
                                      opts=child)
            cert = tls.LocallySignedCert(
                f"{name}-{host}", cert_request_pem=request.cert_request_pem,
                ca_private_key_pem=ca_key.private_key_pem, ca_cert_pem=ca.cert_pem,
                validity_period_hours=CERT_VALIDITY_HOURS, early_renewal_hours=EARLY_RENEWAL_HOURS,
                allowed_uses=["digital_signature", "key_encipherment", "server_auth"], opts=child)
            chain = pulumi.Output.all(cert.cert_pem, ca.cert_pem).apply(lambda pems: "".join(pems))
            self.values[f"tls:{host}.crt"] = pulumi.Output.secret(chain)
            self.values[f"tls:{host}.key"] = pulumi.Output.secret(key.private_key_pem)
