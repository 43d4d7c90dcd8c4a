"""`tls: acme` end to end against a real ACME server: Debian's Pebble issues Caddy a certificate.

Everything runs on this machine, on 127.0.0.1 and free ports, inside one temporary directory, and
every process is stopped when the test ends (or fails):

- `pebble-challtestsrv` only as the DNS server Pebble resolves names with (`pebble -dnsserver`):
  it answers every A query with 127.0.0.1, so the test hostname needs no /etc/hosts entry;
- `pebble`, its HTTPS listener on a certificate from a throwaway CA made here, its HTTP-01 port set
  to Caddy's http_port and its TLS-ALPN-01 port to Caddy's https_port, with PEBBLE_VA_NOSLEEP=1 only:
  PEBBLE_VA_ALWAYS_VALID is removed from the environment, so the challenge is really validated;
- `caddy run` with the Caddyfile outpost renders (config → `proxy_spec` → `render_proxy`) for a
  `tls: acme` stack whose `acme_ca` is Pebble and whose `acme_ca_root` secret holds the throwaway CA,
  plus test-only global options for the ports, the bind address and the admin endpoint;
- a small HTTP server as the route's service.

It asserts that Pebble validated the challenge, that Caddy serves HTTPS for the route's hostname
with a certificate Pebble's intermediate signed (a client that trusts only Pebble's root reaches
the backend through Caddy), and that plain HTTP redirects to HTTPS.

The `tls: acme-dns` path is not here: its ACME client is lego inside the pulumiverse-acme provider
plugin, which only the Pulumi engine runs (tests/program/test_acme_dns.py checks it under mocks).
Needs `apt-get install pebble caddy` (tools/setup.sh).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components.load import parse
from components.render.manifest import SECRET_RE
from components.render.proxy import MAIN_CONFIG, render_proxy
from components.render.routes import proxy_spec
from tests.conftest import ROOT, serve_page

HOSTNAME = "hello-pebble.outpost.test"     # the route host below with suffix "-pebble"
BACKEND_BODY = b"hello from the service behind caddy\n"
DEADLINE = 60.0                            # seconds for Caddy to obtain its certificate


@dataclass
class Ports:
    acme: int            # Pebble's ACME directory (HTTPS)
    management: int      # Pebble's management interface: roots, intermediates
    dns: int             # pebble-challtestsrv's DNS server
    dns_management: int  # pebble-challtestsrv's management interface (readiness only)
    http: int            # Caddy's http_port = Pebble's HTTP-01 validation port
    https: int           # Caddy's https_port = Pebble's TLS-ALPN-01 validation port
    backend: int         # the service the route points at


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def throwaway_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it: Pebble's HTTPS listener. (ca, cert, key)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    valid = {"not_valid_before": now - datetime.timedelta(minutes=5), "not_valid_after": now + datetime.timedelta(days=1)}
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "outpost test CA for pebble")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(valid["not_valid_before"])
          .not_valid_after(valid["not_valid_after"])
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(valid["not_valid_before"]).not_valid_after(valid["not_valid_after"])
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "pebble-cert.pem", directory / "pebble-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def stack_config(ports: Ports) -> dict:
    """A one-host `tls: acme` stack whose ACME CA is the Pebble started here."""
    admin_key = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]["outpost:admin"]["ssh_keys"][0]
    return {
        "outpost:suffix": "-pebble",
        "outpost:admin": {"ssh_keys": [admin_key], "private_key": "deploy_key"},
        "outpost:hosts": {"edge": {"provider": "static", "address": "127.0.0.1", "host_key": admin_key}},
        "outpost:services": {"hello": {"hosts": ["edge"], "process": {"exec": "/usr/bin/true"},
                                       "replicas": [ports.backend]}},
        "outpost:routes": [{"host": "hello{suffix}.outpost.test", "service": "hello"}],
        "outpost:proxy": {"kind": "caddy", "tls": "acme", "email": "ops@example.org",
                          "acme_ca": f"https://127.0.0.1:{ports.acme}/dir", "acme_ca_root": "pebble_root"},
        "outpost:secrets": {"deploy_key": {"secure": "v1:unused"}, "pebble_root": {"secure": "v1:filled-in-below"}},
    }


def render_caddy(ports: Ports, root: Path, ca_pem: str) -> Path:
    """outpost's files for host `edge` under ROOT, secrets filled in; test-only global options
    (ports Pebble validates on, 127.0.0.1 only, no admin endpoint) added to the Caddyfile."""
    spec = proxy_spec(parse(stack_config(ports), "pebble"), "edge")
    assert spec is not None and spec.tls == "acme"
    for f in render_proxy(spec, root=str(root)):
        path = Path(f.path)
        assert path.is_relative_to(root), path
        path.parent.mkdir(parents=True, exist_ok=True)
        assert set(SECRET_RE.findall(f.content)) <= {"pebble_root"}, f.path
        path.write_text(SECRET_RE.sub(lambda m: ca_pem, f.content))
    (root / "var/log/caddy").mkdir(parents=True, exist_ok=True)
    caddyfile = Path(f"{root}{MAIN_CONFIG['caddy']}")
    text = caddyfile.read_text()
    assert "\n{\n" in text and f"\tacme_ca https://127.0.0.1:{ports.acme}/dir\n" in text
    assert f"\tacme_ca_root {root}/etc/outpost/tls/acme-ca-root.pem\n" in text
    test_only = (f"\thttp_port {ports.http}\n\thttps_port {ports.https}\n"
                 "\tdefault_bind 127.0.0.1\n\tadmin off\n")
    # this test is about ACME: its Caddy runs without the admin socket (tests/validators/test_control_sockets.py)
    text = re.sub(r"\n\tadmin unix/\S+\n", "\n", text, count=1)
    caddyfile.write_text(text.replace("\n{\n", "\n{\n" + test_only, 1))
    return caddyfile


def https_get(port: int, cadata: str, timeout: float = 5.0) -> tuple[bytes, bytes]:
    """GET / from 127.0.0.1:PORT as HOSTNAME (SNI and Host), trusting only CADATA.
    Returns (the peer's leaf certificate in DER, the raw HTTP response)."""
    context = ssl.create_default_context(cadata=cadata)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=HOSTNAME) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {HOSTNAME}\r\nConnection: close\r\n\r\n".encode())
            response = b""
            while chunk := tls.recv(65536):
                response += chunk
            return tls.getpeercert(binary_form=True), response


def http_get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET /some/page HTTP/1.1\r\nHost: {HOSTNAME}\r\nConnection: close\r\n\r\n".encode())
        response = b""
        while chunk := s.recv(65536):
            response += chunk
        return response


def fetch(url: str, cafile: Path) -> str:
    context = ssl.create_default_context(cafile=str(cafile))
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        return response.read().decode()


def wait_for(what: str, probe, deadline: float, logs: list[Path]):
    """Call PROBE until it returns without raising, or fail with the last error and the logs."""
    error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return probe()
        except Exception as exc:  # noqa: BLE001 (any failure means "not yet")
            error = exc
            time.sleep(0.25)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs if log.exists())
    pytest.fail(f"{what} did not happen in time (last error: {error!r})\n{tails}")


@pytest.fixture
def processes():
    """Popen handles to stop at the end, newest first: terminate, then kill after 5 seconds."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in reversed(started):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def start(processes: list, argv: list[str], log: Path, env: dict[str, str], cwd: Path) -> subprocess.Popen:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd)
    processes.append(proc)
    return proc


def test_caddy_obtains_a_certificate_from_pebble_and_serves_https_with_it(tmp_path, processes):
    for tool in ("pebble", "pebble-challtestsrv", "caddy"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: apt-get install -y pebble caddy (tools/setup.sh)")
    ports = Ports(*free_ports(7))
    ca, pebble_cert, pebble_key = throwaway_ca(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEBBLE_")}
    env.update(HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    logs = [tmp_path / "challtestsrv.log", tmp_path / "pebble.log", tmp_path / "caddy.log"]
    deadline = time.monotonic() + DEADLINE

    backend = serve_page(BACKEND_BODY, ports.backend)
    try:
        start(processes, ["pebble-challtestsrv", "-dns01", f"127.0.0.1:{ports.dns}", "-http01", "", "-https01", "",
                          "-tlsalpn01", "", "-management", f"127.0.0.1:{ports.dns_management}",
                          "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""], logs[0], env, tmp_path)
        wait_for("pebble-challtestsrv listening",
                 lambda: socket.create_connection(("127.0.0.1", ports.dns_management), timeout=1).close(), deadline, logs)

        config = tmp_path / "pebble-config.json"
        config.write_text(
            '{"pebble": {"listenAddress": "127.0.0.1:%d", "managementListenAddress": "127.0.0.1:%d",'
            ' "certificate": "%s", "privateKey": "%s", "httpPort": %d, "tlsPort": %d,'
            ' "ocspResponderURL": "", "externalAccountBindingRequired": false}}'
            % (ports.acme, ports.management, pebble_cert, pebble_key, ports.http, ports.https))
        start(processes, ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{ports.dns}"], logs[1],
              {**env, "PEBBLE_VA_NOSLEEP": "1"}, tmp_path)
        wait_for("Pebble's ACME directory",
                 lambda: fetch(f"https://127.0.0.1:{ports.acme}/dir", ca), deadline, logs)
        pebble_root = fetch(f"https://127.0.0.1:{ports.management}/roots/0", ca)
        intermediate = x509.load_pem_x509_certificate(
            fetch(f"https://127.0.0.1:{ports.management}/intermediates/0", ca).encode())

        caddyfile = render_caddy(ports, tmp_path / "host", ca.read_text())
        caddy = start(processes, ["caddy", "run", "--config", str(caddyfile), "--adapter", "caddyfile"], logs[2],
                      env, tmp_path)

        def served():
            assert caddy.poll() is None, f"caddy exited with {caddy.returncode}"
            return https_get(ports.https, pebble_root)
        leaf_der, response = wait_for("Caddy serving HTTPS with a certificate from Pebble", served, deadline, logs)
    finally:
        backend.shutdown()
        backend.server_close()

    leaf = x509.load_der_x509_certificate(leaf_der)
    leaf.verify_directly_issued_by(intermediate)
    assert leaf.issuer == intermediate.subject
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == [HOSTNAME]
    status, _, body = response.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 200"), response[:300]
    assert body == BACKEND_BODY

    # The challenge was really validated: Pebble's validator fetched Caddy's key authorization
    # (HTTP-01 on http_port or TLS-ALPN-01 on https_port, whichever Caddy chose) and accepted it.
    caddy_log = [json.loads(line) for line in logs[2].read_text().splitlines() if line.startswith("{")]
    answered = [e for e in caddy_log if e.get("msg", "").startswith("served key authentication")
                and HOSTNAME in (e.get("identifier"), e.get("server_name"))]
    assert answered and {e["challenge"] for e in answered} <= {"http-01", "tls-alpn-01"}, logs[2].read_text()[-3000:]
    assert all(e["remote"].startswith("127.0.0.1:") for e in answered)
    assert "set VALID by completed challenge" in logs[1].read_text()
    assert any(e.get("msg") == "certificate obtained successfully" and e.get("identifier") == HOSTNAME
               for e in caddy_log)

    redirect = http_get(ports.http)
    assert redirect.startswith(b"HTTP/1.1 308"), redirect[:300]
    assert re.search(rb"\r\nLocation: https://" + re.escape(HOSTNAME.encode()) + rb"(:\d+)?/some/page\r\n", redirect)
