"""Operate what runs: status, report (units, replica health, version), drift (and its repair),
rollback to the previous kept version, and the units' journal.

Read-only but for repair and rollback, which re-apply a kept manifest through the apply path.
"""

import contextlib
import grp
import hashlib
import json
import os
import pwd
import select
import socket
import stat
import subprocess
import sys
import threading
import time

from .apply import Applier
from .base import AgentError
from .health import probe
from .manifest import load_manifest, mask, owned_units
from .units import NO_ENABLE_STATES


def stop_on_hangup(fd, proc):
    """End PROC (a `journalctl --follow`) when whoever reads FD went away: the SSH session of
    `logs --follow` closed. Without a tty sshd sends no SIGHUP, and a quiet journal would keep the
    agent and journalctl waiting for a line to fail on; the hangup shows on FD at once."""
    watch = select.poll()
    watch.register(fd, 0)          # POLLERR / POLLHUP are always reported
    while proc.poll() is None:
        if watch.poll(1000):
            proc.terminate()
            return


def name_of(lookup, ident):
    """A user or group name from its id (the number as text when it has none)."""
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


class Operate(Applier):
    """The day-two subcommands."""

    def status(self):
        lines = []
        for st in self.other_states(None):
            m = st["manifest"]
            lines.append(f"{st['name']}: token {st['token'][:12]}, {len(m['files'])} files, "
                         f"units: {', '.join(u for _, u in owned_units(m)) or 'none'}, "
                         f"users: {', '.join(u['name'] for u in m['users']) or 'none'}"
                         + (f", pending restarts: {', '.join(st['pending'])}" if st.get("pending") else ""))
            for g in m["restart"]:
                if g["strategy"] == "blue-green":
                    live = (self.load_json(self.bluegreen_file(g["group"])) or {}).get("live")
                    lines.append(f"  {g['group']}: live slot {live or 'none yet'}")
        print("\n".join(lines) or "no stored manifests", flush=True)
        return lines

    def reapply(self, op, name, kept):
        """Apply a kept full manifest through the normal apply path, logged as OP."""
        manifest = load_manifest(kept["manifest"], name)
        self.learn_secrets(manifest["secret_values"])
        with self.journaled(op, name, kept["token"]) as result:
            result["line"] = self.apply_locked(name, kept["token"], manifest)
        self.keep_applied(name, kept["token"], kept["manifest"])
        return result["line"]

    def repair(self, name):
        """Put manifest NAME back as it was last applied (drift repair)."""
        with self.locked():
            return self.repair_locked(name)

    def repair_locked(self, name):
        state, kept = self.load_state(name), self.load_json(self.kept_path("applied", name))
        if state is None:
            raise AgentError(f"no stored manifest {name}: nothing to repair")
        if not kept or kept.get("token") != state["token"] \
                or mask(load_manifest(kept["manifest"], name)) != state["manifest"]:
            raise AgentError(f"the last applied version of {name} is not kept here (applied by an "
                             "older agent, or its last apply failed): re-apply it with pulumi up")
        return self.reapply("repair", name, kept)

    def rollback(self, name):
        """Re-apply the version of NAME applied before the current one, with its own restart
        plan (rolling or blue-green, health-checked, stopping at the first unhealthy instance)."""
        with self.locked():
            kept = self.load_json(self.kept_path("previous", name))
            if not kept:
                raise AgentError(f"no previous version of {name} is kept on this host: nothing to roll back to")
            current = (self.load_state(name) or {}).get("token")
            line = self.reapply("rollback", name, kept)
            # The stack's resource still holds CURRENT: its delete must still remove NAME.
            self.save_json(self.state_path(name), {**self.load_state(name), "rolled_back_from": current})
            return line

    def version_on_disk(self, manifest):
        """What a manifest runs, as on disk now: `tag X` from a TAG= line of one of its .env files
        (the image tag a container unit reads), else the digest of its first artifact under
        /opt or /srv, else None."""
        for f in manifest["files"]:
            if f["path"].endswith(".env"):
                try:
                    with open(self.path(f["path"]), encoding="utf-8", errors="replace") as fh:
                        for line in fh:
                            if line.startswith("TAG="):
                                return "tag " + line[4:].strip()
                except OSError:
                    continue
        for f in manifest["files"]:
            if f["path"].startswith(("/opt/", "/srv/")):
                digest = self.disk_digest(f["path"])
                if digest:
                    return "sha256:" + digest[:12]
        return None

    def disk_digest(self, host_path):
        try:
            digest = hashlib.sha256()
            with open(self.path(host_path), "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
            return digest.hexdigest()
        except OSError:
            return None

    def report(self):
        """Per stored manifest: units and their states, each replica's health (probed with the
        group's own health check, once), the version on disk, the last log line, the token."""
        entries, out = self.log_entries(), []
        for st in self.other_states(None):
            m = st["manifest"]
            wanted = {(u["scope"], u["unit"]): u for u in m["units"]}
            pairs = list(dict.fromkeys(list(wanted) + owned_units(m)))
            states = self.scope_states(pairs)
            units = [{"unit": u, "scope": s, "active": states[(s, u)].get("ActiveState", "unknown"),
                      "enabled": states[(s, u)].get("UnitFileState", ""),
                      "must_run": bool(wanted.get((s, u), {}).get("start"))} for s, u in pairs]
            replicas = []
            for g in m["restart"]:
                for inst in g["instances"]:
                    if not inst.get("health"):
                        continue
                    ok, last = probe(inst["health"], g["health"]["timeout"])
                    last = self.redact(last)
                    replicas.append({"group": g["group"], "unit": inst["unit"], "healthy": ok,
                                     "response": last[:80] if not ok else last.split(":", 1)[0]})
            last = next((e for e in reversed(entries) if e["name"] == st["name"]), None)
            if last is None:
                mtime = os.stat(self.state_file(st["name"])).st_mtime
                last = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime)), "op": "apply",
                        "outcome": "ok (from the state file's time)"}
            out.append({"name": st["name"], "token": st["token"], "pending": st.get("pending", []),
                        "units": units, "replicas": replicas, "version": self.version_on_disk(m),
                        "last": last, "rollback": bool(self.load_json(self.kept_path("previous", st["name"])))})
        return {"host": socket.gethostname(), "manifests": out}

    def drift_of(self, st):
        """How the disk differs from stored manifest ST: changed/missing files (digest, mode,
        owner, group), extra files in directories the agent created for it, units not enabled."""
        m, found = st["manifest"], []
        for f in m["files"]:
            try:
                s = os.lstat(self.path(f["path"]))
            except FileNotFoundError:
                found.append({"path": f["path"], "what": "missing"})
                continue
            what = []
            if not stat.S_ISREG(s.st_mode):
                what.append("not a regular file")
            else:
                if self.disk_digest(f["path"]) != f["sha256"]:
                    what.append("content")
                if stat.S_IMODE(s.st_mode) != int(f["mode"], 8):
                    what.append(f"mode {stat.S_IMODE(s.st_mode):04o} (wants {f['mode']})")
                owner = (name_of(pwd.getpwuid, s.st_uid), name_of(grp.getgrgid, s.st_gid))
                if owner != (f["owner"], f["group"]):
                    what.append(f"owner {owner[0]}:{owner[1]} (wants {f['owner']}:{f['group']})")
            if what:
                found.append({"path": f["path"], "what": "changed: " + ", ".join(what)})
        known = {f["path"] for s in self.other_states(None) for f in s["manifest"]["files"]}
        managed = {os.path.dirname(f["path"]) for f in m["files"]} & set(st.get("created_dirs", []))
        for d in sorted(managed):
            try:
                names = sorted(os.listdir(self.path(d)))
            except OSError:
                continue
            for entry in names:
                p = f"{d}/{entry}"
                if p not in known and not entry.startswith(".outpost-stage-") \
                        and not os.path.isdir(self.path(p)):
                    found.append({"path": p, "what": "extra"})
        wanted = [(u["scope"], u["unit"]) for u in m["units"] if u["enable"]]
        states = self.scope_states(wanted)
        for scope, unit in wanted:
            state = states[(scope, unit)].get("UnitFileState")
            if state is not None and state not in NO_ENABLE_STATES:
                found.append({"unit": unit, "scope": scope, "what": f"not enabled ({state or 'unknown'})"})
        return found

    def drift(self, repair=False):
        """Every stored manifest's drift; with repair, re-apply each drifted one as last applied
        and check again."""
        with self.locked():
            result = []
            for st in self.other_states(None):
                found, line, error = self.drift_of(st), None, None
                if found and repair:
                    try:
                        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON alone
                            line = self.repair_locked(st["name"])
                        after = self.drift_of(self.load_state(st["name"]))
                    except AgentError as e:
                        error, after = str(e), None
                    result.append({"name": st["name"], "drift": found, "repaired": line,
                                   "error": error, "after": after})
                else:
                    result.append({"name": st["name"], "drift": found})
            return {"host": socket.gethostname(), "manifests": result}

    def unit_logs(self, name, since=None, lines=200, follow=False):
        """The journal of stored manifest NAME's units (system or user scope as they are), as
        JSON lines `{time, unit, message}` on stdout; journalctl runs as root."""
        st = self.load_state(name)
        if st is None:
            raise AgentError(f"no stored manifest {name} on this host")
        m = st["manifest"]
        pairs = list(dict.fromkeys([(u["scope"], u["unit"]) for u in m["units"]] + owned_units(m)))
        argv = ["journalctl", "--output=json", "--no-pager", "-n", str(int(lines))]
        if since:
            argv += ["--since", since]
        if follow:
            argv.append("--follow")
        for scope, unit in pairs:   # the unit's own output, and its manager's lines about it
            if scope == "system":
                argv += [f"_SYSTEMD_UNIT={unit}", "+", f"UNIT={unit}", "_PID=1", "+"]
            else:
                uid = self.ids(scope.split(":", 1)[1], "root", scope)[0]
                argv += [f"_SYSTEMD_USER_UNIT={unit}", f"_UID={uid}", "+",
                         f"USER_UNIT={unit}", f"_UID={uid}", "+"]
        argv = argv[:-1] if pairs else argv
        if not pairs:
            return 0
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                errors="replace")
        if follow:
            threading.Thread(target=stop_on_hangup, args=(sys.stdout.fileno(), proc), daemon=True).start()
        for raw in proc.stdout:
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            unit = rec.get("USER_UNIT") or rec.get("_SYSTEMD_USER_UNIT") or rec.get("UNIT") \
                or rec.get("_SYSTEMD_UNIT") or "?"
            message = rec.get("MESSAGE")
            if isinstance(message, list):
                message = bytes(message).decode("utf-8", "replace")
            if isinstance(message, str):
                message = self.redact(message)
            print(json.dumps({"time": int(rec.get("__REALTIME_TIMESTAMP", 0)), "unit": unit,
                              "message": message}), flush=True)
        return proc.wait()
