"""Stacks that passed `check` and then crashed the render (or broke the error format), each
shrunk to one change of a repository stack and kept as an ordinary test: issue 15's examples
first, then every crash class the fuzzer (test_fuzz_config.py) found on the way."""

from __future__ import annotations

import copy

import pytest
import yaml

from components.config import ConfigError
from components.load import parse
from components.render import render_stack
from tests.conftest import ROOT
from tests.fuzz.test_fuzz_config import check_or_render
from tests.render import test_backups


def repo_test_stack() -> dict:
    return yaml.safe_load((ROOT / "Pulumi.test.yaml").read_text())["config"]


def backups_stack() -> dict:
    config = copy.deepcopy(test_backups.BASE)
    config["outpost:backups"] = copy.deepcopy(test_backups.BACKUPS["litestream"])
    return config


def svc(config: dict, name: str) -> dict:
    return config["outpost:services"][name]


def set_in(path: tuple, value):
    def mutate(config):
        node = config
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    return mutate


ART = "/opt/peerbook/peerbook"
CASES = {
    # issue 15's examples
    "artifact path with ..": (repo_test_stack, set_in(("outpost:services", "peerbook", "process", "artifacts"), {"/opt/../peerbook": "files/demo/peerbook.py"}),
                              "outpost:services.peerbook.process.artifacts./opt/../peerbook: '/opt/../peerbook' is not a normalized absolute path"),
    "artifact source with ..": (repo_test_stack, set_in(("outpost:services", "peerbook", "process", "artifacts"), {ART: "files/../files/demo/peerbook.py"}),
                                f"outpost:services.peerbook.process.artifacts.{ART}: 'files/../files/demo/peerbook.py' is not a path relative to the repository root"),
    "secret_files path with ..": (repo_test_stack, set_in(("outpost:services", "peerbook", "secret_files"), {"/etc/../x": "s3_secret"}),
                                  "outpost:services.peerbook.secret_files./etc/../x: '/etc/../x' is not a normalized absolute path"),
    "health path climbing out": (repo_test_stack, set_in(("outpost:services", "peerbook", "health", "path"), "/a/../.."),
                                 "outpost:services.peerbook.health.path: '/a/../..' is not a URL path like /ready"),
    "bucket endpoint with a quote": (repo_test_stack, set_in(("outpost:buckets", "bus-eta-test", "endpoint"), "https://a'b"),
                                     "outpost:buckets.bus-eta-test.endpoint: \"https://a'b\" is not a URL like"),
    "health interval 0s": (repo_test_stack, set_in(("outpost:services", "kollektivkart", "health", "interval"), "0s"),
                           "outpost:services.kollektivkart.health.interval: '0s' must be longer than 0"),
    # found by the fuzzer
    "a null in a field once typed as a union (dns.zone)": (repo_test_stack, set_in(("outpost:dns", "zone"), None),
                                                          "outpost:dns.zone: Input should be a valid string (got None)"),
    "a mapping key with a space": (repo_test_stack, set_in(("outpost:admin", " "), "admin"),
                                   'outpost:admin[" "]: unknown key; valid keys here:'),
    "a mapping key with a backslash": (repo_test_stack, set_in(("outpost:admin", "\\"), "admin"),
                                       'outpost:admin["\\\\"]: unknown key; valid keys here:'),
    "proxy email that is no address": (repo_test_stack, set_in(("outpost:proxy", "email"), ""),
                                       "outpost:proxy.email: '' is not a plain e-mail address like ops@example.org"),
    "two litestream databases with one file name": (
        backups_stack, set_in(("outpost:backups", "wiki", "paths"), ["/home/wiki/data/wiki.sqlite3", "/srv/wiki/wiki.sqlite3"]),
        "outpost:backups.wiki.paths: two databases share the file name of wiki/wiki.sqlite3"),
    "a control character in an env value": (repo_test_stack, set_in(("outpost:services", "kollektivkart", "env", "AWS_REGION"), "\x1f"),
                                            "outpost:services.kollektivkart.env.AWS_REGION: '\\x1f' must be a single line without control characters"),
    "a backup name with _": (backups_stack, lambda c: c["outpost:backups"].update(app_db=c["outpost:backups"].pop("app-db")),
                             "outpost:backups.app_db: 'app_db' is not a valid backup name"),
    "an empty backup ping": (backups_stack, set_in(("outpost:backups", "wiki", "ping"), ""),
                             "outpost:backups.wiki.ping: '' is not an http(s) URL"),
    # issue 15: what only the host used to catch
    "exec runs an artifact that is not executable": (
        repo_test_stack, set_in(("outpost:services", "peerbook", "process", "artifacts"), {ART: "README.md"}),
        f"outpost:services.peerbook.process.exec: runs {ART}, the artifact 'README.md', which is not executable in the repository"),
}


@pytest.mark.parametrize("case", CASES)
def test_is_a_key_path_error(case):
    base, mutate, expected = CASES[case]
    config = copy.deepcopy(base())
    mutate(config)
    name = "test" if base is repo_test_stack else "backups"
    with pytest.raises(ConfigError) as info:
        stack = parse(config, name)
        render_stack(stack)  # what used to crash: fails the test if parse let it through
    assert any(line.startswith(f"Pulumi.{name}.yaml: {expected}") for line in info.value.lines), info.value.lines
    assert len(info.value.lines) == len(set(info.value.lines)), "a problem is reported twice"
    check_or_render(name, config)  # the fuzzer's property holds


def test_an_executable_artifact_passes():
    config = repo_test_stack()
    assert svc(config, "peerbook")["process"]["artifacts"] == {ART: "files/demo/peerbook.py"}
    render_stack(parse(config, "test"))


def test_renderer_problems_are_reported_with_the_config_layers_format_all_at_once():
    config = backups_stack()
    config["outpost:backups"]["wiki"]["paths"] = ["/a/wiki.db", "/b/wiki.db"]
    config["outpost:backups"]["app-db"]["paths"] = ["/a/app.db", "/b/app.db"]
    with pytest.raises(ConfigError) as info:
        parse(config, "backups")
    keys = sorted(line.split(": ")[1] for line in info.value.lines)
    assert keys == ["outpost:backups.app-db.paths", "outpost:backups.wiki.paths"]


def test_a_pool_name_with_a_space_is_a_key_path_error():
    config = repo_test_stack()
    config["outpost:geodns"]["records"][0]["pools"] = {" ": []}
    with pytest.raises(ConfigError) as info:
        parse(config, "test")
    assert info.value.lines[0].startswith(
        "Pulumi.test.yaml: outpost:geodns.records[0].pools[\" \"]: ' ' is not a pool name like eu or default")
    check_or_render("test", config)


@pytest.mark.parametrize("kind, tls", [("caddy", "acme"), ("haproxy", "internal"), ("nginx", "internal")])
def test_a_health_check_on_the_root_path_renders(kind, tls):
    """health.path: / passed check and then crashed the proxy renderer (it took it for a route prefix)."""
    config = repo_test_stack()
    svc(config, "kollektivkart")["health"]["path"] = "/"
    config["outpost:proxy"] = {"kind": kind, "tls": tls, "email": "ops@example.org"} if tls == "acme" else {"kind": kind, "tls": tls}
    rendered = render_stack(parse(config, "test"))
    proxy = next(m for m in rendered["web1"] if m.name == "proxy")
    text = "".join(f.content for f in proxy.files if isinstance(f.content, str))
    probe = {"caddy": "health_uri /\n", "haproxy": "option httpchk GET / HTTP/1.1", "nginx": ""}[kind]
    assert probe in text


def test_a_key_twice_in_one_mapping_is_a_key_path_error(tmp_path):
    """YAML keeps the last of two equal keys without a word; the stack file must not."""
    from components.load import load_file
    text = (ROOT / "Pulumi.test.yaml").read_text()
    text = text.replace("      replicas: [8000, 8001]\n", "      replicas: [8000, 8001]\n      replicas: [9000]\n", 1)
    text = text.replace("  outpost:protect: false\n", "  outpost:protect: false\n  outpost:protect: true\n", 1)
    (tmp_path / "Pulumi.test.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_file(tmp_path / "Pulumi.test.yaml")
    assert [line.split(": appears")[0] for line in info.value.lines] == [
        "Pulumi.test.yaml: outpost:protect", "Pulumi.test.yaml: outpost:services.kollektivkart.replicas"]
    assert "(lines 6 and 7)" in info.value.lines[0]


@pytest.mark.parametrize("text", ["- a\n- b\n", "42\n", "config: [1]\n", "config:\n  outpost:hosts: {a: 1}\n  outpost:hosts: {b: 2}\n"])
def test_a_stack_file_of_the_wrong_shape_is_an_error_not_a_traceback(text, tmp_path):
    from components.load import load_file
    (tmp_path / "Pulumi.x.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_file(tmp_path / "Pulumi.x.yaml")
    assert all(line.startswith("Pulumi.x.yaml: ") for line in info.value.lines)


@pytest.mark.parametrize("path", ["/", "/api/", "/a/../b", "/./a", "//a"])
def test_a_route_path_the_proxies_refuse_is_a_key_path_error(path):
    """route.path '/' passed check (the model's pattern allowed it) and crashed the proxy renderer."""
    config = repo_test_stack()
    config["outpost:routes"][1]["path"] = path
    with pytest.raises(ConfigError) as info:
        parse(config, "test")
    assert info.value.lines == [f"Pulumi.test.yaml: outpost:routes[1].path: {path!r} is not a URL path prefix like /api "
                                "or /api/v1 (segments of A-Z a-z 0-9 . _ ~ -, none of them '.' or '..', no trailing '/'; "
                                "leave path out to route the whole host)"]


@pytest.mark.parametrize("name", ["restic", "multi-user", "init"])
def test_a_service_named_like_a_host_unit_is_a_key_path_error(name):
    """The renderer's list of the host's own units is longer than check's: these passed check and
    then raised a bare ValueError in the services renderer."""
    config = repo_test_stack()
    config["outpost:services"][name] = config["outpost:services"].pop("peerbook")
    config["outpost:routes"] = [r for r in config["outpost:routes"] if r["service"] != "peerbook"]
    with pytest.raises(ConfigError) as info:
        parse(config, "test")
    assert info.value.lines == [f"Pulumi.test.yaml: outpost:services.{name}: a unit named {name}.service would replace "
                                "the host's own (ssh, the proxy, podman, systemd ...); choose another name"]


def test_a_secret_file_over_the_services_own_unit_is_a_key_path_error():
    config = repo_test_stack()
    svc(config, "peerbook")["secret_files"] = {"/etc/systemd/system/peerbook@.service": "s3_secret"}
    with pytest.raises(ConfigError) as info:
        parse(config, "test")
    # check's list of places a service may not write (unit directories among them) says it first
    assert info.value.lines[0].startswith("Pulumi.test.yaml: outpost:services.peerbook.secret_files."
                                          "/etc/systemd/system/peerbook@.service: ")


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c["outpost:buckets"]["bus-eta-test"].update(region="hel'1"), "buckets.bus-eta-test.region"),
    (lambda c: svc(c, "kollektivkart")["container"].update(command="   "), "services.kollektivkart.container.command"),
])
def test_values_the_backup_and_unit_renderers_refused_are_key_path_errors(mutate, key):
    config = repo_test_stack()
    mutate(config)
    with pytest.raises(ConfigError) as info:
        parse(config, "test")
    assert [line.split(": ")[1] for line in info.value.lines] == [f"outpost:{key}"]


def test_a_route_host_too_long_for_dns_is_a_key_path_error():
    config = repo_test_stack()
    config["outpost:routes"][1]["host"] = ("a" * 60 + ".") * 5 + "app{suffix}.example.org"
    with pytest.raises(ConfigError) as info:
        parse(config, "test")
    assert [line.split(": ")[1] for line in info.value.lines] == ["outpost:routes[1].host"]
    assert "is not a DNS name" in info.value.lines[0]


@pytest.mark.parametrize("url", ["https://a b/x", "https://x/dir?q=1", "https://x:99999999/"])
def test_an_acme_directory_the_proxy_cannot_name_is_a_key_path_error(url):
    config = repo_test_stack()
    config["outpost:proxy"]["acme_ca"] = url
    with pytest.raises(ConfigError) as info:
        parse(config, "test")
    assert [line.split(": ")[1] for line in info.value.lines] == ["outpost:proxy.acme_ca"]
