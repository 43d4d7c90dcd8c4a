"""The reference Ansible playbook (bench/ansible/) that `make bench` measures outpost against: it
parses, it deploys the same environment as bench/Pulumi.bench.yaml, its secrets stay out of logs
and land in 0600 files, and the bench connects it with the pinned host key only."""

from __future__ import annotations

import json

import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
import yaml

from components.load import load_file, parse
from components.render import render_stack
from components.program import run_program, stack_config
from tests.conftest import ROOT

ANSIBLE = ROOT / "bench" / "ansible"
BENCH_STACK = ROOT / "bench" / "Pulumi.bench.yaml"
SECRET_VARS = ("demo_token", "tls_key")


def ansible_playbook() -> str:
    path = Path(sys.executable).parent / "ansible-playbook"
    if not path.exists():
        pytest.fail("ansible-playbook is not in .venv: run tools/setup.sh (pyproject's bench extra)")
    return str(path)


def tasks(doc) -> list[dict]:
    """Every task of a playbook or task file, blocks and handlers included."""
    out = []
    for item in doc:
        for task in [*item.get("tasks", []), *item.get("handlers", [])] if "hosts" in item else [item]:
            out.append(task)
            out.extend(tasks(task.get("block", [])))
    return out


def module_args(task: dict) -> dict:
    modules = [k for k in task if "." in k]
    assert len(modules) == 1, task
    return task[modules[0]] or {}


def test_playbook_passes_syntax_check():
    result = subprocess.run([ansible_playbook(), "--syntax-check", "-i", "inventory.example.yml", "site.yml"],
                            cwd=ANSIBLE, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "playbook: site.yml" in result.stdout


def test_syntax_check_catches_a_broken_playbook(tmp_path):
    broken = tmp_path / "site.yml"
    broken.write_text((ANSIBLE / "site.yml").read_text().replace("  tasks:", "  tasks:\n    - name: x\n"
                                                                 "      ansible.builtin.copy: {dest: /x}\n"
                                                                 "      no_such_keyword: 1", 1))
    result = subprocess.run([ansible_playbook(), "--syntax-check", "-i", "localhost,", str(broken)],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg")})
    assert result.returncode != 0 and "no_such_keyword" in result.stdout + result.stderr


def test_playbook_deploys_the_bench_stack():
    """vars.yml says what Pulumi.bench.yaml says, so both tools deploy the same environment."""
    stack = yaml.safe_load(BENCH_STACK.read_text())["config"]
    hello = stack["outpost:services"]["hello"]
    job = stack["outpost:services"]["hello-refresh"]
    v = yaml.safe_load((ANSIBLE / "vars.yml").read_text())
    assert v["admin_user"] == stack["outpost:admin"]["user"]
    assert v["app_user"] == job["user"] == "hello"
    assert v["image"] == hello["container"]["image"] == job["container"]["image"]
    assert (v["hello_tag"], v["refresh_tag"]) == (hello["container"]["tag"], job["container"]["tag"])
    assert v["hello_container_port"] == hello["container"]["port"]
    assert v["hello_replicas"] == hello["replicas"]
    assert v["hello_env"] == hello["env"]
    assert (v["hello_cpu_quota"], v["hello_memory_max"]) == (hello["limits"]["cpu"], hello["limits"]["memory"])
    assert v["health_path"] == hello["health"]["path"] and v["health_retries"] == hello["health"]["retries"]
    assert v["image_host_paths"] == hello["container"]["build"]["host_paths"]
    assert {f"/{k}": os.path.normpath(os.path.join("bench/ansible", p)) for k, p in v["image_files"].items()} \
        == hello["container"]["build"]["files"]
    assert (v["refresh_calendar"], v["refresh_randomized_delay"]) == \
        (job["schedule"]["calendar"], job["schedule"]["randomized_delay"])
    assert [r["host"].replace("{suffix}", "") for r in stack["outpost:routes"]] == [v["route_host"]]
    assert set(hello["secret_env"].values()) | {"deploy_key"} == set(stack["outpost:secrets"])


def test_bench_stack_is_valid_and_deploys_one_bundle_of_every_part():
    load_file(BENCH_STACK)
    registered = run_program("bench", stack_config("bench", project_dir=BENCH_STACK.parent))
    commands = {r.name: r for r in registered if r.type == "command:remote:Command"}
    assert sorted(commands) == ["vm-bootstrap", "vm-bundle"]
    parts = [m["name"] for m in json.loads(commands["vm-bundle"].inputs["stdin"])["manifests"]]
    assert parts == ["base", "tls", "proxy", "svc-hello", "svc-hello-refresh"]


def test_secrets_are_no_log_and_land_in_0600_files():
    play = yaml.safe_load((ANSIBLE / "site.yml").read_text())
    carrying = [t for t in tasks(play) if any(s in yaml.safe_dump(t) for s in SECRET_VARS)]
    assert {s for t in carrying for s in SECRET_VARS if s in yaml.safe_dump(t)} == set(SECRET_VARS)
    for task in carrying:
        assert task.get("no_log") is True, task["name"]
        assert module_args(task)["mode"] == "0600", task["name"]
    templates = "".join(p.read_text() for p in (ANSIBLE / "templates").iterdir())
    assert not any(s in templates for s in SECRET_VARS), "a secret in a template would be logged by --diff"


def test_the_bench_pins_the_host_key_and_keeps_secrets_in_a_0600_file(tmp_path):
    from bench.ansible_vs_outpost import Playbook

    vm = SimpleNamespace(ssh_port=2299, known_hosts_path=tmp_path / "known_hosts", private_key_path="/k",
                         public_key="ssh-ed25519 AAAA admin")
    playbook = Playbook(vm, tmp_path, {"demo_token": "t0ken", "tls_key": "KEY"})
    host = yaml.safe_load(playbook.inventory.read_text())["bench"]["hosts"]["vm"]
    args = host["ansible_ssh_common_args"].split()
    assert f"UserKnownHostsFile={vm.known_hosts_path}" in args and "StrictHostKeyChecking=yes" in args
    assert "GlobalKnownHostsFile=/dev/null" in args and "t0ken" not in playbook.inventory.read_text()
    assert stat.S_IMODE(playbook.secrets.stat().st_mode) == 0o600
    cfg = (ANSIBLE / "ansible.cfg").read_text()
    assert "host_key_checking = True" in cfg and "StrictHostKeyChecking=no" not in cfg


def reverse_proxy_settings(caddyfile: str) -> list[str]:
    """The directives of the first reverse_proxy block, through its transport's dial_timeout
    (comments, `to` and `import` left out: the two templates list upstreams differently)."""
    lines = []
    for line in caddyfile.split("reverse_proxy {", 1)[1].splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "to ", "import ")):
            lines.append(line)
        if line.startswith("dial_timeout"):
            return lines
    raise AssertionError("no dial_timeout in the reverse_proxy block")


def test_playbook_proxies_with_the_settings_outpost_renders():
    """Same Caddy load balancing and health checks for both tools, so the requests each loses in
    the rolling restart compare the tools and not two proxy configurations."""
    manifests = render_stack(parse(stack_config("bench", project_dir=BENCH_STACK.parent), "bench"))["vm"]
    ours = next(f.content for m in manifests for f in m.files if f.path == "/etc/caddy/Caddyfile")
    variables = yaml.safe_load((ANSIBLE / "vars.yml").read_text())
    theirs = jinja2.Template((ANSIBLE / "templates" / "Caddyfile.j2").read_text()).render(
        ansible_managed="managed", **variables)
    assert "lb_try_duration 15s" in reverse_proxy_settings(ours)
    assert reverse_proxy_settings(theirs) == reverse_proxy_settings(ours)
