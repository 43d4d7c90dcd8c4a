"""apply-host and remove-host: a host's whole set of manifests (its bundle) from one Command.

outpost ships one `remote.Command` per host whose stdin holds every manifest of the host with its
token (components/shipping.py). `apply_host` applies, in the bundle's order, each manifest whose
token differs from the stored one, then removes (in reverse order) the manifests the previous bundle
had and this one drops; `remove_host` removes every stored manifest, the base setup last. The
bundle's manifest names are kept in `host.json`, updated after each step, so a run cut off anywhere
converges on the next; and a per-manifest `remove NAME TOKEN` (the delete of a Command from before
bundles, which the engine runs after the bundle's Command took over) leaves a bundle's manifest alone.

Above apply (it applies and removes through it), below operate.
"""

import contextlib

from .apply import Applier
from .base import STATE_DIR, UPLOAD_PATH, AgentError
from .manifest import load_bundle, load_manifest

HOST_STATE = f"{STATE_DIR}/host.json"


class Bundles(Applier):
    """Apply and remove a host's bundle, one manifest at a time, under one host lock."""

    def bundled(self):
        """The manifest names the last bundle listed, in its order ([] before any bundle)."""
        state = self.load_json(HOST_STATE) or {}
        names = state.get("manifests")
        return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []

    def save_bundled(self, host, names):
        self.save_json(HOST_STATE, {"format": 1, "host": host, "manifests": list(names)})

    def unchanged(self, name, token):
        """Why manifest NAME needs no apply for TOKEN, or None: its last apply with that token
        finished (the kept `applied` copy is written only then) and owes nothing; or `rollback` put
        the version before it back (that stays until the stack's version moves on)."""
        state = self.load_state(name)
        if not state or state.get("pending") or state.get("leftover") or state.get("reload"):
            return None
        if state.get("rolled_back_from") == token:
            return "rolled back by hand, kept (make rollback rolls forward)"
        finished = self.load_json(self.kept_path("applied", name)) or {}
        if state.get("token") == token and finished.get("token") == token and state.get("written", True):
            return "unchanged"
        return None

    def drop_upload(self, admin):
        """The agent the deploy uploaded to the admin's home: the base manifest installed it (or
        the host is going), so the copy goes (walked as the admin's, never through a link)."""
        if admin:
            self.remove_entry(UPLOAD_PATH.format(admin=admin), admin)

    def apply_host(self, host, text, upload_by=None):
        entries = load_bundle(text, host)
        names = [name for name, _, _ in entries]
        applied = kept = removed = 0
        with self.locked():
            previous = self.bundled()
            # from now on the union is ours: a run cut off below still removes what was dropped
            self.save_bundled(host, list(dict.fromkeys(previous + names)))
            for name, token, manifest_text in entries:
                why = self.unchanged(name, token)
                if why:
                    self.say(f"outpost {name}: {why}")
                    kept += 1
                    continue
                manifest = load_manifest(manifest_text, name)
                self.learn_secrets(manifest["secret_values"])
                with self.journaled("apply", name, token) as result:
                    result["line"] = self.apply_locked(name, token, manifest)
                self.keep_applied(name, token, manifest_text)
                applied += 1
            for name in reversed([n for n in previous if n not in names]):
                removed += self.remove_bundled(name)
                self.save_bundled(host, [n for n in self.bundled() if n != name])
            self.save_bundled(host, names)
            self.drop_upload(upload_by)
        line = f"outpost host {host}: {applied} applied, {kept} unchanged, {removed} removed"
        self.say(line)
        return line

    def remove_bundled(self, name):
        state = self.load_state(name)
        if state is None:
            return 0
        token = state["token"]
        with self.journaled("remove", name, token) as result:
            result["line"] = self.remove_locked(name, token)
        return 1

    def remove_host(self, host, upload_by=None):
        """Remove every stored manifest: the bundle's in reverse order, then any other, the base
        setup last (its removal takes the agent's own state along)."""
        self.drop_upload(upload_by)
        with self.locked():
            stored = sorted(s["name"] for s in self.other_states(None))
            order = [n for n in reversed(self.bundled()) if n in stored]
            order += [n for n in stored if n not in order]
            order.sort(key=lambda n: n == "base")
            for name in order:
                if name == "base":
                    # the base's removal empties the state dir: host.json goes first
                    with contextlib.suppress(FileNotFoundError):
                        self.remove_entry(HOST_STATE)
                self.remove_bundled(name)
                if name != "base":
                    self.save_bundled(host, [n for n in self.bundled() if n != name])
        line = f"outpost host {host}: removed {len(order)} manifests"
        self.say(line)
        return line

    def remove(self, name, token):
        """A per-manifest remove (the delete of a Command from before bundles): a manifest a bundle
        holds now stays; anything else is removed as before."""
        with self.locked():
            bundled = name in self.bundled()
        if bundled:
            line = f"outpost {name}: held by this host's bundle now, nothing removed"
            self.say(line)
            return line
        return super().remove(name, token)
