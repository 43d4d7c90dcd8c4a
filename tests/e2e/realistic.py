"""Mocks that answer pulumi-tls resources with real keys and certificates (cryptography), so the
end-to-end suite can run the program's Commands against a real proxy: a stack CA that signs
real leaf certificates, as pulumi-tls would. Everything else is `OutpostMocks`."""

from __future__ import annotations

import datetime
import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from components.program import OutpostMocks, _unwrap_secrets

PEM = serialization.Encoding.PEM


def _key_outputs(algorithm: str) -> dict[str, str]:
    key = ed25519.Ed25519PrivateKey.generate() if algorithm == "ED25519" else ec.generate_private_key(ec.SECP256R1())
    return {
        "private_key_pem": key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode(),
        "private_key_openssh": key.private_bytes(PEM, serialization.PrivateFormat.OpenSSH,
                                                 serialization.NoEncryption()).decode(),
        "public_key_openssh": key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                           serialization.PublicFormat.OpenSSH).decode() + "\n",
        "public_key_pem": key.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
    }


def _name(subject: dict | None) -> x509.Name:
    subject = subject or {}
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, subject.get("commonName", "outpost"))]
    if subject.get("organization"):
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, subject["organization"]))
    return x509.Name(attrs)


def _sign(subject: x509.Name, public_key, issuer: x509.Name, ca_key, hours: float, is_ca: bool,
          dns_names: list[str]) -> str:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(hours=hours))
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if is_ca:
        builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if dns_names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns_names]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(PEM).decode()


class RealisticMocks(OutpostMocks):
    """Keys and certificates are made once per resource name and inputs, then kept, as Pulumi
    keeps them in state: the next run of the program sees the same values."""

    def __init__(self):
        self.kept: dict[tuple[str, str, str], tuple[str, dict]] = {}

    def new_resource(self, args):
        if args.typ.startswith("tls:"):
            key = (args.typ, args.name, json.dumps(args.inputs, sort_keys=True, default=str))
            if key not in self.kept:
                self.kept[key] = self._tls(args)
            return self.kept[key]
        return super().new_resource(args)

    def _tls(self, args):
        inputs = _unwrap_secrets(args.inputs)
        if args.typ == "tls:index/privateKey:PrivateKey":
            return f"{args.name}-id", {**inputs, **_key_outputs(inputs.get("algorithm", "ED25519"))}
        if args.typ == "tls:index/selfSignedCert:SelfSignedCert":
            key = serialization.load_pem_private_key(inputs["privateKeyPem"].encode(), None)
            name = _name(inputs.get("subject"))
            cert = _sign(name, key.public_key(), name, key, inputs["validityPeriodHours"],
                         bool(inputs.get("isCaCertificate")), inputs.get("dnsNames") or [])
            return f"{args.name}-id", {**inputs, "cert_pem": cert}
        if args.typ == "tls:index/certRequest:CertRequest":
            key = serialization.load_pem_private_key(inputs["privateKeyPem"].encode(), None)
            csr = (x509.CertificateSigningRequestBuilder().subject_name(_name(inputs.get("subject")))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in inputs.get("dnsNames") or []]),
                                  critical=False).sign(key, hashes.SHA256()))
            return f"{args.name}-id", {**inputs, "cert_request_pem": csr.public_bytes(PEM).decode()}
        if args.typ == "tls:index/locallySignedCert:LocallySignedCert":
            csr = x509.load_pem_x509_csr(inputs["certRequestPem"].encode())
            ca_key = serialization.load_pem_private_key(inputs["caPrivateKeyPem"].encode(), None)
            ca = x509.load_pem_x509_certificate(inputs["caCertPem"].encode())
            sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
            cert = _sign(csr.subject, csr.public_key(), ca.subject, ca_key, inputs["validityPeriodHours"], False, sans)
            return f"{args.name}-id", {**inputs, "cert_pem": cert}
        return OutpostMocks.new_resource(self, args)
