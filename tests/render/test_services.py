"""Service units, golden-tested: every stack's `svc-*` manifests, byte for byte, with the lines that
matter asserted inline (the way podman's quadlet tests pair a golden unit with `## assert-...`).

Goldens live in tests/render/golden/services/<case>/<host>/: `<manifest>.json` (everything but file
contents: modes, owners, sha256, units, restart plan) and `files/<path>` for every text file.
`OUTPOST_UPDATE_GOLDEN=1` rewrites them.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from components.config import ConfigError
from components.load import parse
from components.render import render_host
from components.render.manifest import File, Manifest
from components.render.services import HARDENING, service_manifests
from components.render.services import _seconds as seconds
from components.render.systemd import env_assignment, exec_word, single_line
from tests.render.services_cases import (CASES, EDGE, TRICKY_ENV, _base, edge_stack, rendered, stack)
from tests.render.golden import check_golden

GOLDEN = Path(__file__).resolve().parent / "golden" / "services"
UNIT_LINE_RE = re.compile(r"^(#.*|\[[A-Za-z-]+\]|[A-Za-z][A-Za-z0-9]*=.*|)$")


# --- helpers ---------------------------------------------------------------------------------------

def manifest_doc(m: Manifest) -> dict:
    doc = m.to_json()
    doc["files"] = {f["path"]: {k: f[k] for k in ("mode", "owner", "group", "b64")}
                    | {"sha256": hashlib.sha256(_bytes(f)).hexdigest()} for f in doc["files"]}
    doc["restarts"] = m.restarts
    return doc


def _bytes(f: dict) -> bytes:
    import base64
    return base64.b64decode(f["content"]) if f["b64"] else f["content"].encode()


def golden_tree(case: str) -> dict[str, str]:
    tree: dict[str, str] = {}
    for host, manifests in rendered(case).items():
        for m in manifests:
            tree[f"{host}/{m.name}.json"] = json.dumps(manifest_doc(m), indent=1, sort_keys=True) + "\n"
            for f in m.files:
                if isinstance(f.content, str):
                    tree[f"{host}/files{f.path}"] = f.content
    return tree


def files_of(case: str, host: str) -> dict[str, File]:
    return {f.path: f for m in rendered(case)[host] for f in m.files}


def manifest(case: str, host: str, name: str) -> Manifest:
    return next(m for m in rendered(case)[host] if m.name == name)


def lines(text: str) -> list[str]:
    return text.splitlines()


def assert_unit_syntax(text: str) -> None:
    """Every line is a comment, a section header, a Key=value line or empty: nothing a value
    could have smuggled in."""
    for line in lines(text):
        assert UNIT_LINE_RE.match(line), f"not a unit line: {line!r}"


def unescape_word(word: str) -> str:
    """What systemd (and quadlet) make of one word written by exec_word/env_assignment:
    quotes removed, C escapes resolved, `%%` → `%`, `$$` → `$` (see systemd.syntax(7))."""
    if word.startswith('"') and word.endswith('"'):
        body, out, i = word[1:-1], "", 0
        while i < len(body):
            if body[i] == "\\":
                out += {"\\": "\\", '"': '"'}[body[i + 1]]
                i += 2
            else:
                assert body[i] != '"', f"unescaped quote inside {word!r}"
                out += body[i]
                i += 1
        word = out
    return word.replace("%%", "\0").replace("$$", "$").replace("\0", "%")


# --- goldens -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_golden(case):
    check_golden(golden_tree(case), GOLDEN / case, case)


@pytest.mark.parametrize("case", CASES)
def test_render_is_deterministic(case):
    first = {h: [m.encode() for m in ms] for h, ms in rendered(case).items()}
    second = {h: [m.encode() for m in ms] for h, ms in rendered(case).items()}
    assert first == second


@pytest.mark.parametrize("case", CASES)
def test_every_unit_file_is_plain_unit_syntax(case):
    for host in stack(case).hosts:
        for path, f in files_of(case, host).items():
            if path.endswith((".service", ".socket", ".timer", ".container", ".conf")):
                assert_unit_syntax(f.content)


def test_services_are_registered_with_the_render_layer():
    st = stack("local")
    names = [m.name for m in render_host(st, "vm")]
    assert {"svc-hello", "svc-hello-refresh", "svc-wsgi"} <= set(names)


# --- local: rootless replicas built on the host, a container job, a socket service ------------------------

def test_local_replicas_are_one_quadlet_template():
    files = files_of("local", "vm")
    unit = files["/home/hello/.config/containers/systemd/hello@.container"]
    assert (unit.owner, unit.group, unit.mode) == ("hello", "hello", "0644")
    text = lines(unit.content)
    assert "PublishPort=127.0.0.1:%i:8000" in text
    assert "Image=localhost/outpost-demo:${TAG}" in text
    assert "Pull=never" in text                       # built on the host, never pulled
    assert "EnvironmentFile=/home/hello/.config/outpost/hello.env" in text   # [Service]: TAG
    assert "EnvironmentFile=/home/hello/.config/outpost/hello.secret.env" in text  # [Container]
    assert text.index("EnvironmentFile=/home/hello/.config/outpost/hello.secret.env") < text.index("[Service]")
    assert text.index("EnvironmentFile=/home/hello/.config/outpost/hello.env") > text.index("[Service]")
    assert "Entrypoint=/usr/bin/python3" in text and "Exec=/app/hello.py --port 8000" in text
    assert "Environment=GREETING=hello" in text
    assert {"Wants=hello-image.service", "After=hello-image.service"} <= set(text)
    assert {"CPUQuota=50%", "MemoryMax=128M", "Restart=on-failure", "TimeoutStopSec=45"} <= set(text)
    assert "[Install]" not in text                    # templates are wanted through a drop-in
    wants = files["/home/hello/.config/systemd/user/default.target.d/outpost-hello.conf"]
    assert "Wants=hello@8000.service hello@8001.service" in lines(wants.content)


def test_local_tag_lives_in_an_env_file():
    env = files_of("local", "vm")["/home/hello/.config/outpost/hello.env"]
    assert (env.mode, env.owner) == ("0600", "hello")
    assert "TAG=1" in lines(env.content)


def test_secret_values_live_only_in_0600_files():
    for case in CASES:
        for host in stack(case).hosts:
            for path, f in files_of(case, host).items():
                if f.secrets:
                    assert f.mode == "0600", (case, path)
                    assert not path.endswith((".service", ".socket", ".timer", ".container", ".conf")), path
    secret = files_of("local", "vm")["/home/hello/.config/outpost/hello.secret.env"]
    assert "API_TOKEN=<secret:demo_token>" in lines(secret.content)
    unit = files_of("local", "vm")["/home/hello/.config/containers/systemd/hello@.container"]
    assert "demo_token" not in unit.content and "API_TOKEN" not in unit.content


def test_local_image_is_built_first_and_fails_the_apply_before_replicas():
    m = manifest("local", "vm", "svc-hello")
    image, hello = m.restart
    assert image["group"] == "hello-image" and image["strategy"] == "restart"
    assert image["instances"] == [{"unit": "hello-image.service", "health": None, "drain": None}]
    assert "/home/hello/.config/outpost/hello.env" in image["when"]
    assert "/home/hello/.config/outpost/hello-image/app/hello.py" in image["when"]
    assert hello["strategy"] == "rolling" and hello["scope"] == "user:hello"
    assert [i["health"] for i in hello["instances"]] == ["http://127.0.0.1:8000/ready",
                                                         "http://127.0.0.1:8001/ready"]
    assert hello["health"] == {"interval": 1, "timeout": 3, "retries": 30}
    assert set(image["when"]) < set(hello["when"])
    assert "/home/hello/.config/containers/systemd/hello@.container" in hello["when"]
    assert m.restarts == {"hello": "rolling"}
    assert [(u.unit, u.scope, u.enable, u.start) for u in m.units] == [
        ("hello@8000.service", "user:hello", False, True), ("hello@8001.service", "user:hello", False, True)]
    assert [u.to_json() for u in m.users] == [{"name": "hello", "home": "/home/hello", "linger": True,
                                               "system": True, "purge": True,
                                               "key": "services.hello.user"}]  # outpost:purge: true
    unit = lines(files_of("local", "vm")["/home/hello/.config/systemd/user/hello-image.service"].content)
    assert "Type=oneshot" in unit and "RemainAfterExit=yes" in unit
    assert ("ExecStart=/bin/sh /home/hello/.config/outpost/hello-image.sh build localhost/outpost-demo:${TAG} "
            in "\n".join(unit))
    assert any(line.endswith("/home/hello/.config/outpost/hello-image /usr/bin/python3 /usr/lib/python3.13")
               for line in unit)
    built = files_of("local", "vm")["/home/hello/.config/outpost/hello-image/app/hello.py"]
    assert built.content == (Path(__file__).resolve().parents[2] / "files/demo/hello.py").read_bytes()


def test_build_inputs_digest_changes_with_the_files(monkeypatch, tmp_path):
    from components.render.services import container   # where the image's build inputs are read
    before = files_of("local", "vm")["/home/hello/.config/systemd/user/hello-image.service"].content
    original = container.repo_bytes
    monkeypatch.setattr(container, "repo_bytes", lambda rel, what: (b"changed", False)
                        if rel.endswith("hello.py") else original(rel, what))
    after = next(f for m in service_manifests(stack("local"), "vm") for f in m.files
                 if f.path.endswith("/hello-image.service")).content
    assert before != after


def test_local_container_job_runs_through_a_system_timer():
    files, m = files_of("local", "vm"), manifest("local", "vm", "svc-hello-refresh")
    job = lines(files["/home/hello/.config/containers/systemd/hello-refresh.container"].content)
    assert {"Type=oneshot", "Restart=no"} <= set(job) and "[Install]" not in job
    timer = lines(files["/etc/systemd/system/hello-refresh.timer"].content)
    assert {"OnCalendar=*-*-* 03:00:00", "RandomizedDelaySec=10m", "Persistent=true",
            "WantedBy=timers.target"} <= set(timer)
    trigger = lines(files["/etc/systemd/system/hello-refresh.service"].content)
    assert "ExecStart=/usr/bin/systemctl --user -M hello@ start hello-refresh.service" in trigger
    assert "OnSuccess=outpost-restart@hello.service" in trigger
    restart = lines(files["/etc/systemd/system/outpost-restart@.service"].content)
    assert "ExecStart=/usr/bin/python3 /usr/local/lib/outpost/outpost-apply.py restart svc-%i" in restart
    assert [(u.unit, u.scope) for u in m.units] == [("hello-refresh.timer", "system")]
    assert [g["group"] for g in m.restart] == ["hello-refresh-image"]
    assert m.restarts == {}


def test_local_socket_service():
    files, m = files_of("local", "vm"), manifest("local", "vm", "svc-wsgi")
    sock = lines(files["/etc/systemd/system/wsgi@.socket"].content)
    assert {"ListenStream=127.0.0.1:9000", "ReusePort=true", "Service=wsgi@%i.service",
            "WantedBy=sockets.target"} <= set(sock)
    svc = lines(files["/etc/systemd/system/wsgi@.service"].content)
    assert "ExecStart=/usr/bin/python3 /opt/wsgi-demo/app.py" in svc
    # A fixed user (services.wsgi.user), not a DynamicUser: litestream replicates its notes.db as
    # the owner of /var/lib/wsgi, which a DynamicUser's /var/lib/private/wsgi would hide.
    assert {"User=wsgi", "StateDirectory=wsgi", "Type=exec"} <= set(svc) and "DynamicUser=yes" not in svc
    assert [u.name for u in m.users] == ["wsgi"]
    assert set(HARDENING) <= set(svc) and "ProtectHome=yes" in svc
    assert "[Install]" not in svc                  # activated by its socket only
    assert [u.unit for u in m.units] == [f"wsgi@{i}.socket" for i in range(1, 5)]
    sockets, service = m.restart
    assert sockets["group"] == "wsgi-sockets" and sockets["when"] == ["/etc/systemd/system/wsgi@.socket"]
    assert [i["unit"] for i in service["instances"]] == [f"wsgi@{i}.service" for i in range(1, 5)]
    assert "/opt/wsgi-demo/app.py" in service["when"]
    artifact = files["/opt/wsgi-demo/app.py"]
    assert isinstance(artifact.content, bytes) and artifact.mode == "0644"


# --- test/prod: registry images, blue-green processes ------------------------------------------------------

@pytest.mark.parametrize("case", ["test", "prod"])
def test_registry_image_is_pulled_before_the_rollout(case):
    files = files_of(case, "web1")
    image = lines(files["/home/kollektivkart/.config/systemd/user/kollektivkart-image.service"].content)
    assert ("ExecStart=/bin/sh /home/kollektivkart/.config/outpost/kollektivkart-image.sh pull "
            "ghcr.io/kaaveland/bus-eta:${TAG}") in image
    assert "Wants=podman-user-wait-network-online.service" in image
    unit = lines(files["/home/kollektivkart/.config/containers/systemd/kollektivkart@.container"].content)
    assert "Pull=never" not in unit and "AutoUpdate=registry" in unit
    assert "Volume=/home/kollektivkart/data:/data:ro" in unit
    assert "Exec=kollektivkart.webapp:server --preload --bind 0.0.0.0:8000 --workers=3" in unit
    assert "Entrypoint=/app/.venv/bin/gunicorn" in unit
    m = manifest(case, "web1", "svc-kollektivkart")
    assert ("podman-auto-update.timer", "user:kollektivkart") in [(u.unit, u.scope) for u in m.units]


@pytest.mark.parametrize("case", ["test", "prod"])
def test_blue_green_process_gets_the_proxy_switch(case):
    m = manifest(case, "web1", "svc-peerbook")
    (group,) = m.restart
    assert group["strategy"] == "blue-green" and m.restarts == {"peerbook": "blue-green"}
    assert [i["unit"] for i in group["instances"]] == ["peerbook@20000.service", "peerbook@20001.service"]
    path = "/etc/outpost/proxy/live/peerbook.nft"
    assert group["switch"]["path"] == path
    assert "ip daddr 127.0.2.1 tcp dport 20000 dnat to 127.0.0.1:{port}\n" in group["switch"]["template"]
    assert group["switch"]["reload"] == ["/usr/sbin/nft", "-f", path]           # no proxy reload
    assert group["switch"]["validate"] == ["/usr/sbin/nft", "-c", "-f", "{staged:" + path + "}"]
    unit = lines(files_of(case, "web1")["/etc/systemd/system/peerbook@.service"].content)
    assert "ExecStart=/opt/peerbook/peerbook --port %i" in unit and "WantedBy=multi-user.target" in unit
    artifact = files_of(case, "web1")["/opt/peerbook/peerbook"]
    assert artifact.mode == "0755" and artifact.content.startswith(b"#!/usr/bin/python3")
    assert [u.unit for u in m.units] == ["peerbook@20000.service", "peerbook@20001.service"]


def test_prod_second_web_host_gets_only_its_services():
    assert [m.name for m in rendered("prod")["web2"]] == ["svc-kollektivkart"]
    assert rendered("prod")["vps1"] == []


# --- edge cases ----------------------------------------------------------------------------------------------

def test_rootful_container_with_haproxy_drain():
    files, m = files_of("edge-haproxy", "h1"), manifest("edge-haproxy", "h1", "svc-web")
    unit = files["/etc/containers/systemd/web@.container"]
    assert unit.owner == "root"
    assert "Image=registry.example.org:5000/team/web:${TAG}" in lines(unit.content)
    assert "PublishPort=127.0.0.1:%i:8080" in lines(unit.content)
    assert files["/etc/outpost/services/web.env"].mode == "0600"
    assert "TAG=v1.2_rc-3" in lines(files["/etc/outpost/services/web.env"].content)
    assert files["/etc/web/token"].content == "<secret:token>" and files["/etc/web/token"].mode == "0600"
    wants = files["/etc/systemd/system/multi-user.target.d/outpost-web.conf"]
    assert "Wants=web@7000.service web@7001.service web@7002.service" in lines(wants.content)
    group = m.restart[1]
    assert group["scope"] == "system" and m.users == [] and m.packages == ["podman"]
    assert [i["drain"] for i in group["instances"]] == [
        {"kind": "haproxy", "socket": "/run/haproxy/admin.sock", "backend": "web", "server": f"r{p}"}
        for p in (7000, 7001, 7002)]
    assert group["health"] == {"interval": 0.5, "timeout": 0.25, "retries": 5}
    assert "/etc/web/token" in group["when"] and "/etc/outpost/services/web.secret.env" in group["when"]


def test_replicas_behind_caddy_or_nginx_are_drained_in_the_kernel():
    """No runtime API to drain at: the agent sends the proxy's new connections for a replica to
    the next one (the last to the first) while it restarts."""
    m = manifest("local", "vm", "svc-hello")
    group = next(g for g in m.restart if g["group"] == "hello")
    assert [i["drain"] for i in group["instances"]] == [{"kind": "port", "port": 8000, "to": 8001},
                                                        {"kind": "port", "port": 8001, "to": 8000}]
    assert "nftables" in m.packages                    # what the agent drains with
    three = manifest("test", "web1", "svc-kollektivkart")
    group = next(g for g in three.restart if g["group"] == "kollektivkart")
    assert [(i["drain"]["port"], i["drain"].get("to")) for i in group["instances"]] == [(8000, 8001), (8001, 8000)]


def test_rootful_job_has_on_success_in_its_quadlet():
    files = files_of("edge-haproxy", "h1")
    job = lines(files["/etc/containers/systemd/web-reindex.container"].content)
    assert "OnSuccess=outpost-restart@web.service" in job and "Type=oneshot" in job
    assert "/etc/systemd/system/web-reindex.service" not in files   # the quadlet is the job
    assert "Persistent=false" in lines(files["/etc/systemd/system/web-reindex.timer"].content)


def test_process_with_secret_files_gets_a_fixed_user():
    files, m = files_of("edge-haproxy", "h1"), manifest("edge-haproxy", "h1", "svc-api")
    unit = lines(files["/etc/systemd/system/api@.service"].content)
    assert {"User=api", "Group=api", "StateDirectory=api", "MemoryMax=256M"} <= set(unit)
    assert "DynamicUser=yes" not in unit
    assert "EnvironmentFile=/etc/outpost/services/api.secret.env" in unit
    assert [u.name for u in m.users] == ["api"]
    key = files["/etc/api/key.pem"]
    assert (key.owner, key.mode, key.content) == ("api", "0600", "<secret:api_key>")
    secret_env = files["/etc/outpost/services/api.secret.env"]
    assert (secret_env.owner, secret_env.mode) == ("root", "0600")
    assert "API_KEY=\"<secret:api_key>\"" in lines(secret_env.content)
    (group,) = m.restart
    assert group["switch"]["path"] == "/etc/outpost/proxy/live/api.nft"       # HAProxy too
    assert all(i["drain"] is None for i in group["instances"])               # blue-green: no drain


def test_process_without_fixed_owner_uses_a_dynamic_user():
    unit = lines(files_of("edge-haproxy", "h1")["/etc/systemd/system/httpd.service"].content)
    assert {"DynamicUser=yes", "User=httpd", "WantedBy=multi-user.target"} <= set(unit)
    assert manifest("edge-haproxy", "h1", "svc-httpd").restart[0]["instances"] == [
        {"unit": "httpd.service", "health": None, "drain": None}]


def test_process_job_runs_on_success_restart():
    files, m = files_of("edge-haproxy", "h1"), manifest("edge-haproxy", "h1", "svc-api-vacuum")
    unit = lines(files["/etc/systemd/system/api-vacuum.service"].content)
    assert {"Type=oneshot", "OnSuccess=outpost-restart@api.service", "User=api"} <= set(unit)
    assert "Restart=on-failure" not in unit and "[Install]" not in unit
    assert m.restart == [] and [u.unit for u in m.units] == ["api-vacuum.timer"]


def test_worker_without_ports_is_one_enabled_quadlet():
    files, m = files_of("edge-haproxy", "h1"), manifest("edge-haproxy", "h1", "svc-worker")
    unit = lines(files["/home/worker/.config/containers/systemd/worker.container"].content)
    assert "WantedBy=default.target" in unit and not any(l.startswith("PublishPort=") for l in unit)
    assert 'Exec=sh -c "while sleep 3600; do :; done"' in unit
    assert m.restart[1]["instances"] == [{"unit": "worker.service", "health": None, "drain": None}]


def test_blue_green_container_behind_nginx():
    m = manifest("bluegreen-nginx", "h1", "svc-shop")
    image, group = m.restart
    assert group["strategy"] == "blue-green" and group["scope"] == "user:shop"
    assert group["switch"]["path"] == "/etc/outpost/proxy/live/shop.nft"
    assert group["switch"]["reload"] == ["/usr/sbin/nft", "-f", "/etc/outpost/proxy/live/shop.nft"]


# --- injection safety -----------------------------------------------------------------------------------------

def test_tricky_env_values_stay_one_line_each_and_round_trip():
    unit = files_of("edge-haproxy", "h1")["/etc/containers/systemd/web@.container"].content
    env_lines = [l for l in lines(unit) if l.startswith("Environment=")]
    assert len(env_lines) == len(TRICKY_ENV) + 2            # + OUTPOST_IMAGE, OUTPOST_INSTANCE
    values = dict(unescape_word(l.removeprefix("Environment=")).split("=", 1) for l in env_lines[:-2])
    assert values == TRICKY_ENV
    assert 'Environment="PERCENT=100%% sure %%n %%i"' in lines(unit)   # no specifier survives
    assert 'Environment="DOLLAR=$$HOME and $${TAG}"' in lines(unit)    # no variable survives


def test_tricky_command_words_round_trip():
    unit = files_of("edge-haproxy", "h1")["/etc/containers/systemd/web@.container"].content
    (exec_line,) = [l for l in lines(unit) if l.startswith("Exec=")]
    assert exec_line == ('Exec=serve --greeting "hello world" --motto "it\'s 100%% $$real" '
                         '--path "a\\\\b" --x=%i')
    process = files_of("edge-haproxy", "h1")["/etc/systemd/system/api@.service"].content
    assert "ExecStart=/opt/api/api --port %i --motto \"it's 100%% $$real\"" in lines(process)
    assert 'Environment="MODE=blue green"' in lines(process) and "Environment=PCT=50%%" in lines(process)


@pytest.mark.parametrize("word, expected", [
    ("plain", "plain"), ("50%", "50%%"), ("%i", "%%i"), ("$HOME", '"$$HOME"'), ("", '""'),
    ('a"b', '"a\\"b"'), ("a\\b", '"a\\\\b"'), ("a b", '"a b"'), (";", '";"'), ("it's", '"it\'s"'),
])
def test_exec_word_escaping(word, expected):
    assert exec_word(word) == expected
    assert unescape_word(exec_word(word)) == word


def test_instance_specifier_survives_only_in_templates():
    assert exec_word("--port=%i", instance=True) == "--port=%i"
    assert exec_word("--port=%i", instance=False) == "--port=%%i"
    assert exec_word("%n%i%%", instance=True) == "%%n%i%%%%"
    assert env_assignment("A", "%i", instance=True, on_command_line=False) == "A=%i"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b", "a\tb", "a\x1bb"])
def test_control_characters_never_reach_a_unit(bad):
    with pytest.raises(ValueError):
        exec_word(bad)
    with pytest.raises(ValueError):
        env_assignment("A", bad, instance=False, on_command_line=True)
    with pytest.raises(ValueError):
        single_line(bad, "x")


def _with(service: str, **changes) -> dict:
    config = json.loads(json.dumps(EDGE))
    config["outpost:services"][service].update(changes)
    return config


def _container_with(**changes) -> dict:
    config = json.loads(json.dumps(EDGE))
    config["outpost:services"]["web"]["container"].update(changes)
    return config


@pytest.mark.parametrize("config", [
    _with("web", env={"X": "a\nExecStartPre=/bin/rm -rf /"}),
    _with("api", env={"X": "ok\r\n[Install]"}),
    _container_with(command="serve\nExecStartPre=/bin/true"),
    _container_with(command='serve "unbalanced'),
    _container_with(entrypoint="/bin/sh -c evil"),
    _container_with(image="Evil\nImage"),
    _container_with(image="ghcr.io/a/b:tag"),               # the tag goes in tag:
    _container_with(tag="1\nExecStart=/bin/sh"),
    _container_with(tag="has space"),
    _container_with(volumes=["/a b:/c"]),
    _container_with(volumes=["/a:/c\nX=y"]),
    _with("api", process={"exec": "/opt/api/api\n--port %i"}),
    _with("web", secret_files={"/etc/a\nb": "token"}),
    _with("web-reindex", schedule={"calendar": "daily\nOnCalendar=minutely"}),
], ids=lambda c: "config")
def test_injection_is_rejected_by_config_validation(config):
    with pytest.raises(ConfigError):
        parse(config, "edge")


@pytest.mark.parametrize("service, changes, key", [
    ("api", {"process": {"exec": "relative/path --x"}}, "services.api.process.exec"),
    ("api", {"process": {"exec": '/opt/api/api "unbalanced'}}, "services.api.process.exec"),
    ("api", {"process": {"exec": "/opt/api/api", "artifacts": {"/opt/../etc/passwd": "files/demo/hello.py"}}},
     "services.api.process.artifacts./opt/../etc/passwd"),
    ("api", {"process": {"exec": "/opt/api/api", "artifacts": {"/opt/api/x": "../../etc/passwd"}}},
     "services.api.process.artifacts./opt/api/x"),
    ("api", {"process": {"exec": "/opt/api/api", "artifacts": {"/opt/api/x": "files/does-not-exist"}}},
     "services.api.process.artifacts./opt/api/x"),
])
def test_unsafe_values_are_refused_by_check_with_their_key(service, changes, key):
    """These once passed the config and were refused only at render time (issue 15)."""
    with pytest.raises(ConfigError) as err:
        parse(_with(service, **changes), "edge")
    assert [line.split(": ")[1] for line in err.value.lines] == [f"outpost:{key}"]


def test_a_service_named_like_anothers_image_unit_is_refused():
    config = json.loads(json.dumps(EDGE))
    config["outpost:services"]["worker-image"] = {"hosts": ["h1"], "user": "worker",
                                                 "container": {"image": "docker.io/library/busybox"}}
    with pytest.raises(ConfigError) as err:
        parse(config, "edge")
    assert err.value.lines == ["Pulumi.edge.yaml: outpost:services.worker-image: unit worker-image.service (user:worker) "
                               "is defined by both svc-worker and svc-worker-image; rename one of the services"]


def test_durations_in_seconds():
    assert [seconds(d) for d in ("2s", "500ms", "1min 30s", "1h", "250ms")] == [2, 0.5, 90, 3600, 0.25]


def test_edge_stack_is_valid_config():
    assert sorted(edge_stack("edge-haproxy").services) == sorted(EDGE["outpost:services"])


@pytest.mark.parametrize("name", ["ssh", "caddy", "podman", "systemd-tmpfiles", "outpost-restart", "my_app"])
def test_names_that_would_shadow_host_units_or_break_the_agent_are_refused(name):
    config = json.loads(json.dumps(EDGE))
    config["outpost:services"][name] = {"hosts": ["h1"], "process": {"exec": "/usr/bin/true"}}
    with pytest.raises(ConfigError, match=f"outpost:services.{name}: '{name}'"):
        parse(config, "edge")


def test_removal_keeps_data_unless_purge_is_asked_for():
    """A removed service's user and home stay (locked) unless the service or the stack says purge."""
    def users(services, **extra):
        st = parse(_base(services, **extra), "purge-case")
        return {u.name: u.to_json().get("purge", False) for m in service_manifests(st, "h1") for u in m.users}
    web = {"hosts": ["h1"], "container": {"image": "registry.example.org/web", "tag": "1", "port": 80}}
    job = {"hosts": ["h1"], "user": "worker", "secret_files": {"/etc/w": "api_key"},
           "process": {"exec": "/usr/bin/true"}}
    assert users({"web": web, "job": job}) == {"web": False, "worker": False}
    assert users({"web": {**web, "purge": True}, "job": job}) == {"web": True, "worker": False}
    assert users({"web": web, "job": job}, purge=True) == {"web": True, "worker": True}
    assert all(u.get("purge") is not True for ms in rendered("prod").values() for m in ms
               for u in (x.to_json() for x in m.users))


def test_the_agent_learns_which_user_a_service_runs_as_to_refuse_taking_one_over():
    """A fixed user carries the key that names it; a DynamicUser= service's name goes to
    `dynamic_users` (systemd would run it as an existing account of that name): the agent refuses
    either when the host has such an account it did not create (outpost_agent/accounts.py)."""
    fixed = manifest("edge-haproxy", "h1", "svc-api").to_json()
    assert fixed["users"][0]["key"] == "services.api.user" and "dynamic_users" not in fixed
    dynamic = manifest("edge-haproxy", "h1", "svc-httpd").to_json()
    assert dynamic["users"] == [] and dynamic["dynamic_users"] == [{"name": "httpd", "key": "services.httpd.user"}]
