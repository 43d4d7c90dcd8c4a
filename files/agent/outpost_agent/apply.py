"""apply and remove: the order in which a manifest is made true on the host (packages, users,
dirs, originals, files, leftovers, daemon-reload, units, restarts; docs/manifest.md) and undone.

Everything it touches it touches through the layers below; a failure at any step leaves the
state saying what is still owed, so the next run converges.
"""

import contextlib
import os

from .base import STATE_DIR, AgentError
from .manifest import (SCRATCH_ROOTS, groups_to_restart, load_manifest, mask, owned_units,
                       stopped_on_removal, stored_manifest, summary)
from .originals import ORIGINALS_DIR
from .restarts import Restarts


def ancestors(path):
    parts = []
    while (path := os.path.dirname(path)) != "/":
        parts.append(path)
    return parts


class Applier(Restarts):
    """Apply a manifest so that a failure at any step converges; remove one, putting originals back."""

    def apply(self, name, token, text):
        manifest = load_manifest(text, name)
        self.learn_secrets(manifest["secret_values"])
        with self.locked():
            with self.journaled("apply", name, token) as result:
                result["line"] = self.apply_locked(name, token, manifest)
            self.keep_applied(name, token, text)
            return result["line"]

    def apply_locked(self, name, token, manifest):
        """Apply so that a failure at any step converges on the next run: the state records the
        work still owed (restart groups, daemon-reloads, the previous manifest's leftovers)
        before the files change, and is saved again after each step that pays some of it."""
        previous = self.load_state(name)
        old = stored_manifest(previous)
        if previous and previous.get("written") is False:
            old = {**old, "files": []}  # a first apply that never wrote a file: what is there isn't ours
        created_dirs = list(previous.get("created_dirs", [])) if previous else []
        state = {"format": 1, "name": name, "token": previous["token"] if previous else token,
                 "manifest": previous["manifest"] if previous else mask(manifest),
                 "leftover": previous.get("leftover") if previous else None,
                 "created_dirs": created_dirs, "pending": list(previous.get("pending", [])) if previous else [],
                 "reload": list(previous.get("reload", [])) if previous else [],
                 # False until this NAME's first apply is about to write files: until then the
                 # paths it lists hold what was there before (see keep_originals)
                 "written": previous.get("written", True) if previous else False}
        if previous is None:
            self.save_state(name, state)  # a first apply that fails is still recorded: remove undoes it
        try:
            changed = len(self.ensure_packages(manifest["packages"]))
            self.check_dynamic_users(manifest["dynamic_users"])
            changed += len(self.ensure_users(manifest["users"]))
            changed += self.ensure_dirs(manifest["dirs"], created_dirs)
            # after the packages: a package's own conffile (/etc/caddy/Caddyfile) is an original too
            self.keep_originals(manifest["files"])
            staged = self.stage_and_validate(manifest, created_dirs)
            try:
                changed_paths = [s.host_path for s in staged]
                todo = groups_to_restart(manifest, previous, changed_paths)
                keep = {f["path"] for f in manifest["files"]} | self.paths_of_others(name)
                dropping = [f["path"] for f in old["files"] if f["path"] not in keep]
                reload = set(state["reload"]) | {p for p in changed_paths + dropping if self.unit_scope(p)}
                # owed from here on: what a re-run must do even when it finds every file in place
                state.update(manifest=mask(manifest),
                             leftover=old if old["files"] or old["restart"] or old["users"] else None,
                             pending=[g["group"] for g in todo], reload=sorted(reload), written=True)
                # what a failed restart puts back: the previous version of its changed files
                owed = {p for g in todo for p in g["when"]} & set(changed_paths)
                before = self.snapshot([f for f in manifest["files"] if f["path"] in owed])
                self.save_state(name, state)
                for s in staged:
                    try:
                        self.commit(s)
                    except OSError as e:
                        raise AgentError(f"could not write {s.host_path}: {e.strerror}; the next "
                                         "apply finishes this one") from None
                    self.log(f"wrote {s.host_path}")
            finally:
                self.discard(staged)
            _, removed = self.drop_leftovers(name, old, manifest, created_dirs)
            retiring = self.users_to_retire(name, old, manifest)
            state["leftover"] = {"files": [], "units": [], "restart": [], "users": retiring} if retiring else None
            self.save_state(name, state)
            self.drop_released_originals()
            self.daemon_reload(state["reload"])
            state["reload"] = []
            self.save_state(name, state)
            # after the daemon-reload: a retiring user's own unit files were just removed, and
            # reloading its manager needs the manager up
            for u in retiring:
                self.retire_user(u["name"], u.get("purge", False))
            state["leftover"] = None
            self.save_state(name, state)
            actions, fresh = self.ensure_units(manifest["units"])
            restarted = self.run_restarts(name, todo, fresh, state, before)
            state.update(token=token, pending=[])
            self.save_state(name, state)
        except BaseException:
            with contextlib.suppress(Exception):
                self.save_state(name, state)  # best effort: the dirs created so far are known
            raise
        line = summary(name, changed + len(changed_paths) + actions, removed, restarted)
        self.say(line)
        return line

    def drop_leftovers(self, name, old, manifest, created_dirs):
        """Stop units, remove files, switch files and created dirs that the previous manifest
        had and this one drops; return (removed file paths, number of things removed)."""
        new_units = set(owned_units(manifest))
        keep = {f["path"] for f in manifest["files"]} | self.paths_of_others(name)
        dropped = [f for f in old["files"] if f["path"] not in keep]
        self.check_paths(dropped)
        self.stop_units(stopped_on_removal(old, [p for p in owned_units(old) if p not in new_units]))
        paths = [f["path"] for f in dropped]
        originals = self.check_originals(dropped)
        removed = sum(bool(self.release_file(f, originals)) for f in dropped)
        new_groups = {g["group"] for g in manifest["restart"]}
        removed += sum(self.forget_group(g) for g in old["restart"] if g["group"] not in new_groups)
        needed = {d["path"] for d in manifest["dirs"]} | {os.path.dirname(f["path"]) for f in manifest["files"]}
        needed |= {a for p in needed for a in ancestors(p)}
        gone = self.remove_empty_dirs([d for d in created_dirs if d not in needed])
        created_dirs[:] = [d for d in created_dirs if d not in gone]
        return paths, removed + len(gone)

    def users_to_retire(self, name, old, manifest):
        """The previous manifest's users that neither this manifest nor another stored one lists
        (a `user:` change): they go exactly as a removal takes them (see retire_user)."""
        listed = {u["name"] for u in manifest["users"]}
        listed |= {u["name"] for s in self.other_states(name) for u in s["manifest"]["users"]}
        return [u for u in old["users"] if u["name"] not in listed]

    def remove(self, name, token):
        with self.locked():
            token = self.owner_token(name, token)
            with self.journaled("remove", name, token) as result:
                result["line"] = self.remove_locked(name, token)
            return result["line"]

    def remove_locked(self, name, token):
        state = self.load_state(name)
        if state is None:
            line = f"outpost {name}: nothing stored under this name, nothing to remove"
        elif state.get("token") != token:
            line = f"outpost {name}: a successor owns {name} (the stored token differs), nothing removed"
        else:
            m, others = stored_manifest(state), self.other_states(name)
            units = owned_units(m)
            keep = {f["path"] for s in others for f in s["manifest"]["files"]}
            # a first apply that failed before writing any file: what is at its paths isn't outpost's
            dropped = [f for f in m["files"] if f["path"] not in keep] if state.get("written", True) else []
            self.check_paths(dropped)  # a planted symlink is refused before anything is touched
            originals = self.check_originals(dropped)  # ... and a damaged kept original too
            self.stop_units(stopped_on_removal(m, units))
            paths = [f["path"] for f in dropped]
            done = [self.release_file(f, originals) for f in dropped]
            count = sum(bool(d) for d in done)
            put_back = done.count("put back")
            still = {p for s in others for p in s["manifest"].get("scratch", [])}
            count += sum(self.remove_entry(p, tree=True) for p in m.get("scratch", []) if p not in still)
            count += sum(self.forget_group(g) for g in m["restart"])
            self.daemon_reload(paths, wait=False)
            self.reload_host_units(m, units, paths)
            listed = {u["name"] for s in others for u in s["manifest"]["users"]}
            retired = [(u["name"], self.retire_user(u["name"], u.get("purge", False)))
                       for u in m["users"] if u["name"] not in listed]
            users = [n for n, how in retired if how == "deleted"]
            kept = [n for n, how in retired if how == "kept"]
            os.unlink(self.state_file(name))
            self.drop_released_originals()
            if not others:
                self.forget_host()
            count += len(self.remove_empty_dirs(state.get("created_dirs", [])))
            line = (f"outpost {name}: removed {count} files and dirs, stopped {len(units)} units, "
                    f"deleted users: {', '.join(users) or 'none'}"
                    + (f", kept users (locked, data kept): {', '.join(kept)}" if kept else "")
                    + (f", put back {put_back} original{'s' * (put_back != 1)}" if put_back else ""))
        self.say(line)
        return line

    def forget_host(self):
        """The last manifest is gone: the agent's own state (its manifest and blue-green folders,
        its lock) goes too, so the base setup's removal leaves no trace of outpost. The lock may
        be unlinked while held: it only serializes agents that still have work here."""
        self.remove_entry(f"{STATE_DIR}/lock")
        self.remove_empty_dirs([f"{STATE_DIR}/manifests", f"{STATE_DIR}/bluegreen", ORIGINALS_DIR, STATE_DIR])
        # outpost's own directory, when empty: whoever made it (an operator placing the pinned
        # litestream binary there before the first apply), nothing of outpost's stays behind
        self.remove_empty_dirs([SCRATCH_ROOTS[0].rstrip("/")])
