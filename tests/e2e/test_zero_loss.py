"""Deploys lose nothing, not even a POST: blue-green switches, route changes and rolling restarts
on Caddy, HAProxy and nginx, each under a load of real-behaving clients (tests/e2e/load.py
`ClientLoad`), on one Debian 13 VM.

The manifests come from the render layer and go to the real agent in the VM over SSH, the way
tests/e2e/test_backup_restore.py's `apply()` does it: the same code path as a deploy, minus
Pulumi. Two native services run files/demo/hello.py: `zl` (rolling, replicas 8100/8101) and `zlbg`
(blue-green, slots 8200/8201), each keeping the POSTs it gets in a database its replicas share.
For each proxy, under one load that runs through all three operations:

* switch: ROUNDS blue-green switches: every fourth a deploy of a new version (the idle slot,
  which served until the switch before, restarts, then the switch), the others
  `outpost-apply switch zlbg` (a switch back, as `make rollback` does); after each, a fresh
  connection to the proxy's stable address reaches the slot the agent says is live;
* route change: ROUNDS applies of the proxy manifest that add or drop a route, each one
  validated and reloaded on the host;
* rolling restart: ROUNDS rolling restarts of `zl`'s two replicas: every fifth the apply of a new
  version, the others `outpost-apply restart svc-zl` (the same rollout without new files, as a
  job's `after_success` runs it).

The operations run in a tight loop inside the VM (one SSH session per operation kind, the agent
started once per step). Afterwards each app's store must hold every POST a client was told was
kept, once. The table proxy x operation x {requests, lost, retried, duplicated, slowest} goes to
the session's report (build/e2e-report.md) and is printed; every cell must show 0 lost and 0
duplicated. ROUNDS is 4 in `make test` (time); `OUTPOST_ZERO_LOSS_ROUNDS=20` runs the issue's count.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from components.render.agent import AGENT_PATH as AGENT, agent_zipapp
from tests.e2e.load import ClientLoad, Target, https_get
from tests.e2e.report import record
from tests.e2e.backing import moto_server
from tests.e2e.host_guards import (GUARD_BUCKET, GUARD_SECRETS, check_the_slowed_restore, refused_accounts,
                                   secrets_quoted_by_validators, start_a_slowed_restore)
from tests.e2e.zero_loss_stack import (BG, DRIVER, DRIVER_SOURCE, ZL, apply_step, certificates, figures,
                                       keep_journal, manifests, run_steps)

pytestmark = pytest.mark.e2e

# How often each operation runs per proxy. The issue asks for 20; under qemu's TCG one operation
# takes 2-15 s (a rolling restart the longest), so 20 x 3 x 3 take about half an hour: make test
# runs 4 (about 10 minutes for the module); OUTPOST_ZERO_LOSS_ROUNDS=20 runs the full count.
ROUNDS = int(os.environ.get("OUTPOST_ZERO_LOSS_ROUNDS", "4"))
KINDS = ("caddy", "haproxy", "nginx")
OPERATIONS = ("switch", "route change", "rolling restart")
TABLE: list[tuple[str, str, dict]] = []   # (proxy, operation, figures) for the printed table

@pytest.fixture(scope="module")
def guard_s3():
    """moto's S3 server with the bucket of the slowed-restore test; the VM reaches it through
    qemu's guest forward as http://10.0.2.100:9000."""
    import boto3
    with moto_server() as port:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id=GUARD_SECRETS["s3_key_id"],
                              aws_secret_access_key=GUARD_SECRETS["s3_secret"])
        client.create_bucket(Bucket=GUARD_BUCKET)
        yield port


@pytest.fixture(scope="module")
def zvm(tmp_path_factory, guard_s3):
    from tools.vm import VM
    started = time.monotonic()
    machine = VM.start(state_dir=tmp_path_factory.mktemp("zero-loss-vm"), timeout=900, guestfwd_port=guard_s3)
    record("zero loss: boot VM to SSH", time.monotonic() - started, machine.info.get("accel", ""))
    try:
        machine.ssh(f"install -d -m 0755 {Path(AGENT).parent} && cat > {AGENT}", input=agent_zipapp())
        machine.ssh(f"cat > {DRIVER}", input=DRIVER_SOURCE.encode())
        yield machine
    finally:
        machine.stop()


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    ca, secrets = certificates()
    path = tmp_path_factory.mktemp("zero-loss-ca") / "ca.pem"
    path.write_text(ca)
    return str(path), secrets


def wait_for(check, what: str, timeout: float, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            result = check()
            if result:
                return result
        except OSError as error:     # the proxy is (re)starting
            last = error
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s (last error: {last})")
        time.sleep(interval)


def test_a_rootless_service_starts_waiting_for_a_slowed_restore(zvm):
    """Loose end (a), first half: the waiting runs in the background while the proxies are tested."""
    start_a_slowed_restore(zvm)


@pytest.mark.parametrize("kind", KINDS)
def test_no_request_is_lost_through_switches_route_changes_and_rolling_restarts(zvm, tls, kind):
    ca_file, secrets = tls
    first = manifests(zvm, kind)
    started = time.monotonic()
    run_steps(zvm, [apply_step(first[name], secrets, f"deploy {name}")
                    for name in ("tls", "proxy", "svc-zl", "svc-zlbg")], timeout=1200)
    for host in (ZL, BG):
        wait_for(lambda: https_get(zvm.https_port, host, "/", ca_file, timeout=10)[0] == 200,
                 f"{host} answers through {kind}", 120)
    record(f"zero loss: deploy behind {kind}", time.monotonic() - started)

    # the operations, rendered up front: versions count up across the three proxies' runs
    base = KINDS.index(kind) * 100
    switch_steps = []
    for i in range(ROUNDS):
        if i % 4 == 0:
            m = manifests(zvm, kind, bg=base + i + 2)["svc-zlbg"]
            switch_steps.append(apply_step(m, secrets, f"deploy zlbg v{base + i + 2}", check="bluegreen"))
        else:
            switch_steps.append({"op": "switch", "group": "zlbg", "label": "switch back", "check": "bluegreen"})
    route_steps = [apply_step(manifests(zvm, kind, extra_route=i % 2 == 0)["proxy"], secrets,
                              f"{'add' if i % 2 == 0 else 'drop'} route /extra") for i in range(ROUNDS)]
    if ROUNDS % 2:   # end where it began, so the next proxy's deploy starts from the same routes
        route_steps.append(apply_step(first["proxy"], secrets, "drop route /extra"))
    rolling_steps = [apply_step(manifests(zvm, kind, zl=base + i + 2)["svc-zl"], secrets, f"deploy zl v{base + i + 2}")
                     if i % 5 == 0 else {"op": "restart", "name": "svc-zl", "label": "restart svc-zl"}
                     for i in range(ROUNDS)]
    # the live blue-green slot stays where the last step left it: the next deploy starts there
    targets = [Target(ZL), Target(BG)]
    results = {}
    with ClientLoad(zvm.https_port, targets, ca_file, clients=4, connections=2, post_every=3, pause=0.2,
                    max_seconds=1800) as load:
        wait_for(lambda: load.tallies.get("between") and load.tallies["between"].requests >= 20,
                 "the load is under way", 60)
        try:
            for operation, steps in (("switch", switch_steps), ("route change", route_steps),
                                     ("rolling restart", rolling_steps)):
                with load.phase(operation):
                    t0 = time.monotonic()
                    results[operation] = (run_steps(zvm, steps, timeout=1800), time.monotonic() - t0)
                    print(f"{kind} {operation}: " + ", ".join(f"{r['step']} {r['seconds']}s" for r in results[operation][0]))
        except BaseException:
            keep_journal(zvm, kind, started, load)
            raise
    load.verify_posts(lambda target: json.loads(https_get(zvm.https_port, target.host, "/posts", ca_file)[1]))
    if any(tally.lost for tally in load.tallies.values()):
        keep_journal(zvm, kind, started, load)

    for operation in OPERATIONS:
        steps, seconds = results[operation]
        tally = load.tallies[operation]
        row = figures(tally)
        TABLE.append((kind, operation, row))
        record(f"zero loss: {kind}, {len(steps)} x {operation} under load", seconds,
               f"{row['requests']} requests ({row['gets']} GET, {row['posts']} POST), {row['lost']} lost, "
               f"{row['retried']} retried, {row['duplicated']} duplicated, slowest {row['slowest']} s; "
               f"idle closes {row['idle closes']}, redelivered {row['redelivered']}, failures {row['failures']}")
    print_table()

    switched = [r for r in results["switch"][0]]
    assert all(r["stable_address_reaches"] == r["live"] for r in switched), switched
    assert len({r["live"] for r in switched}) == 2, "the switches moved between both slots"
    assert all("zlbg(blue-green)" in r["summary"] for r in switched if r["step"].startswith("deploy")), switched
    assert all("proxy(reload)" in r["summary"] for r in results["route change"][0]), results["route change"][0]
    assert all("zl(rolling)" in r["summary"] for r in results["rolling restart"][0]), results["rolling restart"][0]
    assert len(results["rolling restart"][0]) == ROUNDS
    for operation in OPERATIONS:
        tally = load.tallies[operation]
        assert tally.verified and tally.gets > 0 and tally.posts > 0, (operation, figures(tally))
        assert tally.lost == 0 and tally.duplicated == 0, (kind, operation, figures(tally))
    assert load.tallies["between"].lost == 0, figures(load.tallies["between"])


def print_table() -> None:
    lines = ["", "| proxy | operation | requests | lost | retried | duplicated | slowest (s) | idle closes |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {kind} | {op} | {r['requests']} | {r['lost']} | {r['retried']} | {r['duplicated']} | "
              f"{r['slowest']} | {r['idle closes']} |" for kind, op, r in TABLE]
    print("\n".join(lines))


def test_the_rootless_service_waited_for_its_restore_without_a_timeout(zvm):
    """Loose end (a), second half (tests/e2e/host_guards.py)."""
    check_the_slowed_restore(zvm)


def test_an_account_the_host_has_is_refused_one_it_lacks_is_not(zvm):
    """Loose end (b) (tests/e2e/host_guards.py)."""
    refused_accounts(zvm)


def test_secrets_quoted_back_by_the_real_validators_stay_hidden(zvm):
    """Loose end (c) (tests/e2e/host_guards.py)."""
    secrets_quoted_by_validators(zvm)
