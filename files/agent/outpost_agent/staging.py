"""Writing files atomically: stage a copy with the same name in a fresh root-only directory beside
the target, check it (certificates, the manifest's validate steps), then rename it over the target
through the directory fds.

Touches only staging directories it creates (`.outpost-stage-*`, and the ones a killed run left)
and, on `commit`, the target of a staged copy. A failed check leaves every target as it was.
"""

import contextlib
import json
import os
import re
import secrets
import shlex
import stat

from .base import AgentError, one_line
from .fs import DIR_FLAGS, SafeFiles, open_at
from .manifest import STAGED_RE, file_bytes

PEM_CERT = b"-----BEGIN CERTIFICATE-----"
PEM_KEY_RE = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")


class Staged:
    """A staging copy: the target's Dir, the staging dir's name and fd, and the path of the copy
    (what a validate step's {staged:PATH} becomes)."""

    def __init__(self, host_path, directory, stage_dir, stage_fd, path, data=b""):
        self.host_path, self.dir, self.stage_dir, self.stage_fd, self.path = \
            host_path, directory, stage_dir, stage_fd, path
        pem = data.lstrip().startswith(b"-----BEGIN ")    # a PEM file, not one that mentions
        self.has_cert = pem and PEM_CERT in data          # a marker (this agent does): checked
        self.has_key = pem and bool(PEM_KEY_RE.search(data))   # before commit, see check_certificates


def stage_name():
    return f".outpost-stage-{secrets.token_hex(8)}"


class Staging(SafeFiles):
    """Stage, validate, commit and discard copies of files."""

    def differs(self, host_path, data, mode, uid, gid):
        d, name, st = self.entry(host_path, uid)
        if d is None:
            return True
        d.close()
        if st is None:
            return True
        if stat.S_ISDIR(st.st_mode):
            raise AgentError(f"{host_path} is a directory, but the manifest ships a file there")
        if not stat.S_ISREG(st.st_mode) or (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) != (mode, uid, gid) \
                or st.st_size != len(data):
            return True
        return self.read_file(host_path, uid) != data

    def stage(self, host_path, data, mode, uid, gid, created=None):
        """Write data to a staging copy with the same file name in a new root-only directory
        beside host_path (its missing parents are created, owned like the file, and appended to
        `created`); return a Staged whose `path` is what validate steps see."""
        d = self.open_dir(os.path.dirname(host_path), uid, create=(uid, gid),
                          created=created if created is not None else [])
        try:
            self.sweep_stale_stages(d)
        except BaseException:
            d.close()
            raise
        stage_dir, name = stage_name(), os.path.basename(host_path)
        self.live_stages.add((d.path, stage_dir))
        try:
            sfd = self._make_dir(d.fd, stage_dir, os.path.join(os.path.dirname(host_path), stage_dir),
                                 (0, 0), 0o700)
        except BaseException:
            d.close()
            raise
        staged = Staged(host_path, d, stage_dir, sfd, self.path(os.path.join(d.path, stage_dir, name)), data)
        try:
            fd = open_at(sfd, name, staged.path,
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fchown(fh.fileno(), uid, gid)
                os.fchmod(fh.fileno(), mode)
                os.fsync(fh.fileno())
        except BaseException:
            self.discard([staged])
            raise
        return staged

    def sweep_stale_stages(self, d):
        """Remove the staging dirs an agent killed mid-apply (SIGKILL, power loss) left in d: only
        root-owned 0700 `.outpost-stage-*` dirs that are not this run's, emptied relative to
        their fd. Agents serialize on the lock, so no other run is staging here now."""
        for entry in os.listdir(d.fd):
            if not entry.startswith(".outpost-stage-") or (d.path, entry) in self.live_stages:
                continue
            st = os.stat(entry, dir_fd=d.fd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or stat.S_IMODE(st.st_mode) != 0o700:
                continue
            sfd = open_at(d.fd, entry, os.path.join(d.path, entry), DIR_FLAGS)
            try:
                for inner in os.listdir(sfd):
                    if not stat.S_ISDIR(os.stat(inner, dir_fd=sfd, follow_symlinks=False).st_mode):
                        os.unlink(inner, dir_fd=sfd)
            finally:
                os.close(sfd)
            with contextlib.suppress(OSError):
                os.rmdir(entry, dir_fd=d.fd)
                self.log(f"removed {os.path.join(d.path, entry)}/, left by an interrupted apply")

    def commit(self, staged):
        """Rename the staged copy over its target, both named relative to directory fds."""
        name = os.path.basename(staged.host_path)
        os.rename(name, name, src_dir_fd=staged.stage_fd, dst_dir_fd=staged.dir.fd)
        self.discard([staged])

    def discard(self, staged_list):
        """Remove staging copies that were not committed and their staging dirs; close the fds."""
        for s in staged_list:
            if s.stage_fd is None:
                continue
            with contextlib.suppress(OSError):
                os.unlink(os.path.basename(s.host_path), dir_fd=s.stage_fd)
            with contextlib.suppress(OSError):
                mine = os.fstat(s.stage_fd)
                now = os.stat(s.stage_dir, dir_fd=s.dir.fd, follow_symlinks=False)
                if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
                    os.rmdir(s.stage_dir, dir_fd=s.dir.fd)
            os.close(s.stage_fd)
            s.stage_fd = None
            self.live_stages.discard((s.dir.path, s.stage_dir))
            s.dir.close()

    def save_json(self, host_path, data):
        os.makedirs(os.path.dirname(self.path(host_path)), mode=0o700, exist_ok=True)
        staged = self.stage(host_path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode(),
                            0o600, 0, 0)
        try:
            self.commit(staged)
        finally:
            self.discard([staged])

    def stage_files(self, files, created_dirs):
        """Stage every file whose content, mode or owner differs; return [(path, staged)]."""
        staged = []
        try:
            for f in files:
                data, mode = file_bytes(f), int(f["mode"], 8)
                uid, gid = self.ids(f["owner"], f["group"], f["path"])
                if self.differs(f["path"], data, mode, uid, gid):
                    try:
                        staged.append(self.stage(f["path"], data, mode, uid, gid, created_dirs))
                    except OSError as e:
                        raise AgentError(f"could not stage {f['path']}: {e.strerror}; nothing was "
                                         "changed") from None
        except BaseException:
            self.discard(staged)
            raise
        return staged

    def validate(self, steps, staged):
        """Run every validate step against the staged copies; raise on the first failure."""
        staged_of = {s.host_path: s.path for s in staged}
        for step in steps:
            argv = [STAGED_RE.sub(lambda m: staged_of.get(m.group(1), self.path(m.group(1))), a)
                    for a in step["argv"]]
            code, output, _ = self.run(argv, check=False)
            if code != 0:
                raise AgentError(f"validation failed, no file was changed: `{shlex.join(step['argv'])}` "
                                 f"exited {code}: {one_line(output)}")

    def check_certificates(self, staged):
        """Before certificates or keys replace the live ones: every staged certificate must not
        be expired, and its key (in the same file, a HAProxy/Caddy bundle, or in NAME.key beside
        NAME.crt) must match it. `openssl` reads the key from its 0600 staged file: the key never
        reaches argv, and openssl's own words about a key are never quoted."""
        staged_at = {s.host_path: s.path for s in staged}

        def current(host_path):  # the staged copy, or the live file, or None
            return staged_at.get(host_path) or (host_path if self.read_file(host_path) is not None else None)

        for s in staged:
            stem, ext = os.path.splitext(s.host_path)
            if s.has_cert:
                pairs = [(s.path, s.path if s.has_key else current(stem + ".key") if ext == ".crt" else None)]
            elif s.has_key and ext == ".key":
                cert = current(stem + ".crt")
                pairs = [(cert if cert in staged_at.values() else self.path(cert), s.path)] if cert else []
            else:
                continue
            for cert, key in pairs:
                if cert == s.path:
                    code, output, _ = self.run(["openssl", "x509", "-noout", "-checkend", "0", "-in", cert],
                                               check=False)
                    if code != 0:
                        raise AgentError(f"refusing {s.host_path}: its certificate is expired or unreadable "
                                         f"({one_line(output, 300)}); nothing was changed")
                if key is None:
                    continue
                key = key if key in staged_at.values() else self.path(key)
                _, cert_pub, _ = self.run(["openssl", "x509", "-noout", "-pubkey", "-in", cert], check=False)
                code, _, key_pub = self.run(["openssl", "pkey", "-pubout", "-in", key], check=False)
                if code != 0 or not key_pub.strip() or key_pub.strip() != cert_pub.strip():
                    raise AgentError(f"refusing {s.host_path}: the private key "
                                     + ("cannot be read" if code != 0 else "does not match the certificate")
                                     + "; nothing was changed")

    def stage_and_validate(self, manifest, created_dirs):
        """Stage the files that differ and validate the staged copies; return the Staged list
        (the caller commits and discards). A failed validation leaves every file as it was."""
        dirs_before = list(created_dirs)
        staged = self.stage_files(manifest["files"], created_dirs)
        try:
            self.check_certificates(staged)
            self.validate(manifest["validate"] if staged else [], staged)
        except BaseException:
            self.discard(staged)
            self.remove_empty_dirs([d for d in created_dirs if d not in dirs_before])
            raise
        return staged

    def write_validated(self, sw, data, uid, gid):
        """Atomically replace the switch file, after its validate step passed on a staged copy."""
        staged = self.stage(sw["path"], data, int(sw["mode"], 8), uid, gid)
        try:
            if sw["validate"]:
                self.validate([{"argv": sw["validate"]}], [staged])
            self.commit(staged)
        finally:
            self.discard([staged])
