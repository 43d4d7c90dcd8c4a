"""The agent never prints a secret value, on any error path.

Secret values reach the host inside files (env files, secret files, keys, one-line settings and,
should a template ever put one there, a proxy or sshd configuration). Validators quote what they
reject — `haproxy -c`, `nginx -t`, `sshd -t` and `caddy validate` print the offending line — and
any tool may echo its input. Each case ships a recognisable secret through the real wire format
(`Manifest.encode` fills the placeholders and lists the values in `secret_values`) into a file
of one format, with a validate step that fails: the real validator where one reads that format,
otherwise `echo-config`, a fault-injection stand-in on PATH that prints the files it is given and
fails. The value, as given or as written (escaped), and each line of a multi-line key, must
appear nowhere: not in the exception, stdout, stderr, progress lines, the agent log, or any
file of the agent's state.
"""

import io
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from components.render.manifest import File, Manifest
from outpost_agent.masking import HIDDEN
from test_agent_unit import FakeHost

from outpost_agent.base import AgentError
from outpost_agent.cli import Agent, main
from outpost_agent.manifest import load_manifest, mask

SECRET = 'Xyzzy"s3cr3t$pass42'                   # systemd-env writes Xyzzy\"s3cr3t\$pass42
PLAIN = "Xyzzys3cr3tPlain77"
KEY = ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqXyzzys3cr3tKeyLineOne0000\n"
       "QWxzb1NlY3JldExpbmVUd29PZlRoZUtleQ==\n-----END PRIVATE KEY-----\n")
NEVER = [SECRET, PLAIN, "s3cr3t", "pass42", "MIIEvQIBADANBgkq", "QWxzb1NlY3JldExpbmVUd29PZlRoZUtleQ=="]

ECHO = ["echo-config"]
CASES = {   # name: (path, content with placeholders, secret format, validator argv before the file)
    "systemd env file": ("/etc/demo/demo.env", 'API_KEY="<secret:api>"\n', "systemd-env", ECHO),
    "podman env file": ("/etc/demo/podman.env", "API_KEY=<secret:api>\n", "podman-env", ECHO),
    "secret file": ("/etc/demo/api-token", "<secret:api>", "raw", ECHO),
    "multi-line key": ("/etc/demo/tls.key", "<secret:key>", "raw", ECHO),
    "one-line setting": ("/etc/demo/wg.conf", "[Interface]\nPrivateKey = <secret:api>\n", "line", ECHO),
    "haproxy -c": ("/etc/haproxy/haproxy.cfg", "global\n  <secret:api> on\n", "raw", ["haproxy", "-c", "-f"]),
    "nginx -t": ("/etc/nginx/nginx.conf", "events {}\nhttp { <secret:api> on; }\n", "raw",
                 ["nginx", "-t", "-e", "stderr", "-c"]),
    # (sshd takes a '"' as the start of a quoted token and then accepts the line: a plain value)
    "sshd -t": ("/etc/ssh/sshd_config.d/outpost.conf", "<secret:plain> yes\n", "raw", ["/usr/sbin/sshd", "-t", "-f"]),
    "caddy validate": ("/etc/caddy/Caddyfile", ":8080 {\n  <secret:api> on\n}\n", "raw",
                       ["caddy", "validate", "--adapter", "caddyfile", "--config"]),
    # Go's %q: `time: invalid duration "Xyzzy\"s3cr3t$pass42"` (the quote escaped)
    "caddy validate, Go-quoted": ("/etc/caddy/Caddyfile", ":8080 {\n  reverse_proxy 127.0.0.1:1 {\n"
                                  "    lb_try_duration <secret:api>\n  }\n}\n", "raw",
                                  ["caddy", "validate", "--adapter", "caddyfile", "--config"]),
    # no validate step: openssl's certificate check fails on its own
    "certificate check": ("/etc/demo/site.pem", "-----BEGIN CERTIFICATE-----\n<secret:api>\n"
                          "-----END CERTIFICATE-----\n", "raw", None),
}


@pytest.fixture
def host(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    echo = bin_dir / "echo-config"
    echo.write_text('#!/bin/sh\nfor f in "$@"; do cat "$f"; done\necho "echo-config: rejected" >&2\nexit 1\n')
    echo.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    progress = io.StringIO()
    return Agent(root=str(root), run=FakeHost(), log=progress), progress, root


def stdin_of(case):
    path, content, fmt, validator = CASES[case]
    m = Manifest(name="svc-demo", files=[File(path, content, "0600", secret_format=fmt)],
                 validate=[{"argv": [*validator, f"{{staged:{path}}}"]}] if validator else [])
    return m.encode({"api": SECRET, "key": KEY, "plain": PLAIN})


def assert_hidden(text, where):
    for value in NEVER:
        assert value not in text, f"{value!r} appears in {where}: {text}"


@pytest.mark.parametrize("case", CASES)
def test_no_secret_value_in_anything_the_agent_prints_or_keeps(host, capsys, monkeypatch, case):
    agent, progress, root = host
    tool = (CASES[case][3] or ["openssl"])[0]
    if tool != "echo-config" and not shutil.which(tool):
        pytest.fail(f"{tool} is not installed (tools/setup.sh installs the validators)")
    text = stdin_of(case)
    assert "s3cr3t" in text and "secret_values" in text      # the values do travel on stdin
    with pytest.raises(AgentError) as failed:
        agent.apply("svc-demo", "t1", text)
    assert "validation failed" in str(failed.value) or "refusing" in str(failed.value)
    assert "<secret hidden>" in str(failed.value) or case == "certificate check"
    assert_hidden(str(failed.value), "the exception")
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert main(["apply", "svc-demo", "t1"], agent) == 1     # the command line's own error path
    out, err = capsys.readouterr()
    assert "outpost-apply: error:" in err
    for where, seen in (("stdout", out), ("stderr", err), ("the progress lines", progress.getvalue())):
        assert_hidden(seen, where)
    log = root / "var/lib/outpost/agent.log"
    assert log.exists() and "outcome=failed" in log.read_text()
    for f in (root / "var/lib/outpost").rglob("*"):
        if f.is_file():
            assert_hidden(f.read_text(errors="replace"), f)


def test_a_health_response_quoting_a_secret_is_hidden(host):
    """A replica that answers its health check with its environment (a debug page)."""
    agent, _, _ = host
    agent.learn_secrets([SECRET, KEY])
    assert agent.redact(f"HTTP 500: env API_KEY={SECRET} key={KEY}") == \
        "HTTP 500: env API_KEY=<secret hidden> key=<secret hidden>"
    assert agent.redact("MIIEvQIBADANBgkqXyzzys3cr3tKeyLineOne0000 alone") == "<secret hidden> alone"


def test_go_quoting_is_what_caddy_prints_and_what_the_old_redaction_missed(host, tmp_path):
    """The case above is real: caddy validate quotes the bad duration with Go's %q, and the value
    as given is not in what it prints (so hiding the value as given alone leaked it)."""
    if not shutil.which("caddy"):
        pytest.fail("caddy is not installed (tools/setup.sh installs the validators)")
    path, content, _, validator = CASES["caddy validate, Go-quoted"]
    config = tmp_path / "Caddyfile"
    config.write_text(content.replace("<secret:api>", SECRET))
    import subprocess
    said = subprocess.run([*validator, str(config)], capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)})
    assert said.returncode != 0 and 'Xyzzy\\"s3cr3t$pass42' in said.stderr and SECRET not in said.stderr.replace(
        "bad duration value " + SECRET, "")


@pytest.mark.parametrize("printed", [
    'Xyzzy\\"s3cr3t$pass42',                 # JSON / Go %q: the quote escaped
    "'Xyzzy\"s3cr3t$pass42'",                  # shell-quoted (shlex.quote)
    'Xyzzy\\"s3cr3t\\$pass42',              # backslash-escaped (printf %q)
    '{"error":"key \\"Xyzzy\\\\\\"s3cr3t$pass42\\" rejected"}',   # inside a JSON log line, quoted twice
])
def test_a_value_a_tool_requotes_is_hidden(host, printed):
    agent, _, _ = host
    agent.learn_secrets([SECRET, "it's a p\\ss \"word\"\twith\u00e9"])
    assert "s3cr3t" not in agent.redact(printed), agent.redact(printed)


@pytest.mark.parametrize("form", ["raw", "json", "go", "shell", "shell-inside", "backslash"])
def test_every_quoted_form_of_an_awkward_value_is_hidden(host, form):
    import shlex
    from outpost_agent.masking import go_quoted
    value = "it's a p\\ss \"word\"\twith\u00e9 $HOME"
    printed = {"raw": value, "json": json.dumps(value), "go": f'"{go_quoted(value)}"', "shell": shlex.quote(value),
               "shell-inside": "'" + value.replace("'", "'\\''") + "'",
               "backslash": "".join("\\" + c if c in " \t!\"#$&'()*;<>?[\\]^`{|}~" else c for c in value)}[form]
    agent, _, _ = host
    agent.learn_secrets([value])
    assert agent.redact(f"tool: {printed} rejected") in (f"tool: {HIDDEN} rejected", f'tool: "{HIDDEN}" rejected',
                                                          f"tool: '{HIDDEN}' rejected")


def test_secret_values_travel_on_stdin_only():
    m = Manifest(name="svc-demo", files=[File("/etc/demo.env", 'K="<secret:api>"\n', secret_format="systemd-env")])
    assert "secret_values" not in m.encode()                  # the masked encoding: the token's source
    doc = json.loads(m.encode({"api": SECRET}))
    assert doc["secret_values"] == sorted([SECRET, 'Xyzzy\\"s3cr3t\\$pass42'])
    assert "secret_values" not in mask(load_manifest(json.dumps(doc), "svc-demo"))


def test_kept_manifests_teach_a_later_command_the_values(host):
    """restart, switch, report, drift and logs run without a manifest on stdin: they hide the
    values of the manifests kept for repair and rollback."""
    agent, _, root = host
    text = Manifest(name="svc-demo", files=[File("/etc/demo/api-token", "<secret:api>", "0600")]).encode({"api": SECRET})
    agent.apply("svc-demo", "t1", text)
    later = Agent(root=str(root), run=FakeHost(), log=io.StringIO())
    assert later.redact(f"body: {SECRET}") == "body: <secret hidden>"
