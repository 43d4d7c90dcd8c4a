"""Restarts and health: a manifest's restart plan (restart, reload, rolling with drains,
blue-green with the proxy's switch file), each instance health-checked, and the rollback of a
group that fails to the files it had before.

A rolling restart drains a replica before it stops it, so that no request is sent to it as it
goes: through haproxy's admin socket (`kind: haproxy`), or, for proxies without a runtime API
(Caddy, nginx), in the kernel (`kind: port`, table `inet outpost_drain`): every new connection a
non-root process (the proxy) opens to 127.0.0.1:PORT is sent to a sibling replica's port `to`
instead (DNAT in nat/output); connections already open stay where they are (conntrack). The
proxy sees no error, so nothing needs a retry (Caddy 2.6 cannot retry a request with a body: Go's
transport closes the body of a failed attempt), and its health checks, sent on to the sibling,
keep the replica in rotation. The agent waits until nothing is connected to the port or queued in
its accept queue, restarts it (its own health checks, as root, reach the replica itself), and
lifts the redirect. Without a sibling (one replica) new connections are refused instead. The
port carries a timeout (DRAIN_TTL) so that an agent killed before lifting the drain does not keep
the replica out for good.

The table, its chains and their rules stay; a drain only adds the port to the map `redirects` (or
the set `refused`) and lifting it takes the port out. Removing a nat chain would take the kernel's
NAT binding away from connections redirected a moment before, still open or in TIME_WAIT: their
next packets reach the restarted replica untranslated and the request hangs (measured by
bench/dnat_churn.py: 29 of 67,802 connections failed when the table went with each drain, 0 of
81,615 with the port taken out of the map).

Touches the units of the restart groups, the switch files, /var/lib/outpost/bluegreen/ and the
nftables table `inet outpost_drain`.
"""

import shlex
import stat
import time

from .base import STATE_DIR, AgentError, one_line
from .fs import uid_of
from .health import haproxy_command, haproxy_sessions, port_connections, probe
from .manifest import summary
from .units import Units

SETTLE_CHECKS = 2          # rolling: proxy health-check intervals to wait between instances
DRAIN_WAIT = 30           # seconds to wait for a drained server's sessions to end
DRAIN_TABLE = "inet outpost_drain"   # nftables: draining ports sent on (map redirects) or refused (set refused)
DRAIN_TTL = 600           # seconds a drain lasts if the agent dies before lifting it
DRAIN_RULES = f"""table {DRAIN_TABLE} {{
	map redirects {{ type inet_service : inet_service; flags timeout; }}
	set refused {{ type inet_service; flags timeout; }}
	chain nat_output {{ type nat hook output priority -100; policy accept; }}
	chain filter_output {{ type filter hook output priority filter; policy accept; }}
}}
flush chain {DRAIN_TABLE} nat_output
add rule {DRAIN_TABLE} nat_output meta skuid != 0 ip daddr 127.0.0.1 meta l4proto tcp dnat ip to 127.0.0.1 : tcp dport map @redirects
flush chain {DRAIN_TABLE} filter_output
add rule {DRAIN_TABLE} filter_output meta skuid != 0 ip daddr 127.0.0.1 tcp dport @refused ct state new reject with tcp reset
add rule {DRAIN_TABLE} filter_output meta skuid != 0 ip6 daddr ::1 tcp dport @refused ct state new reject with tcp reset
"""
NFT = "/usr/sbin/nft"


class Restarts(Units):
    """Run restart groups; switch blue-green slots; put a failed group's files back."""

    def wait_healthy(self, group, inst):
        """Poll an instance until healthy (bounded); return None, or the last response if not."""
        h, last = group["health"], "not checked"
        for attempt in range(int(h["retries"])):
            if attempt:
                time.sleep(h["interval"])
            if inst["health"]:
                ok, last = probe(inst["health"], h["timeout"])
            else:
                state = self.systemctl(group["scope"], "is-active", inst["unit"], check=False)[2].strip()
                ok, last = state == "active", f"systemctl is-active: {state}"
            if ok:
                return None
        return self.redact(last)   # a response body may quote what the service was given

    def drain(self, d):
        if d["kind"] == "port":
            return self.drain_port(int(d["port"]), d.get("to"))
        for state in ("drain", "maint"):
            answer = self.redact(haproxy_command(d["socket"], f"set server {d['backend']}/{d['server']} state {state}"))
            if answer.strip():
                raise AgentError(f"haproxy refused to {state} {d['backend']}/{d['server']}: {one_line(answer)}")
        deadline = time.monotonic() + DRAIN_WAIT
        while (left := haproxy_sessions(d["socket"], d["backend"], d["server"])) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        self.log(f"drained {d['backend']}/{d['server']} at haproxy ({left} sessions left)")

    def drain_port(self, port, to=None):
        """Send new connections to 127.0.0.1:PORT from anyone but root to 127.0.0.1:TO (refuse
        them without TO), then wait until none is left on PORT."""
        self.run([NFT, "-f", "-"], input=DRAIN_RULES)   # declared (again): a rule replaced, no chain removed
        self.lift_port(port)                           # a drain an earlier, killed agent left
        entry = f"{int(port)} timeout {DRAIN_TTL}s" + (f" : {int(to)}" if to else "")
        self.run([NFT, f"add element {DRAIN_TABLE} {'redirects' if to else 'refused'} {{ {entry} }}"])
        deadline = time.monotonic() + DRAIN_WAIT
        while (left := port_connections(port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        how = f"sent to 127.0.0.1:{int(to)}" if to else "refused"
        self.log(f"drained 127.0.0.1:{port}: new connections {how} ({left} connections left)")

    def lift_port(self, port):
        """Take PORT out of the drain map and set; one it is not in (or no table yet) is fine."""
        for name in ("redirects", "refused"):
            code, output, _ = self.run([NFT, f"delete element {DRAIN_TABLE} {name} {{ {int(port)} }}"], check=False)
            if code != 0 and "No such file or directory" not in output:
                raise AgentError(f"lifting the drain of 127.0.0.1:{port} failed: {one_line(output)}")

    def undrain(self, d):
        if d["kind"] == "port":
            self.lift_port(d["port"])
            self.log(f"127.0.0.1:{d['port']} takes new connections again")
            return
        answer = self.redact(haproxy_command(d["socket"], f"set server {d['backend']}/{d['server']} state ready"))
        if answer.strip():
            raise AgentError(f"haproxy refused to ready {d['backend']}/{d['server']}: {one_line(answer)}")
        self.log(f"{d['backend']}/{d['server']} is ready again at haproxy")

    def rolling(self, group, fresh, touched):
        """Restart instances one at a time; stop at the first that does not become healthy."""
        acted = False
        for i, inst in enumerate(group["instances"]):
            drain = inst["drain"] if (group["scope"], inst["unit"]) not in fresh else None
            if drain:
                self.drain(drain)
            touched.append(inst)
            last = self.restart_and_check(group, inst, fresh)
            acted = acted or (group["scope"], inst["unit"]) not in fresh
            if last is not None:
                rest = [x["unit"] for x in group["instances"][i + 1:]]
                raise AgentError(
                    f"rolling restart of {group['group']} stopped: {inst['unit']} did not become healthy "
                    f"after {group['health']['retries']} checks (last response: {last}); "
                    + ("it stays drained at the proxy; " if drain else "")
                    + (f"{', '.join(rest)} were left untouched and keep serving" if rest
                       else "it was the last instance"))
            if drain:
                self.undrain(drain)
            if i + 1 < len(group["instances"]) and (group["scope"], inst["unit"]) not in fresh:
                # Let the proxy's own health check see this instance healthy again before the
                # next one goes down: otherwise both can be out of rotation for a moment.
                time.sleep(SETTLE_CHECKS * group["health"]["interval"])
        return acted

    def restart_and_check(self, group, inst, fresh):
        """Restart one instance (unless it was just started); None when healthy, else why not."""
        if (group["scope"], inst["unit"]) not in fresh:
            try:
                self.systemctl(group["scope"], "restart", inst["unit"])
            except AgentError as e:
                return str(e)
            self.log(f"restarted {inst['unit']}")
        return self.wait_healthy(group, inst)

    def bluegreen_file(self, group_name):
        return f"{STATE_DIR}/bluegreen/{group_name}.json"

    def blue_green(self, group, fresh, manifest_name, touched):
        """Restart the idle slot, health-check it, then switch the proxy to it."""
        state = self.load_json(self.bluegreen_file(group["group"])) or {}
        a, b = group["instances"]
        target = b if state.get("live") == a["unit"] else a
        touched.append(target)
        last = self.restart_and_check(group, target, fresh)
        if last is not None:
            raise AgentError(
                f"blue-green deploy of {group['group']} stopped: {target['unit']} did not become healthy "
                f"after {group['health']['retries']} checks (last response: {last}); "
                f"the proxy still routes to {state.get('live') or 'nothing yet'}")
        self.switch_to(group, target, manifest_name)
        return True

    def switch_to(self, group, inst, manifest_name):
        sw = group["switch"]
        content = sw["template"].replace("{port}", str(inst.get("port"))).replace("{unit}", inst["unit"])
        uid, gid = self.ids(sw["owner"], sw["group"], sw["path"])
        before = self.read_file(sw["path"], uid)
        self.write_validated(sw, content.encode(), uid, gid)
        code, output, _ = self.run(sw["reload"], check=False)
        if code != 0:
            if before is None:
                self.remove_entry(sw["path"])
            else:
                self.write_validated({**sw, "validate": None}, before, uid, gid)
            raise AgentError(f"switching {group['group']} to {inst['unit']} failed: "
                             f"`{shlex.join(sw['reload'])}` exited {code}: {one_line(output)}; "
                             f"{sw['path']} was restored")
        self.save_json(self.bluegreen_file(group["group"]),
                       {"live": inst["unit"], "port": inst.get("port"), "manifest": manifest_name})
        self.log(f"{group['group']}: proxy now routes to {inst['unit']}")

    def run_group(self, group, fresh, manifest_name, touched=None):
        """Run one restart group; return True when something was restarted or switched. The
        instances that now run (or may run) the new files are appended to `touched`."""
        touched = [] if touched is None else touched
        strategy, units = group["strategy"], [i["unit"] for i in group["instances"]
                                              if (group["scope"], i["unit"]) not in fresh]
        if strategy == "rolling":
            return self.rolling(group, fresh, touched)
        if strategy == "blue-green":
            return self.blue_green(group, fresh, manifest_name, touched)
        touched.extend(group["instances"])
        if units:
            # reload: try-reload-or-restart leaves a stopped unit stopped (a proxy whose
            # certificates arrive before its first start) instead of failing.
            self.systemctl(group["scope"], "restart" if strategy == "restart" else "try-reload-or-restart", *units)
            self.log(f"{strategy}ed {' '.join(units)}")
        return bool(units)

    def run_restarts(self, name, todo, fresh, state, before=None):
        """Run the restart groups in order; after each, store the rest as pending. A group that
        fails gets its previous files back (`before`: path → what was on disk before this
        apply) and the instances it touched restarted or reloaded with them; the error says so."""
        restarted = []
        for i, group in enumerate(todo):
            touched = []
            try:
                if self.run_group(group, fresh, name, touched):
                    restarted.append((group["group"], group["strategy"]))
            except AgentError as e:
                raise AgentError(f"{e}{self.revert_group(group, touched, before or {})}") from None
            state["pending"] = [g["group"] for g in todo[i + 1:]]
            self.save_state(name, state)
        return restarted

    def snapshot(self, files):
        """What is on disk now at each file's path: (bytes or None, mode, uid, gid); for put_back."""
        taken = {}
        for f in files:
            path, uid = f["path"], uid_of(f["owner"])
            d, _, st = self.entry(path, uid)
            if d is not None:
                d.close()
            taken[path] = (None, 0, 0, 0) if st is None or not stat.S_ISREG(st.st_mode) else \
                (self.read_file(path, uid), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        return taken

    def put_back(self, path, previous):
        data, mode, uid, gid = previous
        if data is None:
            self.remove_entry(path)
            return
        staged = self.stage(path, data, mode, uid, gid)
        try:
            self.commit(staged)
        finally:
            self.discard([staged])
        self.log(f"put back the previous {path}")

    def revert_group(self, group, touched, before):
        """After a failed restart, reload or health check: put the group's previous files back
        and restart (reload) the instances that may run the new ones, so the whole service is on
        the old version; return the clause the error gets. Best effort: it never raises."""
        paths = [p for p in group["when"] if p in before]
        if not paths:
            return ""
        try:
            for p in paths:
                self.put_back(p, before[p])
            self.daemon_reload([p for p in paths if self.unit_scope(p)])
            problems = []
            if group["strategy"] == "reload":
                code, output, _ = self.systemctl(group["scope"], "try-reload-or-restart",
                                                 *[i["unit"] for i in touched], check=False)
                if code != 0:
                    problems.append(f"reloading again failed too: {one_line(output, 300)}")
            else:
                for inst in touched:
                    code, output, _ = self.systemctl(group["scope"], "restart", inst["unit"], check=False)
                    last = self.wait_healthy(group, inst) if code == 0 else one_line(output, 300)
                    if last is not None:
                        problems.append(f"{inst['unit']} is not healthy on it either ({last})")
                    elif inst.get("drain") and group["strategy"] == "rolling":
                        self.undrain(inst["drain"])
        except AgentError as e:
            problems = [str(e)]
        verb = "reloaded" if group["strategy"] == "reload" else "restarted"
        units = ", ".join(i["unit"] for i in touched) or "nothing"
        return (f"; the previous {', '.join(paths)} {'was' if len(paths) == 1 else 'were'} put back and "
                f"{units} {verb} with {'it' if len(paths) == 1 else 'them'}"
                + (f", but {'; '.join(problems)}" if problems else ""))

    def forget_group(self, group):
        """Remove what a blue-green group left behind: its switch file and its state."""
        if group["strategy"] != "blue-green":
            return 0
        self.remove_entry(self.bluegreen_file(group["group"]))
        return int(self.remove_entry(group["switch"]["path"]))

    def restart(self, name):
        """Run stored manifest NAME's whole restart plan now (a job's after_success)."""
        with self.locked():
            state = self.load_state(name)
            if state is None:
                raise AgentError(f"no stored manifest {name}: nothing to restart")
            restarted = []
            for group in state["manifest"]["restart"]:
                if self.run_group(group, set(), name):
                    restarted.append((group["group"], group["strategy"]))
            line = summary(name, 0, 0, restarted)
            self.say(line)
            return line

    def switch(self, group_name):
        """Flip a blue-green group to its other slot after health-checking that slot."""
        with self.locked():
            for st in self.other_states(None):
                for g in st["manifest"]["restart"]:
                    if g["group"] == group_name and g["strategy"] == "blue-green":
                        return self.switch_group(g, st["name"])
        raise AgentError(f"no stored manifest has a blue-green group {group_name}")

    def switch_group(self, group, manifest_name):
        state = self.load_json(self.bluegreen_file(group["group"])) or {}
        a, b = group["instances"]
        target = b if state.get("live") == a["unit"] else a
        last = self.wait_healthy(group, target)
        if last is not None:
            raise AgentError(f"not switching {group['group']}: {target['unit']} is not healthy "
                             f"(last response: {last}); the proxy still routes to {state.get('live')}")
        self.switch_to(group, target, manifest_name)
        line = f"outpost switch {group['group']}: live slot is now {target['unit']}"
        self.say(line)
        return line
