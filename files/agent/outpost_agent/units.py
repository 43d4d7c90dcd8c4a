"""Systemd units: enable and start what a manifest lists, stop and disable what it drops,
daemon-reload the scopes whose unit files changed, in the system manager or a user's
(`systemctl --user -M USER@`).

Touches units only through systemctl; never stops a unit the manifest says not to (`stop: false`)
or one it only restarts (the host's own, such as ssh.service).
"""

import pwd

from .accounts import Accounts
from .base import AgentError, one_line
from .manifest import by_scope

SYSTEM_UNIT_DIRS = ("/etc/systemd/system/", "/usr/local/lib/systemd/system/",
                    "/usr/lib/systemd/system/", "/etc/containers/systemd/")
USER_UNIT_DIRS = ("/.config/systemd/user/", "/.config/containers/systemd/")
NO_ENABLE_STATES = ("enabled", "enabled-runtime", "static", "generated", "transient", "alias")
RUNNING_STATES = ("active", "activating", "reloading")


class Units(Accounts):
    """systemctl per scope: states, enable/start, stop/disable, daemon-reload."""

    def systemctl(self, scope, *args, check=True):
        argv = ["systemctl"]
        if scope != "system":
            user = scope.split(":", 1)[1]
            self.wait_user_manager(user)
            argv += ["--user", "-M", f"{user}@"]
        return self.run(argv + list(args), check=check)

    def unit_scope(self, host_path):
        """The systemd scope whose daemon-reload picks up host_path, or None."""
        if host_path.startswith(SYSTEM_UNIT_DIRS):
            return "system"
        for marker in USER_UNIT_DIRS:
            if marker in host_path:
                home = host_path.split(marker)[0]
                for pw in pwd.getpwall():
                    if pw.pw_dir == home:
                        return f"user:{pw.pw_name}"
        return None

    def unit_states(self, scope, units):
        """{unit: {LoadState, UnitFileState, ActiveState}} from one `systemctl show`."""
        _, _, out = self.systemctl(scope, "show", "--property=LoadState,UnitFileState,ActiveState",
                                   "--", *units)
        blocks = [dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
                  for block in out.strip().split("\n\n")]
        return {u: (blocks[i] if i < len(blocks) else {}) for i, u in enumerate(units)}

    def ensure_units(self, units):
        """Enable and start units; return (number of actions, {(scope, unit) started now}).
        `report` units start first, one at a time (see start_reported)."""
        reported = [u for u in units if u["report"]]
        if reported:
            actions, fresh = self.ensure_units([{**u, "start": False, "report": False} for u in reported])
            for u in reported:
                if u["start"] and self.start_reported(u["unit"]):
                    fresh.add(("system", u["unit"]))
                    actions += 1
            more, fresh_more = self.ensure_units([u for u in units if not u["report"]])
            return actions + more, fresh | fresh_more
        actions, fresh = 0, set()
        pairs = [(u["scope"], u["unit"]) for u in units]
        wanted = {(u["scope"], u["unit"]): u for u in units}
        for scope, names in by_scope(pairs):
            states = self.unit_states(scope, names)
            for name in names:
                u, state = wanted[(scope, name)], states[name]
                if u["enable"] and state.get("UnitFileState", "") not in NO_ENABLE_STATES:
                    code, output, _ = self.systemctl(scope, "enable", name, check=False)
                    if code == 0:
                        actions += 1
                        self.log(f"enabled {name} ({scope})")
                    elif "transient or generated" not in output:
                        raise AgentError(f"`systemctl enable {name}` ({scope}) failed: {one_line(output)}")
            to_start = [n for n in names if wanted[(scope, n)]["start"]
                        and states[n].get("ActiveState") not in RUNNING_STATES]
            if to_start:
                self.systemctl(scope, "start", *to_start)
                fresh.update((scope, n) for n in to_start)
                actions += len(to_start)
                self.log(f"started {' '.join(to_start)} ({scope})")
        return actions, fresh

    def start_reported(self, unit):
        """Start a `report` unit unless it is running (or, a oneshot, has run) already; wait for
        it (a oneshot's start returns when it has finished), print what it logged during this run
        and raise with that when it failed. Its journal is the unit's own output: the units that
        ask for this never log secrets. Return whether it was started now."""
        state = self.unit_states("system", [unit])[unit]
        if state.get("ActiveState") in RUNNING_STATES:
            return False
        code, output, _ = self.systemctl("system", "start", unit, check=False)
        _, _, invocation = self.systemctl("system", "show", "--property=InvocationID", "--value", "--", unit,
                                          check=False)
        lines = []
        if invocation.strip():
            self.run(["journalctl", "--sync"], check=False)
            _, _, journal = self.run(["journalctl", "--no-pager", "--quiet", "--output=cat",
                                      f"_SYSTEMD_INVOCATION_ID={invocation.strip()}"], check=False)
            lines = [line for line in journal.splitlines() if line.strip()]
        for line in lines:
            self.log(f"{unit}: {line}")
        if code != 0:
            said = " / ".join(lines[-20:]) or one_line(output)
            raise AgentError(f"{unit} failed: {one_line(said)}")
        self.log(f"started {unit} (system)")
        return True

    def stop_units(self, pairs):
        """Stop and disable units (skipping unknown ones and dead user managers)."""
        for scope, names in by_scope(pairs):
            if scope != "system" and not self.user_manager_running(scope.split(":", 1)[1]):
                continue
            states = self.unit_states(scope, names)
            known = [n for n in names if states[n].get("LoadState") not in (None, "not-found")]
            if known:
                self.systemctl(scope, "stop", *known)
                self.log(f"stopped {' '.join(known)} ({scope})")
            for n in known:
                if states[n].get("UnitFileState") in ("enabled", "enabled-runtime"):
                    self.systemctl(scope, "disable", n)

    def daemon_reload(self, paths, wait=True):
        """daemon-reload every scope whose unit files are among paths (user managers: wait for
        them to come up, or with wait=False skip those that are not running)."""
        scopes = dict.fromkeys(s for p in sorted(paths) if (s := self.unit_scope(p)))
        for scope in scopes:
            if wait or scope == "system" or self.user_manager_running(scope.split(":", 1)[1]):
                self.systemctl(scope, "daemon-reload")
                self.log(f"daemon-reload ({scope})")

    def scope_states(self, pairs):
        """{(scope, unit): systemctl show properties}; a user scope whose manager is down → {}."""
        states = {}
        for scope, names in by_scope(pairs):
            if scope != "system" and not self.user_manager_running(scope.split(":", 1)[1]):
                states.update({(scope, n): {"ActiveState": "manager-down"} for n in names})
                continue
            states.update({(scope, n): s for n, s in self.unit_states(scope, names).items()})
        return states

    def reload_host_units(self, manifest, stopped, removed_paths):
        """Reload the host's own units whose settings a removed file changed (ssh.service after
        the sshd drop-in goes), so the host is back to its own configuration; best effort."""
        removed, stopped = set(removed_paths), set(stopped)
        for g in manifest["restart"]:
            if g["strategy"] == "blue-green" or not removed.intersection(g.get("when") or []):
                continue
            units = [i["unit"] for i in g["instances"] if (g["scope"], i["unit"]) not in stopped]
            if units:
                code, output, _ = self.systemctl(g["scope"], "try-reload-or-restart", *units, check=False)
                self.log(f"reloaded {', '.join(units)}" if code == 0
                         else f"warning: reloading {', '.join(units)} failed: {one_line(output)}")
