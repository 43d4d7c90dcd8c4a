"""Day two on the VM: the demo stack (Pulumi.local.yaml) deployed by the real `pulumi up`, then
`status`, `drift`, `logs` and `rollback` (components/operate) run against that stack exactly as
`make` runs them: the config from the file the CLI reads, the deploy key through `pulumi config
get`, then real pinned SSH to the real agent. Each test builds on the previous one.

It runs on the suite's e2e VM, after the local stack's own tests destroyed what they deployed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from components.operate import drift, logs, rollback, status
from components.operate.connections import from_cli, injected
from tests.e2e.backing import place_litestream
from tests.e2e.deployment import Deployment
from tests.e2e.load import Load
from tests.e2e.test_local_stack import HOST, get, tag_of, wait_for

SAMPLES = Path(os.environ.get("OUTPOST_OPERATE_SAMPLES", "/tmp/outpost-operate-samples"))


@pytest.fixture(scope="module")
def ops(vm, s3, tmp_path_factory):
    # The stack's litestream backup needs the pinned binary the VM can't fetch (the local stack's
    # destroy took the one placed at boot).
    place_litestream(vm)
    deployment = Deployment(vm, tmp_path_factory.mktemp("operate"), s3_port=s3.port)
    deployment.up()
    wait_for(lambda: get(deployment, "/")[0] == 200, timeout=300)
    return deployment


def source(deployment):
    """What `make status STACK=local` reads: the CLI's own config file and `pulumi config get`."""
    return from_cli("local", deployment.cli)


def sample(name: str, text: str) -> None:
    SAMPLES.mkdir(parents=True, exist_ok=True)
    (SAMPLES / name).write_text(text)


def settled_status(deployment, want_exit: int, timeout: float = 120):
    """The status document once it exits WANT_EXIT (replicas may still be starting)."""
    def check():
        doc = status.collect(source(deployment))
        return doc if doc["exit"] == want_exit else None
    try:
        return wait_for(check, timeout=timeout, interval=3)
    except AssertionError:
        doc = status.collect(source(deployment))
        raise AssertionError(f"status exits {doc['exit']}, not {want_exit}:\n{status.table(doc)}") from None


def test_status_is_clean_after_a_deploy(ops):
    doc = settled_status(ops, 0)
    text = status.table(doc)
    sample("status.txt", text)
    rows = {m["name"]: m for m in doc["hosts"]["vm"]["manifests"]}
    assert set(rows) == {"base", "tls", "proxy", "svc-hello", "svc-hello-refresh", "svc-wsgi",
                         "backup-wsgi-state", "backup-wsgi-db"}
    assert all(m["stack"] == "up to date" for m in rows.values()), text
    hello = rows["svc-hello"]
    assert hello["version"] == "tag 1"
    assert [(r["unit"], r["healthy"]) for r in hello["replicas"]] == \
        [("hello@8000.service", True), ("hello@8001.service", True)]
    assert hello["last"]["op"] == "apply" and hello["last"]["outcome"] == "ok"
    # the deploy key never reaches the output
    assert "PRIVATE KEY" not in text and "PRIVATE KEY" not in str(doc)


def test_a_replica_stopped_by_hand_makes_status_exit_1_naming_it(ops):
    ops.admin_ssh("sudo systemctl --user -M hello@ stop hello@8001.service")
    try:
        doc = status.collect(source(ops))
        text = status.table(doc)
        sample("status-stopped.txt", text)
        assert doc["exit"] == 1
        (hello,) = [m for m in doc["hosts"]["vm"]["manifests"] if m["name"] == "svc-hello"]
        # podman's stop ends the container with SIGTERM's status: systemd calls that "failed"
        assert hello["problems"][0] in ("hello@8001.service is inactive", "hello@8001.service is failed")
        assert any(p.startswith("replica hello@8001.service unhealthy") for p in hello["problems"])
        assert f"vm: hello: {hello['problems'][0]}" in text
        others = [m for m in doc["hosts"]["vm"]["manifests"] if m["name"] != "svc-hello"]
        assert all(m["ok"] for m in others), text
    finally:
        ops.admin_ssh("sudo systemctl --user -M hello@ start hello@8001.service")
    settled_status(ops, 0)


def test_an_unreachable_host_exits_2_and_is_named(ops):
    config = source(ops).config     # with the admin key's secret, as `make status` reads it
    config = {**config, "outpost:hosts": {"vm": {**config["outpost:hosts"]["vm"], "port": 9}}}
    doc = status.collect(injected("local", config))
    assert doc["exit"] == 2 and not doc["hosts"]["vm"]["reachable"]
    assert status.table(doc).splitlines()[1].split()[:2] == ["vm", "-"]
    assert "vm: unreachable: vm (127.0.0.1:9)" in status.table(doc)


EDITED = "/etc/systemd/system/outpost-restart@.service"
CHMODED = "/etc/outpost/backup/wsgi-state.env"


def test_drift_lists_exactly_an_edited_and_a_chmoded_file_and_repair_puts_them_back(ops):
    assert drift.collect(source(ops))["exit"] == 0, drift.text(drift.collect(source(ops)))
    ops.admin_ssh(f"echo '# edited by hand' | sudo tee -a {EDITED} >/dev/null && sudo chmod 0644 {CHMODED}")
    doc = drift.collect(source(ops))
    sample("drift.txt", drift.text(doc))
    assert doc["exit"] == 1
    found = {(m["name"], i.get("path"), i["what"]) for m in doc["hosts"]["vm"]["manifests"] for i in m["drift"]}
    assert found == {("svc-hello-refresh", EDITED, "changed: content"),
                     ("backup-wsgi-state", CHMODED, "changed: mode 0644 (wants 0600)")}

    repaired = drift.collect(source(ops), repair=True)
    sample("drift-repair.txt", drift.text(repaired))
    assert repaired["exit"] == 0, drift.text(repaired)
    assert ops.admin_ssh(f"sudo stat -c %a {CHMODED}").stdout.strip() == "600"
    assert "edited by hand" not in ops.admin_ssh(f"sudo cat {EDITED}").stdout
    assert drift.collect(source(ops))["exit"] == 0
    log = ops.admin_ssh("sudo tail -n 2 /var/lib/outpost/agent.log").stdout
    assert " repair backup-wsgi-state " in log and " repair svc-hello-refresh " in log
    settled_status(ops, 0)


def test_logs_show_both_replicas_merged_by_time(ops):
    doc = logs.collect(source(ops), "hello")
    text = "".join(logs.line_of(r) + "\n" for r in doc["lines"])
    sample("logs.txt", text)
    assert not doc["errors"]
    assert {r["unit"] for r in doc["lines"]} >= {"hello@8000.service", "hello@8001.service"}, text
    assert [r["time"] for r in doc["lines"]] == sorted(r["time"] for r in doc["lines"])
    assert all(line.split(" ", 2)[1] == "vm" for line in text.splitlines())
    assert len(logs.collect(source(ops), "hello", lines=5)["lines"]) == 5


def test_rollback_under_load_loses_no_request_and_status_reports_it(ops):
    ops.services["hello"]["container"]["tag"] = "2"
    ops.up()
    assert tag_of(get(ops, "/")[1]) == "2"
    settled_status(ops, 0)

    with Load(ops.vm.https_port, HOST, "/", ops.ca_file(), clients=4) as load:
        doc = rollback.run(source(ops), "hello")
    sample("rollback.txt", rollback.text(doc))
    assert doc["exit"] == 0, rollback.text(doc)
    assert doc["hosts"][0]["line"].endswith("restarted: hello-image(restart), hello(rolling)") or \
        "hello(rolling)" in doc["hosts"][0]["line"], doc
    result = load.result
    assert result.sent > 0 and result.lost == 0, result
    assert tag_of(get(ops, "/")[1]) == "1"

    doc = status.collect(source(ops))
    text = status.table(doc)
    sample("status-rolled-back.txt", text)
    (hello,) = [m for m in doc["hosts"]["vm"]["manifests"] if m["name"] == "svc-hello"]
    assert hello["stack"] == "rolled back, stack wants tag 2" and hello["version"] == "tag 1"
    assert doc["exit"] == 1
