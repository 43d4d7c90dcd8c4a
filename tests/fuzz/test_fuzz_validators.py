"""A sample of generated stacks that pass `check`, through the real tools: `systemd-analyze
verify` on every system and user unit, and `caddy validate` / `haproxy -c` / `nginx -t` on each
host's proxy configuration. What the model accepts, the host's tools must accept too; and the
program registers its resources for it under Pulumi's mocks (the rest of `make plan`).

The podman quadlet generator only runs on the test VM (tests/validators, e2e): not here.
Small and derandomized in `make test` (each example runs several tools); OUTPOST_FUZZ=long
draws more, at random.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, assume, given, settings

from components.config import ConfigError
from components.load import parse
from components.program import mock_secret, run_program
from components.render import render_stack
from components.render.routes import proxy_spec
from tests.fuzz.strategies import stacks
from tests.validators.test_proxy_validators import run_validator, warnings_in, write_tree
from tests.validators.test_units import ENV, run, scratch_root, system_units, user_units, write

LONG = os.environ.get("OUTPOST_FUZZ") == "long"
SAMPLE = settings(max_examples=int(os.environ.get("OUTPOST_FUZZ_VALIDATOR_EXAMPLES", "60" if LONG else "6")),
                  derandomize=not LONG, database=None, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                         HealthCheck.data_too_large])


def certificate_for(hosts: list[str]) -> dict[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "outpost fuzz")])
    now = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=36500))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts or ["x.invalid"]]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return {"crt": cert.public_bytes(serialization.Encoding.PEM).decode(),
            "key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()}


def tmp_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@SAMPLE
@given(case=stacks())
def test_generated_valid_stacks_pass_the_real_validators(case, tmp_path_factory):
    name, config = case
    try:
        stack = parse(config, name)
    except ConfigError:
        assume(False)
    rendered = render_stack(stack)
    # make plan's and `pulumi up`'s other half: the program itself, under Pulumi's mocks
    secrets = {n: mock_secret(n) for n in config.get("outpost:secrets") or {}}
    assert run_program(name, {**config, "outpost:secrets": secrets})
    for host, manifests in rendered.items():
        tmp = tmp_dir(tmp_path_factory)
        units = system_units(manifests)
        if units:
            root = scratch_root(tmp, manifests)
            result = run(["systemd-analyze", f"--root={root}", "verify", *[str(root / f.path.lstrip("/")) for f in units]])
            assert (result.returncode, result.stderr) == (0, ""), (host, result.stderr)
        users = user_units(manifests)
        if users:
            runtime = tmp / "runtime"
            runtime.mkdir(mode=0o700)
            paths = [str(write(tmp / "home", f)) for f in users]
            result = run(["systemd-analyze", "--user", "verify", *paths],
                         env={**ENV, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(tmp)})
            assert (result.returncode, result.stderr) == (0, ""), (host, result.stderr)
        spec = proxy_spec(stack, host)
        if spec is not None:
            cert = certificate_for(sorted({r.host for r in spec.routes}))
            proxy_root = tmp / "proxy"
            main = write_tree(spec, proxy_root, cert, switches=True)
            output = run_validator(spec.kind, main, proxy_root)
            assert warnings_in(spec.kind, output) == [], output


# Health paths and probe durations at the edges of what the model accepts, through the proxies
# that read them (the agent's urllib takes any of them as they are).
HEALTH_PATHS = ["/", "/a", "/ready", "/.well-known", "/...", "/a.b/c~d", "/_-~.", "/A/B/C/D/E/F", "/" + "x" * 200]
REFUSED_HEALTH_PATHS = ["", "ready", "//", "/a/", "/./a", "/a/..", "/a b", "/a?b=1", "/a#b", "/%2e", "/é", "/a\\b", '/a"b']
PROBES = [("1ms", "1ms"), ("1500ms", "999ms"), ("1h", "59min 59s"), ("0.5s", "1.25s")]


def test_health_values_the_model_accepts_pass_the_proxies(tmp_path):
    from components.config.model import Health
    from components.render.proxy import ProxySpec, Route, Upstream
    from components.render.routes import _ms
    for path in REFUSED_HEALTH_PATHS:
        try:
            Health(path=path)
        except ValueError:
            continue
        raise AssertionError(f"the model accepts health path {path!r}")
    for interval, timeout in PROBES:
        Health(path="/", interval=interval, timeout=timeout)
    for bad in ("0s", "0.5ms", "1us", "infinity", "2h", "5mins"):
        try:
            Health(path="/", interval=bad)
        except ValueError:
            continue
        raise AssertionError(f"the model accepts health interval {bad!r}")
    routes = tuple(
        Route(f"h{i}.example.org", None, Upstream(f"svc{i}", (9000 + i,), path, _ms(PROBES[i % len(PROBES)][0]),
                                                  _ms(PROBES[i % len(PROBES)][1])))
        for i, path in enumerate(HEALTH_PATHS))
    cert = certificate_for([r.host for r in routes])
    for kind in ("caddy", "haproxy"):
        spec = ProxySpec(kind, "internal", None, routes)
        main = write_tree(spec, tmp_path / kind, cert, switches=True)
        output = run_validator(kind, main, tmp_path / kind)
        assert warnings_in(kind, output) == [], output
        text = main.read_text()
        assert all(p in text for p in HEALTH_PATHS[1:]), text
