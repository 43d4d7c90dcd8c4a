"""The rendered proxy configurations, checked by the real tools from Debian's packages.

Every case of tests/render/proxy_cases.py is rendered with `root=<tmp>` (every path outpost owns
moves under the temporary directory), certificate placeholders are filled with a real
self-signed certificate, blue-green switch files are written the way the agent writes them, and
then `caddy validate`, `haproxy -c` or `nginx -t` must accept the tree, without warnings.
A second pass leaves the switch files out: the first deploy of a blue-green service must not
break the proxy. Needs `apt-get install caddy haproxy nginx` (services stopped).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from components.render import proxy
from components.render.manifest import SECRET_RE
from tests.render.proxy_cases import CASES, bluegreen_upstreams

TOOLS = {"caddy": "caddy", "haproxy": "haproxy", "nginx": "nginx"}
# Warnings that are expected and harmless, per tool.
ALLOWED_WARNINGS = {
    "automatic HTTPS is completely disabled",  # caddy, tls none
    "No files matching import glob pattern",   # caddy, blue-green before the first switch
    "skipping automated certificate management",  # caddy, certificates are files (disable_certs)
    "no OCSP server specified in certificate",    # caddy, the self-signed stub certificate
}


def make_certificate() -> dict[str, str]:
    """A real self-signed certificate and key for every host the cases use."""
    key = ec.generate_private_key(ec.SECP256R1())
    hosts = sorted({r.host for spec in CASES.values() for r in spec.routes})
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "outpost test")])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=36500))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
            .sign(key, hashes.SHA256()))
    return {"crt": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()}


@pytest.fixture(scope="module")
def certificate() -> dict[str, str]:
    return make_certificate()


def fill_secret(name: str, certificate: dict[str, str]) -> str:
    if name == "pebble_root":  # caddy-acme-private-ca: the ACME server's root, a certificate too
        return certificate["crt"]
    assert name.startswith("tls:") and name.endswith((".crt", ".key")), name
    return certificate[name.rsplit(".", 1)[1]]


def write_tree(spec: proxy.ProxySpec, root: Path, certificate: dict[str, str], *, switches: bool) -> Path:
    """Render spec under root like the agent would install it; return the main config's path."""
    for d in proxy.proxy_dirs(spec, root=str(root)):
        Path(d.path).mkdir(parents=True, exist_ok=True)
    for f in proxy.render_proxy(spec, root=str(root)):
        path = Path(f.path)
        assert path.is_relative_to(root), f"{path} escapes the test root"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(SECRET_RE.sub(lambda m: fill_secret(m.group(1), certificate), f.content))
    if switches:
        for up in bluegreen_upstreams(spec):
            f = proxy.bluegreen_switch(spec.kind, up, up.ports[1], root=str(root))
            Path(f.path).write_text(f.content)
    for log_dir in ("var/log/caddy", "var/log/nginx"):
        (root / log_dir).mkdir(parents=True, exist_ok=True)
    return Path(f"{root}{proxy.MAIN_CONFIG[spec.kind]}")


def run_validator(kind: str, main: Path, root: Path) -> str:
    """Run the production validate argv (plus test-only writable paths); fail with its output."""
    if shutil.which(TOOLS[kind]) is None:
        pytest.fail(f"{TOOLS[kind]} is not installed: apt-get install -y caddy haproxy nginx")
    argv = proxy.validate_argv(kind, str(main), root=str(root))
    if kind == "nginx":
        argv += ["-g", f"pid {root}/nginx.pid;"]
    env = {**os.environ, "HOME": str(root), "XDG_DATA_HOME": str(root / "data"),
           "XDG_CONFIG_HOME": str(root / "config")}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`{' '.join(argv)}` exited {proc.returncode}:\n{output}\n---\n{main.read_text()}"
    return output


def warnings_in(kind: str, output: str) -> list[str]:
    lines = output.splitlines()
    if kind == "caddy":
        found = [ln for ln in lines if '"level":"warn"' in ln or '"level":"error"' in ln]
    elif kind == "haproxy":
        found = [ln for ln in lines if "[WARNING]" in ln or "[ALERT]" in ln]
    else:
        found = [ln for ln in lines if "[warn]" in ln or "[emerg]" in ln or "[alert]" in ln]
    return [ln for ln in found if not any(ok in ln for ok in ALLOWED_WARNINGS)]


# Every case with its switch files; blue-green cases also before their first switch.
VARIANTS = [pytest.param(case, True, id=case) for case in sorted(CASES)] + [
    pytest.param(case, False, id=f"{case}-first-deploy")
    for case in sorted(CASES) if bluegreen_upstreams(CASES[case])]


@pytest.mark.parametrize("case,switches", VARIANTS)
def test_real_validator_accepts(case, switches, tmp_path, certificate):
    spec = CASES[case]
    main = write_tree(spec, tmp_path, certificate, switches=switches)
    output = run_validator(spec.kind, main, tmp_path)
    assert warnings_in(spec.kind, output) == [], output


def test_broken_config_fails_the_validator(tmp_path, certificate):
    """The harness really fails: a config the tool rejects makes run_validator fail."""
    for kind in proxy.KINDS:
        main = write_tree(CASES[f"{kind}-none"], tmp_path / kind, certificate, switches=True)
        main.write_text(main.read_text() + "\nthis is not a directive {\n")
        with pytest.raises(AssertionError, match="exited"):
            run_validator(kind, main, tmp_path / kind)


def test_caddy_adapts_routes_in_the_rendered_order(tmp_path, certificate):
    """Caddy's own adapter keeps path routes longest first, the whole-host route last,
    and the blue-green upstream comes from the switch file."""
    main = write_tree(CASES["caddy-internal"], tmp_path, certificate, switches=True)
    proc = subprocess.run(["caddy", "adapt", "--adapter", "caddyfile", "--config", str(main)],
                          capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)},
                          timeout=60, check=True)
    config = json.loads(proc.stdout)
    routes = config["apps"]["http"]["servers"]["srv0"]["routes"]
    api = next(r for r in routes if r["match"][0]["host"] == ["api.example.org"])
    handled = [r for r in api["handle"][0]["routes"] if r.get("group")]
    assert [r.get("match", [{}])[0].get("path") for r in handled] == [
        ["/eugene/v2", "/eugene/v2/*"], ["/eugene", "/eugene/*"], None]
    last_proxy = handled[-1]["handle"][0]["routes"][0]["handle"][0]
    assert last_proxy["upstreams"] == [{"dial": "127.0.2.1:20000"}]
    assert last_proxy["load_balancing"]["try_duration"] == 15_000_000_000 and "retries" not in last_proxy["load_balancing"]
    assert "health_checks" not in last_proxy            # one upstream: nothing to route to instead
    assert last_proxy["transport"]["keep_alive"]["enabled"] is False
    # the drain: a route that sets Connection: close while the flag file exists, first in the site
    drain = api["handle"][0]["routes"][0]
    assert drain["match"] == [{"file": {"root": f"{tmp_path}/run/outpost-proxy", "try_files": ["/drain"]}}]
    assert drain["handle"] == [{"handler": "headers", "response": {"set": {"Connection": ["close"]}}}]
