"""Originals: what was on the host before a manifest overwrote it, kept root-only in
/var/lib/outpost/originals/ and put back when the last manifest listing the path drops it.

Owns that directory. Reads the host's file through its parent's fd (never through a link, never a
hard link a user planted); its content is never printed.
"""

import contextlib
import errno
import hashlib
import os
import stat

from .base import STATE_DIR, AgentError
from .fs import uid_of
from .journal import Journal
from .manifest import stored_manifest

# Root-only copies of the files that were on the host before a manifest overwrote them, put back
# when the last manifest listing the path goes (see keep_originals below).
ORIGINALS_DIR = f"{STATE_DIR}/originals"


class Originals(Journal):
    """Keep, check, put back and drop the host's own versions of the files manifests write."""

    # Before a manifest first writes a path no stored manifest lists, the regular file there (the
    # image's 20auto-upgrades, the admin's authorized_keys, a package's Caddyfile) is copied to
    # ORIGINALS_DIR (root-only 0700): KEY.data (0600) holds its bytes, KEY.json (0600) its path,
    # mode, uid, gid and sha256, KEY being the sha256 of the path. KEY.json is written last, after
    # KEY.data, and both are fsynced with the directory before any file of the apply is committed:
    # a record exists or it doesn't. The first record of a path wins; it goes back (content, mode,
    # owner) when the last manifest listing the path drops it, and is deleted once no stored
    # manifest lists the path. Content is never printed.
    @staticmethod
    def original_paths(path):
        key = hashlib.sha256(path.encode()).hexdigest()
        return f"{ORIGINALS_DIR}/{key}.json", f"{ORIGINALS_DIR}/{key}.data"

    def original_of(self, path):
        """The kept original's metadata for PATH, or None."""
        meta = self.load_json(self.original_paths(path)[0])
        return meta if isinstance(meta, dict) and meta.get("path") == path else None

    def claimed_paths(self):
        """The file paths some stored manifest (or its leftovers) lists and has written: what is
        there is outpost's own, never an original. A first apply that has not written yet
        (`written: false`) claims nothing."""
        return {f["path"] for s in self.other_states(None) if s.get("written", True)
                for f in stored_manifest(s)["files"]}

    def originals_dir(self):
        """Open ORIGINALS_DIR (created 0700 root; kept 0700)."""
        os.makedirs(self.path(ORIGINALS_DIR), mode=0o700, exist_ok=True)
        d = self.open_dir(ORIGINALS_DIR)
        st = os.fstat(d.fd)
        if st.st_uid != 0 and os.geteuid() == 0:
            d.close()
            raise AgentError(f"refusing {ORIGINALS_DIR}: it is not owned by root")
        os.fchmod(d.fd, 0o700)
        return d

    def keep_originals(self, files):
        """Keep a copy of each regular file at a path of FILES that no stored manifest has
        written and that has no kept original yet; fsynced before the caller commits anything."""
        claimed, kept = self.claimed_paths(), 0
        for f in files:
            if f["path"] not in claimed and self.original_of(f["path"]) is None:
                kept += self.keep_original(f["path"], uid_of(f["owner"]))
        if kept:
            with self.originals_dir() as d:
                os.fsync(d.fd)

    def keep_original(self, path, owner_uid):
        """Copy the regular file at PATH (read through its parent's fd, never through a link)
        with its mode and owner; True when a copy was kept. A symlink, a device or nothing is not
        kept (the apply replaces a symlink, never writing through it); a directory stays the
        apply's error. In a directory a user controls only that user's own single-link file is
        taken: root never copies a hard link a user planted there."""
        d, name, st = self.entry(path, owner_uid)
        if d is None:
            return False
        with d:
            if st is None or not stat.S_ISREG(st.st_mode):
                return False
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=d.fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOENT, errno.ENXIO):
                    return False  # swapped for a link (or removed) since the lstat: nothing to keep
                raise
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):
                    return False
                if d.user is not None and (st.st_uid != d.user or st.st_nlink != 1):
                    self.log(f"warning: not keeping the original {path}: in a directory uid {d.user} "
                             "owns, only that user's own file with one link is kept")
                    return False
                data = fh.read()
        meta_path, data_path = self.original_paths(path)
        meta = {"path": path, "mode": f"{stat.S_IMODE(st.st_mode):04o}", "uid": st.st_uid,
                "gid": st.st_gid, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
        try:
            self.originals_dir().close()
            staged = self.stage(data_path, data, 0o600, 0, 0)
            try:
                self.commit(staged)
            finally:
                self.discard([staged])
            self.save_json(meta_path, meta)  # the record: written last
        except OSError as e:
            raise AgentError(f"could not keep the original {path} in {ORIGINALS_DIR}: {e.strerror}; "
                             "no file was changed") from None
        self.log(f"kept the original {path} (root-only, in {ORIGINALS_DIR})")
        return True

    def check_originals(self, files):
        """{path: (metadata, bytes)} of the kept originals of FILES, each checked against its
        digest before anything is removed; a damaged one is an error."""
        found = {}
        for f in files:
            meta = self.original_of(f["path"])
            if meta is None:
                continue
            meta_path, data_path = self.original_paths(f["path"])
            data = self.read_file(data_path)
            if data is None or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
                raise AgentError(f"the kept original of {f['path']} ({data_path}) is missing or damaged; "
                                 f"nothing was removed (deleting {meta_path} lets the file be removed instead)")
            found[f["path"]] = (meta, data)
        return found

    def release_file(self, f, originals):
        """A file no stored manifest lists any more: put its kept original back (staged beside
        it, renamed through the parent's fd) or remove it. "put back", "removed" or ""."""
        path = f["path"]
        if path not in originals:
            return "removed" if self.remove_file(path, f.get("owner")) else ""
        meta, data = originals[path]
        try:
            staged = self.stage(path, data, int(meta["mode"], 8) & 0o7777, int(meta["uid"]), int(meta["gid"]))
            try:
                self.commit(staged)
            finally:
                self.discard([staged])
        except OSError as e:
            raise AgentError(f"could not put back the original {path}: {e.strerror}") from None
        self.log(f"put back the original {path}")
        return "put back"

    def drop_released_originals(self):
        """Delete the kept originals of paths no stored manifest lists any more (put back, or
        never overwritten by an apply that failed first), after the state that dropped them is
        saved: a re-run of a cut-off removal still finds them. Stray data files and staging dirs
        a killed run left there go too."""
        if not os.path.isdir(self.path(ORIGINALS_DIR)):
            return
        claimed = self.claimed_paths()
        with self.originals_dir() as d:
            self.sweep_stale_stages(d)
            entries = os.listdir(d.fd)
            for entry in sorted(e for e in entries if e.endswith(".json")):
                meta = self.load_json(f"{ORIGINALS_DIR}/{entry}")
                path = meta.get("path") if isinstance(meta, dict) else None
                if path in claimed:
                    continue
                os.unlink(entry, dir_fd=d.fd)
                self.log(f"dropped the kept original of {path}")
            records = {e[:-5] for e in os.listdir(d.fd) if e.endswith(".json")}
            for entry in entries:
                if entry.endswith(".data") and entry[:-5] not in records:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry, dir_fd=d.fd)
            os.fsync(d.fd)
