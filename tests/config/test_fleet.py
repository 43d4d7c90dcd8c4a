"""Host groups (`outpost:groups`, components/config/fleet.py): the compact form renders exactly what
the long form renders, a 200-host fleet's config fits the engine's environment variable, and every
mistake is reported at the key the user wrote."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from bench.eval_scale import synthetic_config
from components.config import ConfigError
from components.load import load_file, parse
from components.program import run_program, stack_config
from components.render import render_stack
from tests.conftest import ROOT

FLEET = ROOT / "tests" / "config" / "fleet"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA0I4Ww4cUKzj8bGqL1TYtDfQ1ybB0fKzmKq5gqAqZ5o x"
# The language host hands the program its config in one environment variable; Linux refuses a
# single string longer than this (MAX_ARG_STRLEN).
ENV_LIMIT = 128 * 1024


def rendered(stack) -> dict:
    return {host: [(m.name, m.encode()) for m in manifests] for host, manifests in render_stack(stack).items()}


def test_the_compact_form_renders_exactly_the_long_form():
    compact, long = load_file(FLEET / "compact.yaml"), load_file(FLEET / "long.yaml")
    assert list(compact.hosts) == list(long.hosts) == ["vps1", "web1", "web2", "worker-1", "worker-2",
                                                        "worker-3", "worker-4"]
    assert compact == long
    assert rendered(compact) == rendered(long)


def test_the_compact_form_registers_exactly_the_long_forms_resources():
    def registered(name: str) -> list:
        doc = yaml.safe_load((FLEET / f"{name}.yaml").read_text())["config"]
        config = stack_config("prod", overrides={k: v for k, v in doc.items()})
        config["outpost:secrets"] = {n: f"<secret:{n}>" for n in doc["outpost:secrets"]}
        # the SDK registers concurrently: compare as a sorted list, not in arrival order
        return sorted((r.type, r.name, r.parent, json.dumps(r.inputs, sort_keys=True), sorted(r.depends_on))
                      for r in run_program("prod", config))
    compact, long = registered("compact"), registered("long")
    assert len(compact) > 40 and compact == long


def compact_fleet(hosts: int) -> dict:
    """The synthetic fleet of bench/eval_scale.py, as groups: half Hetzner, half static hosts."""
    long = synthetic_config(hosts)
    static = {n: {"address": h["address"], "host_key": h["host_key"]}
              for n, h in long["outpost:hosts"].items() if h["provider"] == "static"}
    config = {k: v for k, v in long.items() if k not in ("outpost:hosts", "outpost:services", "outpost:routes")}
    config["outpost:groups"] = {
        "cloud": {"count": hosts - len(static), "host": {"provider": "hcloud", "type": "cx22", "location": "hel1",
                                                          "role": "web"}},
        "edge": {"host": {"provider": "static", "host_key": KEY}, "members": static},
    }
    config["outpost:services"] = {
        "app": {"hosts": ["cloud", "edge"], "container": {"image": "ghcr.io/x/app", "tag": "1", "port": 8000},
                "replicas": [10000, 10001], "health": {"path": "/ready"}, "env": {"A": "b"},
                "secret_env": {"TOKEN": "token"}},
        "web": {"hosts": ["cloud"], "process": {"exec": "/usr/bin/python3 -m http.server %i"}, "replicas": [10002]},
    }
    config["outpost:routes"] = [{"host": "app.example.org", "service": "app"}]
    return config


def test_a_200_host_fleet_fits_the_engines_config_variable():
    config = compact_fleet(200)
    stack = parse({**config, "outpost:secrets": {"deploy_key": None, "token": None}}, "bench")
    assert len(stack.hosts) == 200 and len(stack.services["app"].hosts) == 200
    size = len(json.dumps(config))
    assert size < ENV_LIMIT / 8, f"{size} bytes of config as JSON"
    assert len(json.dumps(synthetic_config(200))) > ENV_LIMIT, "the long form is what could not start"


def test_a_group_of_one_still_stands_for_its_member():
    doc = yaml.safe_load((FLEET / "compact.yaml").read_text())["config"]
    doc["outpost:groups"]["worker"]["count"] = 1
    stack = parse(doc, "prod")
    assert stack.services["crunch"].hosts == ["worker-1", "web1"]


def test_member_addresses_count_up_from_the_first():
    stack = load_file(FLEET / "compact.yaml")
    assert [stack.hosts[f"worker-{i}"].networks["internal"] for i in range(1, 5)] == [
        "10.0.1.20", "10.0.1.21", "10.0.1.22", "10.0.1.23"]


def problems(mutate) -> list[str]:
    doc = yaml.safe_load((FLEET / "compact.yaml").read_text())["config"]
    mutate(doc)
    with pytest.raises(ConfigError) as info:
        parse(doc, "prod")
    return info.value.lines


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c["outpost:groups"]["worker"]["host"].update(type=5),
     ["outpost:groups.worker.host.type: Input should be a valid string (got 5)"]),
    (lambda c: c["outpost:groups"]["worker"]["host"].update(flavour="big"),
     ["outpost:groups.worker.host.flavour: unknown key"]),
    (lambda c: c["outpost:groups"]["web"]["members"]["web2"].update(location=7),
     ["outpost:groups.web.members.web2.location: Input should be a valid string (got 7)"]),
    (lambda c: c["outpost:groups"]["worker"].update(count=0),
     ["outpost:groups.worker.count: 0 is not a number of hosts from 1 to 1000"]),
    (lambda c: c["outpost:groups"]["worker"].update(members={"w": {}}),
     ["outpost:groups.worker: give either count"]),
    (lambda c: c["outpost:groups"]["worker"].update(networks={"internal": "10.0.1.x"}),
     ["outpost:groups.worker.networks.internal: '10.0.1.x' is not an IP address"]),
    (lambda c: c["outpost:groups"]["worker"].update(networks={"internal": "10.0.9.20"}),
     ["outpost:groups.worker.networks.internal:"]),
    (lambda c: c["outpost:groups"].update(vps1={"count": 1, "host": {"provider": "hcloud"}}),
     ["outpost:groups.vps1: 'vps1' is also in outpost:hosts"]),
    (lambda c: c["outpost:groups"]["web"]["members"].update({"worker-2": {}}),
     ["outpost:groups.worker: member 'worker-2' is already a host"]),
    (lambda c: c["outpost:geodns"]["records"][0]["pools"].update(default=["web"]),
     ["outpost:geodns.records[0].pools.default[0]: host 'web1' is already in pool 'hel'"]),
    (lambda c: c["outpost:groups"]["web"].update(size=3),
     ["outpost:groups.web.size: unknown key; valid keys here: count, members, host, networks"]),
    (lambda c: c["outpost:services"]["crunch"].update(hosts=["worker", "nowhere"]),
     ["outpost:services.crunch.hosts[1]: host 'nowhere'"]),
])
def test_mistakes_are_reported_at_the_key_the_user_wrote(mutate, expected):
    lines = problems(mutate)
    for want in expected:
        assert any(f"Pulumi.prod.yaml: {want}" in line for line in lines), lines
    assert not any("outpost:hosts.worker-" in line or "outpost:hosts.web" in line for line in lines), lines
    assert len(lines) == len(set(lines)), "a template's problem once, not once per member"


def test_a_stack_without_groups_is_read_as_before():
    for name in ("local", "test", "prod"):
        doc = yaml.safe_load((ROOT / f"Pulumi.{name}.yaml").read_text())["config"]
        assert "outpost:groups" not in doc
        assert parse(copy.deepcopy(doc), name) == load_file(ROOT / f"Pulumi.{name}.yaml")
