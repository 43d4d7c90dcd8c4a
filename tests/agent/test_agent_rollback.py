"""A failed reload or restart leaves the previous configuration serving.

- Certificates and keys are checked before they replace the live ones (real `openssl`): an
  expired certificate or a key that does not belong to it changes nothing, and the key never
  shows up in the error.
- A reload that fails after the commit puts the previous files back and reloads again.
- A rolling restart whose instance never becomes healthy puts the previous files back and
  restarts the instances it already restarted, so the service ends wholly on the old version,
  and the apply fails with the health-check output.
"""

import datetime
import io
import os

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from test_agent_unit import FakeHost, HealthServer, apply, manifest, text_file

from outpost_agent.base import AgentError
from outpost_agent.cli import Agent


def certificate(days=30, key=None):
    """(certificate PEM, key PEM) for site.example; days < 0 → already expired."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "site.example")])
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = (now - datetime.timedelta(days=60), now + datetime.timedelta(days=days)) if days > 0 else \
        (now - datetime.timedelta(days=60), now - datetime.timedelta(days=1))
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


@pytest.fixture
def host(tmp_path):
    for d in ("etc/tls", "etc/systemd/system"):
        (tmp_path / d).mkdir(parents=True)
    fake = FakeHost()
    return Agent(root=str(tmp_path), run=fake, log=io.StringIO()), fake, tmp_path


def tls_manifest(files):
    return manifest(name="proxy", files=[text_file(p, c, "0600") for p, c in files.items()])


def test_a_valid_pair_and_bundle_are_written(host):
    agent, _, root = host
    crt, key = certificate()
    assert apply(agent, tls_manifest({"/etc/tls/site.crt": crt, "/etc/tls/site.key": key,
                                      "/etc/tls/site.pem": crt + key})).startswith("outpost proxy: 3 changed")


def test_a_file_that_only_mentions_pem_markers_is_no_certificate(host):
    """The agent itself holds "-----BEGIN CERTIFICATE-----" as a constant and is shipped by the
    base manifest: only a file that is PEM (starts with a BEGIN line) is checked with openssl."""
    agent, fake, _ = host
    script = 'PEM_CERT = b"-----BEGIN CERTIFICATE-----"\nKEY = "-----BEGIN PRIVATE KEY-----"\n'
    assert apply(agent, tls_manifest({"/etc/tls/outpost-apply.py": script})).startswith("outpost proxy: 1 changed")
    assert not any(c[0] == "openssl" for c in fake.calls)


@pytest.mark.parametrize("layout", ["pair", "bundle"])
def test_an_expired_certificate_changes_nothing(host, layout):
    agent, _, root = host
    good, good_key = certificate()
    expired, key = certificate(days=-1)
    files = {"pair": lambda c, k: {"/etc/tls/site.crt": c, "/etc/tls/site.key": k},
             "bundle": lambda c, k: {"/etc/tls/site.pem": c + k}}[layout]
    apply(agent, tls_manifest(files(good, good_key)))
    with pytest.raises(AgentError, match="its certificate is expired"):
        apply(agent, tls_manifest(files(expired, key)))
    for path, content in files(good, good_key).items():
        assert (root / path.lstrip("/")).read_text() == content
    assert not list(root.rglob(".outpost-stage-*"))


@pytest.mark.parametrize("layout", ["pair", "bundle", "key-only"])
def test_a_key_that_does_not_match_changes_nothing_and_is_never_quoted(host, layout):
    agent, fake, root = host
    crt, key = certificate()
    _, other_key = certificate()
    if layout == "key-only":  # the certificate stays, a new key arrives alone
        apply(agent, tls_manifest({"/etc/tls/site.crt": crt, "/etc/tls/site.key": key}))
        files = {"/etc/tls/site.crt": crt, "/etc/tls/site.key": other_key}
    elif layout == "pair":
        files = {"/etc/tls/site.crt": crt, "/etc/tls/site.key": other_key}
    else:
        files = {"/etc/tls/site.pem": crt + other_key}
    with pytest.raises(AgentError, match="the private key does not match the certificate") as err:
        apply(agent, tls_manifest(files))
    body = "".join(other_key.splitlines()[1:-1])
    assert body[:40] not in str(err.value)
    assert not any(body[:40] in " ".join(c) for c in fake.calls), "key material in an argv"
    assert not (root / "etc/tls/site.pem").exists()
    if layout == "key-only":
        assert (root / "etc/tls/site.key").read_text() == key


class VersionedHost(FakeHost):
    """FakeHost that remembers which config each unit was (re)started or reloaded with, and can
    fail the first command that matches `fail`."""

    def __init__(self, root, conf):
        super().__init__()
        self.root, self.conf, self.running, self.fail, self.reloads = root, conf, {}, None, []
        self.after = lambda: None

    def __call__(self, argv, **kwargs):
        if self.fail and self.fail(argv):
            self.fail = None
            self.calls.append(list(argv))
            return 1, "Job for caddy.service failed: bad config", ""
        result = super().__call__(argv, **kwargs)
        if argv[0] == "systemctl" and argv[1] in ("restart", "start", "try-reload-or-restart"):
            version = (self.root / self.conf.lstrip("/")).read_text()
            for unit in argv[2:]:
                self.running[unit] = version
            if argv[1] == "try-reload-or-restart":
                self.reloads.append(version)
        self.after()
        return result


CADDYFILE = "/etc/caddy/Caddyfile"


def proxy_manifest(body):
    return manifest(name="proxy", files=[text_file(CADDYFILE, body)],
                    restart=[{"group": "caddy", "strategy": "reload", "when": [CADDYFILE],
                              "instances": [{"unit": "caddy.service", "health": None}]}])


def test_a_failed_proxy_reload_puts_the_previous_config_back_and_reloads_it(tmp_path):
    (tmp_path / "etc").mkdir()
    fake = VersionedHost(tmp_path, CADDYFILE)
    agent = Agent(root=str(tmp_path), run=fake, log=io.StringIO())
    apply(agent, proxy_manifest(":80 { respond v1 }\n"))
    fake.fail = lambda argv: "try-reload-or-restart" in argv
    with pytest.raises(AgentError) as err:
        apply(agent, proxy_manifest(":80 { respond v2 }\n"))
    assert "bad config" in str(err.value)
    assert f"the previous {CADDYFILE} was put back and caddy.service reloaded with it" in str(err.value)
    assert (tmp_path / CADDYFILE.lstrip("/")).read_text() == ":80 { respond v1 }\n"
    assert fake.reloads[-1] == ":80 { respond v1 }\n" and fake.running["caddy.service"] == ":80 { respond v1 }\n"
    assert not list(tmp_path.rglob(".outpost-stage-*"))


def test_a_failed_rolling_restart_puts_every_restarted_replica_back_on_the_old_version(tmp_path):
    (tmp_path / "etc").mkdir()
    conf = "/etc/web.conf"
    fake = VersionedHost(tmp_path, conf)
    servers = {}

    def health_of(port):
        """web@8001 answers 500 while it runs v2; everything else is healthy."""
        unit = f"web@{port}.service"
        server = HealthServer()
        servers[unit] = server
        return server.url()

    urls = [health_of(p) for p in (8000, 8001, 8002)]
    def serve_what_runs():
        for unit, server in servers.items():
            broken = unit == "web@8001.service" and fake.running.get(unit) == "v2"
            server.status, server.body = (500, b"v2 cannot open its database") if broken else (200, b"ok")

    fake.after = serve_what_runs
    agent = Agent(root=str(tmp_path), run=fake, log=io.StringIO())
    doc = manifest(files=[text_file(conf, "v1")], units=[{"unit": f"web@{p}.service"} for p in (8000, 8001, 8002)],
                   restart=[{"group": "web", "strategy": "rolling", "when": [conf],
                             "instances": [{"unit": f"web@{8000 + i}.service", "health": u} for i, u in enumerate(urls)],
                             "health": {"interval": 0.05, "timeout": 1, "retries": 3}}])
    apply(agent, doc)
    assert set(fake.running.values()) == {"v1"}
    doc["files"][0]["content"] = "v2"
    try:
        with pytest.raises(AgentError) as err:
            apply(agent, doc)
    finally:
        for s in servers.values():
            s.server.shutdown()
    message = str(err.value)
    assert "web@8001.service did not become healthy" in message
    assert "HTTP 500: v2 cannot open its database" in message
    assert "the previous /etc/web.conf was put back and web@8000.service, web@8001.service restarted" in message
    assert (tmp_path / "etc/web.conf").read_text() == "v1"
    assert fake.running == {f"web@{p}.service": "v1" for p in (8000, 8001, 8002)}, "not wholly on the old version"


@pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs openssh-server's sshd")
def test_the_base_setup_validates_the_staged_sshd_drop_in_not_the_live_one(tmp_path):
    """The base manifest's own validate step, run by the agent with the real sshd: a broken new
    drop-in is refused even though the live configuration is fine."""
    from components.config import load_file
    from components.render.base import base_manifest
    from tests.conftest import ROOT

    base = base_manifest(load_file(ROOT / "Pulumi.local.yaml"), "vm").to_json()
    dropin = base["restart"][0]["when"][0]
    (tmp_path / "etc").mkdir()
    agent = Agent(root=str(tmp_path), run=FakeHost(), log=io.StringIO())
    sshd_step = [v for v in base["validate"] if v["argv"][0] == "/usr/sbin/sshd"]
    doc = manifest(name="base", files=[text_file(dropin, "PermitRootLogin no\n")], validate=sshd_step)
    apply(agent, doc)
    doc["files"][0]["content"] = "PermitRootLogin maybe\n"
    with pytest.raises(AgentError, match="validation failed, no file was changed.*unsupported option"):
        apply(agent, doc)
    assert (tmp_path / dropin.lstrip("/")).read_text() == "PermitRootLogin no\n"


def test_a_failed_blue_green_deploy_puts_the_idle_slot_back_on_the_live_version(tmp_path):
    from test_agent_unit import bluegreen_manifest
    (tmp_path / "etc").mkdir()
    fake = VersionedHost(tmp_path, "/etc/web.conf")
    blue, green = HealthServer(), HealthServer()
    try:
        agent = Agent(root=str(tmp_path), run=fake, log=io.StringIO())
        apply(agent, bluegreen_manifest([blue.url(), green.url()], tmp_path, body="v1"))
        green.status, green.body = 502, b"v2 is broken"
        with pytest.raises(AgentError) as err:
            apply(agent, bluegreen_manifest([blue.url(), green.url()], tmp_path, body="v2"))
    finally:
        blue.server.shutdown()
        green.server.shutdown()
    assert "HTTP 502: v2 is broken" in str(err.value) and "proxy still routes to web@8000.service" in str(err.value)
    assert "the previous /etc/web.conf was put back and web@8001.service restarted with it" in str(err.value)
    assert (tmp_path / "etc/web.conf").read_text() == "v1"
    assert fake.running["web@8001.service"] == "v1" and fake.running["web@8000.service"] == "v1"
    assert (tmp_path / "etc/proxy/live.conf").read_text() == "upstream 8000 # web@8000.service\n"
