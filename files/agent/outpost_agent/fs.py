"""Safe filesystem walking: every path the agent reads, creates, chowns or deletes is walked from
/ one directory fd at a time (O_NOFOLLOW | O_DIRECTORY) and acted on relative to the last fd.

Service users own their homes and are not trusted: a symlink is followed only when root made it
in a directory only root can write (/lib -> usr/lib); a directory not owned by root is accepted
only when it belongs to the owner of the file being handled or lies in that owner's home. Touches
the host's files and directories only through `SafeFiles`' methods; removes a file, a scratch
tree or an empty directory only when a layer above asks.
"""

import errno
import grp
import os
import pwd
import shutil
import stat

from .base import AgentError
from .masking import Masking

MAX_SYMLINKS = 40         # root-made symlinks followed on one path (/lib -> usr/lib, ...)
ANY_USER = -1            # open_dir: accept directories of any one non-root owner (rmdir only)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Dir:
    """An open directory (fd for *at() calls), its host path, and the non-root uid that owns a
    directory on the way to it (None: every directory on the path belongs to root)."""

    def __init__(self, fd, path, user):
        self.fd, self.path, self.user = fd, path, user

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_at(dir_fd, name, shown, flags, mode=0o777):
    """os.open relative to dir_fd; a symlink or a non-directory where one is expected is an
    AgentError naming the host path."""
    try:
        return os.open(name, flags, mode, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise AgentError(f"refusing {shown}: it is a symlink or not a directory") from None
        if e.errno == errno.EEXIST:
            raise AgentError(f"refusing {shown}: it appeared while the agent was creating it") from None
        raise


def only_root_writes(st):
    """A directory whose entries only root can change (a symlink in it was made by root)."""
    return st.st_uid == 0 and not st.st_mode & 0o002 and (st.st_gid == 0 or not st.st_mode & 0o020)


def inside_home_of(uid, host_path):
    try:
        home = os.path.normpath(pwd.getpwuid(uid).pw_dir)
    except KeyError:
        return False
    return home != "/" and (host_path == home or host_path.startswith(home + "/"))


def uid_of(user):
    try:
        return pwd.getpwnam(user).pw_uid if user else None
    except KeyError:
        return None


class SafeFiles(Masking):
    """Open, read, create and remove host paths without following a link a user could have made."""

    def ids(self, owner, group, what):
        try:
            return pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid
        except KeyError:
            raise AgentError(f"{what}: owner {owner}:{group} does not exist on this host") from None

    # Every file operation below walks its path from the root one directory fd at a time
    # (O_NOFOLLOW | O_DIRECTORY) and then acts on that fd (mkdir/open/rename/unlink with dir_fd,
    # fchown, fchmod), never by path: a service user who owns its home can swap any directory
    # there for a symlink at any moment, and root must not follow it (see open_dir).
    def open_dir(self, host_dir, owner_uid=None, create=None, created=None):
        """Open host_dir for *at() calls; return a Dir, or None when it is missing and create is
        None. create=(uid, gid): missing directories are made (mkdir with dir_fd, opened
        O_NOFOLLOW, then fchown/fchmod 0755) and their paths appended to `created`.

        A symlink is followed only when root made it in a directory only root can write
        (/lib -> usr/lib). A directory not owned by root is accepted only when it belongs to
        owner_uid (the owner of the file being handled) or lies inside its owner's home, and all
        such directories on the path belong to one user; anything else is an AgentError naming
        the path, raised before anything there is touched."""
        path = host_dir
        for _ in range(MAX_SYMLINKS):
            result = self._walk(path, owner_uid, create, created)
            if not isinstance(result, str):
                return result
            path = result  # a trusted symlink: walk its target from the root again
        raise AgentError(f"{host_dir}: too many levels of symlinks")

    def _walk(self, host_dir, owner_uid, create, created):
        fd = os.open(self.root or "/", DIR_FLAGS)
        here, user, parent = "/", None, os.fstat(fd)
        parts = [p for p in host_dir.split("/") if p]
        try:
            for i, name in enumerate(parts):
                here = os.path.join(here, name)
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    if create is None:
                        os.close(fd)
                        return None
                    nfd = self._make_dir(fd, name, here, create)
                    created.append(here)
                    self.log(f"created {here}/")
                else:
                    if stat.S_ISLNK(st.st_mode):
                        if user is None and st.st_uid == 0 and only_root_writes(parent):
                            target = os.readlink(name, dir_fd=fd)
                            base = target if target.startswith("/") else os.path.join(os.path.dirname(here), target)
                            return os.path.normpath(os.path.join(base, *parts[i + 1:]))
                        raise AgentError(f"refusing {here}: it is a symlink (owned by uid {st.st_uid}); "
                                         "the agent never follows a link a non-root user could have made")
                    if not stat.S_ISDIR(st.st_mode):
                        raise AgentError(f"refusing {here}: it is not a directory")
                    nfd = open_at(fd, name, here, DIR_FLAGS)
                os.close(fd)
                fd, parent = nfd, os.fstat(nfd)
                user = self.check_dir_owner(here, parent, user, owner_uid)
        except BaseException:
            os.close(fd)
            raise
        return Dir(fd, host_dir, user)

    @staticmethod
    def _make_dir(fd, name, here, owner, mode=0o755):
        """mkdir name in fd (root-only at first), open it without following links, fchown, fchmod."""
        try:
            os.mkdir(name, 0o700, dir_fd=fd)
        except FileExistsError:
            raise AgentError(f"refusing {here}: it appeared while the agent was creating it") from None
        nfd = open_at(fd, name, here, DIR_FLAGS)
        st = os.fstat(nfd)
        if st.st_uid != 0 or stat.S_IMODE(st.st_mode) & 0o077:
            os.close(nfd)
            raise AgentError(f"refusing {here}: it was replaced while the agent was creating it")
        os.fchown(nfd, *owner)
        os.fchmod(nfd, mode)
        return nfd

    @staticmethod
    def check_dir_owner(here, st, user, owner_uid):
        """The non-root owner seen on the path so far, or an AgentError for a foreign one."""
        if st.st_uid == 0:
            return user
        if user in (None, st.st_uid) and (owner_uid in (st.st_uid, ANY_USER) or inside_home_of(st.st_uid, here)):
            return st.st_uid
        raise AgentError(f"refusing {here}: it belongs to uid {st.st_uid}, who neither owns what the "
                         "agent is writing there nor has its home there")

    def entry(self, host_path, owner_uid=None):
        """(Dir of the parent or None, file name, lstat of the entry or None). A symlink in a
        directory a non-root user owns is refused."""
        d = self.open_dir(os.path.dirname(host_path), owner_uid)
        name = os.path.basename(host_path)
        if d is None:
            return None, name, None
        try:
            st = os.stat(name, dir_fd=d.fd, follow_symlinks=False)
        except FileNotFoundError:
            return d, name, None
        except BaseException:
            d.close()
            raise
        if stat.S_ISLNK(st.st_mode) and d.user is not None:
            d.close()
            raise AgentError(f"refusing {host_path}: it is a symlink in a directory uid {d.user} owns")
        return d, name, st

    def read_file(self, host_path, owner_uid=None):
        """The bytes of a regular file (read without following links), or None."""
        d, name, st = self.entry(host_path, owner_uid)
        if d is None:
            return None
        with d:
            if st is None or not stat.S_ISREG(st.st_mode):
                return None
            fd = open_at(d.fd, name, host_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as fh:
                return fh.read()

    def remove_file(self, host_path, owner=None):
        """Unlink host_path relative to its parent's fd; True when something was removed."""
        d, name, st = self.entry(host_path, uid_of(owner))
        if d is None:
            return False
        with d:
            if st is None:
                return False
            if stat.S_ISDIR(st.st_mode):
                raise AgentError(f"{host_path} is a directory, not the file outpost wrote there")
            os.unlink(name, dir_fd=d.fd)
        self.log(f"removed {host_path}")
        return True

    def remove_tree(self, host_path):
        """Delete host_path and everything below it (a manifest's scratch), relative to its
        root-owned parent's fd; shutil.rmtree's fd-based walk never follows a symlink. True when
        something was removed."""
        d, name, st = self.entry(host_path)
        if d is None:
            return False
        with d:
            if st is None:
                return False
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=d.fd)
            else:
                os.unlink(name, dir_fd=d.fd)
        self.log(f"removed {host_path} (scratch)")
        return True

    def remove_empty_dirs(self, dirs):
        """rmdir each dir that is empty, deepest first (relative to its parent's fd); return
        those removed or already gone."""
        removed = []
        for path in sorted(set(dirs), key=lambda p: (-p.count("/"), p)):
            # only an empty directory goes, and never through a link: any one owner will do
            d, name, st = self.entry(path, ANY_USER)
            if d is None or st is None:
                removed.append(path)
                continue
            with d:
                if not stat.S_ISDIR(st.st_mode):
                    continue
                try:
                    os.rmdir(name, dir_fd=d.fd)
                except OSError:
                    continue
            removed.append(path)
            self.log(f"removed {path}/")
        return removed

    def check_paths(self, files):
        """Walk the parent of every file (nothing created) so that a planted symlink or foreign
        directory is refused before anything is touched."""
        for f in files:
            d, _, _ = self.entry(f["path"], uid_of(f.get("owner")))
            if d is not None:
                d.close()

    def ensure_dirs(self, dirs, created_dirs):
        changed = 0
        for d in dirs:
            uid, gid = self.ids(d["owner"], d["group"], d["path"])
            mode = int(d["mode"], 8)
            handle = self.open_dir(d["path"], uid)
            if handle is None:
                handle = self.open_dir(d["path"], uid, create=(0, 0), created=created_dirs)
            with handle:
                st = os.fstat(handle.fd)
                if (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, uid, gid):
                    continue
                os.fchown(handle.fd, uid, gid)
                os.fchmod(handle.fd, mode)
            self.log(f"set up {d['path']}/")
            changed += 1
        return changed
