"""A rolling restart drains a replica in the kernel when the proxy has no runtime API to do it
(Caddy, nginx): `drain: {kind: port, port: N, to: M}` (outpost_agent/restarts.py `drain_port`).

Offline: the agent's nft script and the order of its steps (declare the table, put the port in
its map or set: new connections sent to the sibling, or refused without one; wait until nothing
is connected; restart; take the port out again); what
counts as connected in /proc/net/tcp; the manifest check. The nft scripts themselves run in
tests/validators/test_port_drain_nft.py, in a private network namespace."""

from __future__ import annotations

import json

import pytest

from outpost_agent import health, restarts
from outpost_agent.base import AgentError
from outpost_agent.manifest import load_manifest
from test_agent_unit import apply, host, manifest, rolling_manifest, servers  # noqa: F401 (fixtures)

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def row(local_port: int, state: str, rx_queue: int = 0, remote_port: int = 40000) -> str:
    return (f"   0: 0100007F:{local_port:04X} 0100007F:{remote_port:04X} {state} 00000000:{rx_queue:08X} "
            "00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n")


def test_connected_means_established_half_open_or_queued(tmp_path):
    tcp, tcp6 = tmp_path / "tcp", tmp_path / "tcp6"
    tcp.write_text(HEADER + row(8100, "0A", rx_queue=2) + row(8100, "01") + row(8100, "03") + row(8100, "06")
                   + row(8101, "01") + row(40000, "01", remote_port=8100))
    tcp6.write_text(HEADER)
    # queued 2 + established 1 + half-open 1; TIME_WAIT, another port and the client side don't count
    assert health.port_connections(8100, (str(tcp), str(tcp6), str(tmp_path / "missing"))) == 4
    tcp.write_text(HEADER + row(8100, "0A"))
    assert health.port_connections(8100, (str(tcp),)) == 0


@pytest.mark.parametrize("to", [8001, None])
def test_rolling_drains_waits_restarts_and_lifts_the_drain(host, servers, monkeypatch, to):
    agent, fake, _ = host
    seen = []                                           # what the host looked like when each step ran
    left = iter([3, 1, 0])
    monkeypatch.setattr(restarts, "port_connections", lambda port: seen.append(("connections", port)) or next(left))
    monkeypatch.setattr(restarts.time, "sleep", lambda s: None)
    original = fake.__call__

    def recording(argv, **kwargs):
        if argv[0] == "/usr/sbin/nft":
            seen.append(("nft", " ".join(argv[1:]), kwargs.get("input")))
            return 0, "", ""
        if argv[0] == "systemctl" and "restart" in argv:
            seen.append(("restart", argv[-1]))
        return original(argv, **kwargs)

    agent.runner = recording
    doc = rolling_manifest([servers().url()])
    doc["restart"][0]["instances"][0]["drain"] = {"kind": "port", "port": 8000, **({"to": to} if to else {})}
    apply(agent, doc)
    seen.clear()
    doc["files"][0]["content"] = "v2"
    assert apply(agent, doc).endswith("restarted: web(rolling)")
    steps = [s[0] if s[0] != "nft" else s[1] for s in seen]
    put = f"add element inet outpost_drain {'redirects' if to else 'refused'} {{ 8000 timeout 600s{' : 8001' if to else ''} }}"
    lift = ["delete element inet outpost_drain redirects { 8000 }", "delete element inet outpost_drain refused { 8000 }"]
    assert steps == ["-f -", *lift, put, "connections", "connections", "connections", "restart", *lift]
    script = seen[0][2]
    # the table is declared, never deleted: removing a nat chain would strand redirected connections
    assert script.startswith("table inet outpost_drain {\n") and "delete table" not in script
    assert "\tchain nat_output { type nat hook output priority -100; policy accept; }" in script
    assert ("add rule inet outpost_drain nat_output meta skuid != 0 ip daddr 127.0.0.1 meta l4proto tcp "
            "dnat ip to 127.0.0.1 : tcp dport map @redirects") in script
    for match in ("ip daddr 127.0.0.1", "ip6 daddr ::1"):   # a lone replica: refused, passed on as an error
        assert (f"add rule inet outpost_drain filter_output meta skuid != 0 {match} tcp dport @refused "
                "ct state new reject with tcp reset") in script
    how = "sent to 127.0.0.1:8001" if to else "refused"
    assert f"drained 127.0.0.1:8000: new connections {how} (0 connections left)" in agent.log_to.getvalue()


def test_the_wait_is_bounded(host, servers, monkeypatch):
    agent, fake, _ = host
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(restarts, "port_connections", lambda port: 5)
    monkeypatch.setattr(restarts.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(restarts.time, "sleep", lambda s: None)
    original = fake.__call__
    agent.runner = lambda argv, **kw: (0, "", "") if argv[0] == "/usr/sbin/nft" else original(argv, **kw)
    doc = rolling_manifest([servers().url()])
    doc["restart"][0]["instances"][0]["drain"] = {"kind": "port", "port": 8000, "to": 8001}
    apply(agent, doc)
    doc["files"][0]["content"] = "v2"
    assert apply(agent, doc).endswith("restarted: web(rolling)")
    assert "drained 127.0.0.1:8000: new connections sent to 127.0.0.1:8001 (5 connections left)" in agent.log_to.getvalue()


def test_lifting_a_drain_that_is_gone_already_is_fine_another_failure_is_not(host):
    agent, fake, _ = host
    agent.runner = lambda argv, **kw: (1, "Error: Could not process rule: No such file or directory", "")
    agent.undrain({"kind": "port", "port": 8000})
    agent.runner = lambda argv, **kw: (1, "Error: Could not process rule: Operation not permitted", "")
    with pytest.raises(AgentError, match="lifting the drain of 127.0.0.1:8000 failed"):
        agent.undrain({"kind": "port", "port": 8000})


@pytest.mark.parametrize("drain, ok", [({"kind": "port", "port": 8000}, True), ({"kind": "port", "port": 8000, "to": 8001}, True),
                                       ({"kind": "port", "port": 0}, False), ({"kind": "port", "port": 8000, "to": 0}, False),
                                       ({"kind": "port", "port": 8000, "to": "8001"}, False),
                                       ({"kind": "port", "port": 8000, "via": 1}, False),
                                       ({"kind": "port", "port": "8000"}, False), ({"kind": "port", "port": True}, False),
                                       ({"kind": "port"}, False), ({"kind": "firewall", "port": 8000}, False)])
def test_the_manifest_check_knows_the_port_drain(drain, ok):
    doc = manifest(files=[{"path": "/etc/x", "content": "x"}],
                   restart=[{"group": "web", "strategy": "rolling", "when": ["/etc/x"],
                             "instances": [{"unit": "web@8000.service", "drain": drain}]}])
    if ok:
        load_manifest(json.dumps(doc), "svc-demo")
    else:
        with pytest.raises(AgentError, match=r"drain must be \{kind: haproxy, socket, backend, server\} or \{kind: port, port, to\}"):
            load_manifest(json.dumps(doc), "svc-demo")
