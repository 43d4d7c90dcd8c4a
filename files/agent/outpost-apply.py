#!/usr/bin/env python3
"""outpost-apply: the on-host agent that makes a host match an outpost manifest.

Installed by the base setup at /usr/local/lib/outpost/outpost-apply.py and run as root
(`sudo -n python3 ...`) by every outpost `remote.Command`:

    outpost-apply apply NAME TOKEN < manifest.json   ensure packages, users, dirs, files and
                                                      units; remove what the previous manifest
                                                      of NAME had and this one drops; run the
                                                      restart plan; print one summary line
    outpost-apply remove NAME TOKEN                  undo what manifest NAME set up, unless a
                                                      successor (other TOKEN) owns it: the files
                                                      its apply overwrote get their originals
                                                      back (kept in originals/); its users
                                                      stay, locked, with their data unless the
                                                      manifest says purge
    outpost-apply restart NAME                       run stored manifest NAME's restart plan now
    outpost-apply switch GROUP                       flip a blue-green group to its other slot
    outpost-apply status                             list the stored manifests
    outpost-apply report --json                      units, replica health, version, last log
                                                      line and token of every stored manifest
    outpost-apply drift --json [--repair]            what differs from the stored manifests;
                                                      --repair re-applies the drifted ones
    outpost-apply repair NAME | rollback NAME        re-apply NAME as last applied / the
                                                      version before it (agent.log records it)
    outpost-apply logs NAME [--since=W] [--lines=N] [--follow]   its units' journal, JSON lines

The manifest format and the exact behaviour are documented in docs/manifest.md of the outpost
repository. Service users own their homes and are not trusted: every file operation walks its
path from / with one directory fd per level (O_NOFOLLOW | O_DIRECTORY) and acts on those fds
(dir_fd, fchown, fchmod), refusing symlinks and foreign-owned directories (see Agent.open_dir).
An apply records the work it owes (restarts, daemon-reloads, leftovers) in its state before it
changes any file, so a run that fails or is cut off at any step converges on the next one.
Python 3 standard library only; every external command runs from an argv list, every wait is
bounded, failures end in one paragraph on stderr and a non-zero exit.
"""

import base64
import contextlib
import errno
import fcntl
import grp
import hashlib
import http.client
import json
import os
import pwd
import re
import secrets
import select
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

STATE_DIR = "/var/lib/outpost"
# Root-only copies of the files that were on the host before a manifest overwrote them, put back
# when the last manifest listing the path goes (see Agent.keep_originals).
ORIGINALS_DIR = f"{STATE_DIR}/originals"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9._:-]{1,256}$")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
UNIT_RE = re.compile(r"^[A-Za-z0-9:_.@\\-]+\.(service|socket|timer|path|target|mount)$")
MODE_RE = re.compile(r"^0?[0-7]{3,4}$")
STAGED_RE = re.compile(r"\{staged:([^}]*)\}")
PEM_CERT = b"-----BEGIN CERTIFICATE-----"
PEM_KEY_RE = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")
NOLOGIN = "/usr/sbin/nologin"
USER_MARK = "outpost"  # GECOS comment of users the agent created; only those are ever deleted
STRATEGIES = ("restart", "reload", "rolling", "blue-green")
SYSTEM_UNIT_DIRS = ("/etc/systemd/system/", "/usr/local/lib/systemd/system/",
                    "/usr/lib/systemd/system/", "/etc/containers/systemd/")
USER_UNIT_DIRS = ("/.config/systemd/user/", "/.config/containers/systemd/")
NO_ENABLE_STATES = ("enabled", "enabled-runtime", "static", "generated", "transient", "alias")
RUNNING_STATES = ("active", "activating", "reloading")
LOCK_WAIT = 1800          # another apply on this host may be in the middle of a rollout
USER_MANAGER_WAIT = 90    # loginctl enable-linger → user@UID.service and its bus are up
SETTLE_CHECKS = 2          # rolling: proxy health-check intervals to wait between instances
DRAIN_WAIT = 30           # haproxy: seconds to wait for a drained server's sessions to end
MAX_SYMLINKS = 40         # root-made symlinks followed on one path (/lib -> usr/lib, ...)
ANY_USER = -1            # open_dir: accept directories of any one non-root owner (rmdir only)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
COMMAND_TIMEOUT = 300
APT_TIMEOUT = 1800
APT_LOCK_WAIT = 300       # another apt (unattended-upgrades after boot) holds dpkg's lock
UNTOUCHED = "no dir, file or unit was changed; the next apply retries"
HIDDEN = "<secret hidden>"  # what the agent prints where a secret value stood
SECRET_PIECE = 8          # a multi-line secret's lines this long are hidden on their own too
# Where a manifest's `scratch` may point: what its own programs create on the host (a fetched
# binary, a cache), deleted with the last manifest that lists it.
SCRATCH_ROOTS = ("/usr/local/lib/outpost/", "/var/cache/outpost-")


class AgentError(Exception):
    """A failure explained in one paragraph; printed without a traceback."""


def one_line(text, limit=2000):
    """Collapse a tool's multi-line output into one paragraph."""
    text = " / ".join(line.strip() for line in str(text).splitlines() if line.strip())
    return text if len(text) <= limit else text[:limit] + " ..."


def run_command(argv, input=None, timeout=COMMAND_TIMEOUT, env=None):
    """Run argv; return (exit code, combined stdout+stderr, stdout)."""
    stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                              timeout=timeout, env=env, **stdin)
    except FileNotFoundError:
        raise AgentError(f"`{argv[0]}` is not installed on this host") from None
    except subprocess.TimeoutExpired:
        raise AgentError(f"`{shlex.join(argv)}` did not finish within {timeout}s") from None
    return proc.returncode, (proc.stdout + proc.stderr).strip(), proc.stdout


# ---------------------------------------------------------------------------------------------
# The manifest: parsing, defaults, checks (pure)

def load_manifest(text, name):
    """Parse the manifest text for NAME; fill defaults; raise AgentError listing every problem."""
    try:
        m = json.loads(text)
    except ValueError as e:
        raise AgentError(f"the manifest on stdin is not valid JSON: {e}") from None
    if not isinstance(m, dict):
        raise AgentError("the manifest on stdin must be a JSON object")
    problems = []
    keys = ("format", "name", "packages", "users", "dirs", "files", "units", "validate", "restart",
            "secret_values", "scratch")
    problems += [f"unknown key {k!r}" for k in sorted(set(m) - set(keys))]
    if m.get("format") != 1:
        problems.append(f"format must be 1, not {m.get('format')!r}")
    if m.get("name") != name:
        problems.append(f"name is {m.get('name')!r} but the command line says {name!r}")
    for key in keys[2:]:
        m.setdefault(key, [])
        if not isinstance(m[key], list):
            problems.append(f"{key} must be a list")
            m[key] = []
    if not all(isinstance(v, str) for v in m["secret_values"]):
        problems.append("secret_values must be a list of strings")
        m["secret_values"] = []
    for p in m["scratch"]:
        if not (isinstance(p, str) and p == os.path.normpath(p) and p.startswith(SCRATCH_ROOTS)):
            problems.append(f"scratch: {p!r} must be a normalized path under {' or '.join(SCRATCH_ROOTS)}")
    for p in m["packages"]:
        if not (isinstance(p, str) and PACKAGE_RE.match(p)):
            problems.append(f"packages: {p!r} is not a Debian package name")
    for i, u in enumerate(m["users"]):
        problems += check_user(u, f"users[{i}]")
    for i, d in enumerate(m["dirs"]):
        problems += check_owned(d, f"dirs[{i}]", "0755", ("path", "mode", "owner", "group"))
    for i, f in enumerate(m["files"]):
        problems += check_owned(f, f"files[{i}]", "0644",
                                ("path", "mode", "owner", "group", "content", "b64"))
        if isinstance(f, dict):
            f.setdefault("b64", False)
            if not isinstance(f.get("content"), str):
                problems.append(f"files[{i}]: content must be a string")
    paths = [f.get("path") for f in m["files"] if isinstance(f, dict)]
    problems += [f"files: {p} is listed twice" for p in sorted({p for p in paths if paths.count(p) > 1})]
    for i, u in enumerate(m["units"]):
        problems += check_unit(u, f"units[{i}]")
    for i, v in enumerate(m["validate"]):
        problems += check_validate(v, f"validate[{i}]", set(paths))
    for i, g in enumerate(m["restart"]):
        problems += check_group(g, f"restart[{i}]", set(paths))
    groups = [g.get("group") for g in m["restart"] if isinstance(g, dict)]
    problems += [f"restart: group {g} is listed twice" for g in sorted({g for g in groups if groups.count(g) > 1})]
    if problems:
        raise AgentError(f"manifest {name} is invalid: " + "; ".join(problems))
    return m


def check_path(path, where):
    if not isinstance(path, str) or not path.startswith("/") or os.path.normpath(path) != path \
            or "\0" in path or path == "/":
        return [f"{where}: path {path!r} must be absolute and normalized"]
    return []


def check_owned(item, where, default_mode, allowed):
    """Check a dir or file entry (path, mode, owner, group) and fill its defaults."""
    if not isinstance(item, dict):
        return [f"{where} must be an object"]
    problems = [f"{where}: unknown key {k!r}" for k in sorted(set(item) - set(allowed))]
    problems += check_path(item.get("path"), where)
    item.setdefault("mode", default_mode)
    item.setdefault("owner", "root")
    item.setdefault("group", item["owner"])
    if not (isinstance(item["mode"], str) and MODE_RE.match(item["mode"])):
        problems.append(f"{where}: mode {item['mode']!r} must be an octal string like \"0644\"")
    for key in ("owner", "group"):
        if not (isinstance(item[key], str) and USER_RE.match(item[key])):
            problems.append(f"{where}: {key} {item[key]!r} is not a user/group name")
    return problems


def check_user(u, where):
    if not isinstance(u, dict) or not isinstance(u.get("name"), str) or not USER_RE.match(u["name"]):
        return [f"{where}: needs a valid name"]
    if u["name"] == "root":
        return [f"{where}: root cannot be managed"]
    u.setdefault("home", f"/home/{u['name']}")
    u.setdefault("linger", False)
    u.setdefault("system", True)
    u.setdefault("shell", NOLOGIN)
    u.setdefault("purge", False)
    problems = [f"{where}: purge must be true or false"] if not isinstance(u["purge"], bool) else []
    return problems + check_path(u["home"], where)


def check_scope(scope, where):
    if scope == "system" or (isinstance(scope, str) and scope.startswith("user:")
                             and USER_RE.match(scope[5:])):
        return []
    return [f"{where}: scope {scope!r} must be \"system\" or \"user:<name>\""]


def check_unit(u, where):
    if not isinstance(u, dict) or not isinstance(u.get("unit"), str) or not UNIT_RE.match(u["unit"]):
        return [f"{where}: needs a valid unit name"]
    u.setdefault("scope", "system")
    u.setdefault("enable", True)
    u.setdefault("start", True)
    u.setdefault("report", False)
    u.setdefault("stop", True)
    problems = [f"{where}: {k} must be true or false" for k in ("enable", "start", "report", "stop")
                if not isinstance(u[k], bool)]
    if u["report"] and u["scope"] != "system":
        problems.append(f"{where}: report applies to system units only")
    return problems + check_scope(u["scope"], where)


def check_validate(v, where, paths):
    if not isinstance(v, dict) or not isinstance(v.get("argv"), list) or not v["argv"] \
            or not all(isinstance(a, str) for a in v["argv"]):
        return [f"{where}: needs argv, a non-empty list of strings"]
    return [f"{where}: {{staged:{p}}} names a file this manifest does not ship"
            for a in v["argv"] for p in STAGED_RE.findall(a) if p not in paths]


def check_group(g, where, paths):
    """Check one restart group and fill its defaults."""
    if not isinstance(g, dict) or not isinstance(g.get("group"), str) or not NAME_RE.match(g["group"]):
        return [f"{where}: needs a group name like [a-z0-9][a-z0-9-]*"]
    where = f"restart group {g['group']}"
    g.setdefault("scope", "system")
    g.setdefault("when", [])
    g.setdefault("instances", [])
    g["health"] = {"interval": 2, "timeout": 1, "retries": 20, **(g.get("health") or {})}
    problems = check_scope(g["scope"], where)
    if g.get("strategy") not in STRATEGIES:
        problems.append(f"{where}: strategy {g.get('strategy')!r} must be one of {', '.join(STRATEGIES)}")
    problems += [f"{where}: when names {p}, which this manifest does not ship"
                 for p in g["when"] if p not in paths]
    if not all(isinstance(g["health"][k], (int, float)) and g["health"][k] > 0
               for k in ("interval", "timeout", "retries")):
        problems.append(f"{where}: health interval, timeout and retries must be positive numbers")
    if not g["instances"]:
        problems.append(f"{where}: needs at least one instance")
    for inst in g["instances"]:
        problems += check_instance(inst, where)
    if g.get("strategy") == "blue-green":
        problems += check_switch(g, where, paths)
    return problems


def check_instance(inst, where):
    if not isinstance(inst, dict) or not isinstance(inst.get("unit"), str) \
            or not UNIT_RE.match(inst["unit"]):
        return [f"{where}: every instance needs a valid unit name"]
    inst.setdefault("health", None)
    inst.setdefault("drain", None)
    if inst.get("port") is None and "@" in inst["unit"]:
        inst["port"] = inst["unit"].split("@", 1)[1].rsplit(".", 1)[0]
    problems = []
    if inst["health"] is not None:
        url = urllib.parse.urlsplit(str(inst["health"]))
        if url.scheme != "http" or url.hostname != "127.0.0.1":
            problems.append(f"{where}: health {inst['health']!r} must be an http://127.0.0.1 URL")
    drain = inst["drain"]
    if drain is not None and not (isinstance(drain, dict) and drain.get("kind") == "haproxy"
                                  and all(isinstance(drain.get(k), str) and drain[k]
                                          for k in ("socket", "backend", "server"))):
        problems.append(f"{where}: drain must be {{kind: haproxy, socket, backend, server}}")
    return problems


def check_switch(g, where, paths):
    sw = g.get("switch")
    problems = [] if len(g["instances"]) == 2 else [f"{where}: blue-green needs exactly two instances"]
    if not isinstance(sw, dict) or not isinstance(sw.get("template"), str) \
            or not isinstance(sw.get("reload"), list) or not sw["reload"]:
        return problems + [f"{where}: blue-green needs switch {{path, template, reload}}"]
    sw.setdefault("mode", "0644")
    sw.setdefault("owner", "root")
    sw.setdefault("group", sw["owner"])
    sw.setdefault("validate", None)
    problems += check_path(sw.get("path"), f"{where} switch")
    if sw.get("path") in paths:
        problems.append(f"{where}: the switch file {sw['path']} must not also be a manifest file")
    return problems


def file_bytes(f):
    """The exact bytes a manifest file entry describes."""
    if f.get("b64"):
        return base64.b64decode(f["content"])
    return f["content"].encode("utf-8")


def mask(manifest):
    """The manifest as stored: every file's content replaced by its sha256 digest, no secret
    values."""
    masked = json.loads(json.dumps(manifest))
    masked.pop("secret_values", None)
    for f in masked["files"]:
        f["sha256"] = hashlib.sha256(file_bytes(f)).hexdigest()
        del f["content"], f["b64"]
    return masked


def owned_units(manifest):
    """Every (scope, unit) a manifest starts, or restarts and ships the unit file of. A unit it
    only restarts (ssh.service after an sshd drop-in, the proxy after new certificates) belongs
    to the host: removing the manifest must never stop it."""
    shipped = {os.path.basename(f["path"]) for f in manifest.get("files", [])}
    pairs = [(u["scope"], u["unit"]) for u in manifest.get("units", [])]
    for g in manifest.get("restart", []):
        for i in g["instances"]:
            name = i["unit"]
            template = re.sub(r"@[^.]*\.", "@.", name)
            if name in shipped or template in shipped or any(f.startswith(name.rsplit(".", 1)[0] + ".") for f in shipped):
                pairs.append((g["scope"], name))
    return list(dict.fromkeys(pairs))


def stopped_on_removal(manifest, pairs):
    """PAIRS without the units the manifest says never to stop (`stop: false`): a finished
    oneshot that other units Require= (stopping it would stop them too)."""
    kept = {(u["scope"], u["unit"]) for u in manifest.get("units", []) if u.get("stop") is False}
    return [p for p in pairs if p not in kept]


def stored_manifest(state):
    """What the stored state of a NAME says is on the host: its manifest plus, when an apply
    failed before dropping them, the leftovers of the manifest before it."""
    if not state:
        return {"files": [], "units": [], "restart": [], "users": []}
    m, left = state["manifest"], state.get("leftover")
    if not left:
        return m
    files = {f["path"]: f for f in left["files"]} | {f["path"]: f for f in m["files"]}
    units = {(u["scope"], u["unit"]): u for u in left["units"]} | {(u["scope"], u["unit"]): u for u in m["units"]}
    groups = {g["group"]: g for g in left["restart"]} | {g["group"]: g for g in m["restart"]}
    users = {u["name"]: u for u in left.get("users", [])} | {u["name"]: u for u in m.get("users", [])}
    return {**m, "files": list(files.values()), "units": list(units.values()),
            "restart": list(groups.values()), "users": list(users.values())}


def by_scope(pairs):
    """Group (scope, unit) pairs into [(scope, [unit, ...])], keeping order."""
    groups = {}
    for scope, unit in pairs:
        groups.setdefault(scope, []).append(unit)
    return list(groups.items())


def groups_to_restart(manifest, previous, changed_paths):
    """Restart groups that are new, pending from a failed apply, or whose `when` files changed."""
    old_groups = {g["group"] for g in previous["manifest"]["restart"]} if previous else set()
    pending = set(previous.get("pending", [])) if previous else set()
    return [g for g in manifest["restart"]
            if g["group"] not in old_groups or g["group"] in pending
            or set(g["when"]) & set(changed_paths)]


def summary(name, changed, removed, restarted):
    done = ", ".join(f"{g}({s})" for g, s in restarted) or "none"
    return f"outpost {name}: {changed} changed, {removed} removed, restarted: {done}"


def probe(url, timeout):
    """GET url once; return (healthy, 'HTTP status: body' or 'connection error: ...')."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect)
    try:
        with opener.open(url, timeout=timeout) as resp:
            status, body = resp.status, resp.read(500)
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read(500)
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        return False, f"connection error: {getattr(e, 'reason', e)}"
    return 200 <= status < 300, f"HTTP {status}: {one_line(body.decode('utf-8', 'replace'), 500)}"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def haproxy_command(sock_path, command, timeout=5):
    """Send one command to haproxy's admin socket; return its answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(sock_path)
            s.sendall(command.encode() + b"\n")
            chunks = []
            while data := s.recv(65536):
                chunks.append(data)
    except OSError as e:
        raise AgentError(f"haproxy admin socket {sock_path}: {command!r} failed: {e}") from None
    return b"".join(chunks).decode("utf-8", "replace")


def haproxy_sessions(sock_path, backend, server):
    """Current sessions of BACKEND/SERVER, from `show stat`."""
    lines = haproxy_command(sock_path, "show stat").splitlines()
    header = lines[0].lstrip("# ").split(",") if lines else []
    for line in lines[1:]:
        row = dict(zip(header, line.split(",")))
        if row.get("pxname") == backend and row.get("svname") == server:
            return int(row.get("scur") or 0)
    raise AgentError(f"haproxy at {sock_path} has no server {backend}/{server}")


# ---------------------------------------------------------------------------------------------
# Directory fds: the pieces the agent's file operations are built from

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


# ---------------------------------------------------------------------------------------------
# The agent: everything with side effects

class Agent:
    """Applies and removes manifests. `root` prefixes every host path (tests use a temp dir);
    `run` executes argv lists (tests may record them instead)."""

    def __init__(self, root="", run=run_command, log=sys.stderr):
        self.root = root.rstrip("/")
        self.runner = run
        self.log_to = log
        self.ready_managers = set()
        self.live_stages = set()  # (dir, name) of this run's staging dirs: never swept
        self.secret_values, self.secret_re, self.kept_secrets_read = set(), None, False

    # -- basics --------------------------------------------------------------------------------
    def path(self, host_path):
        return self.root + host_path

    def log(self, message):
        """Progress on stderr. A closed pipe (the SSH session dropped) must not stop an apply
        halfway: the line is lost, the work goes on."""
        try:
            print(f"  {self.redact(message)}", file=self.log_to, flush=True)
        except OSError:
            pass

    # -- secret values: never printed ----------------------------------------------------------
    # The manifest on stdin lists its secret values (`secret_values`: each as given and as written
    # into its file), and so do the full manifests kept for repair and rollback. A tool's output
    # (a validator quoting the line it rejects, `nginx -t`, `haproxy -c`, `caddy validate`,
    # `sshd -t` all do), a health response, haproxy's answers and journal lines pass through
    # redact() before they reach an error, a progress line, the agent log or stdout.
    def learn_secrets(self, values):
        """Add secret VALUES (and the lines of multi-line ones) to what redact() hides."""
        pieces = set()
        for value in values:
            if value:
                pieces.add(value)
                lines = [line.strip() for line in value.splitlines()]
                pieces.update(line for line in lines if len(lines) > 1 and len(line) >= SECRET_PIECE)
        if not pieces <= self.secret_values:
            self.secret_values |= pieces
            self.secret_re = re.compile("|".join(re.escape(p) for p in sorted(
                self.secret_values, key=lambda p: (-len(p), p))))

    def redact(self, text):
        """TEXT with every known secret value replaced by HIDDEN."""
        if not self.kept_secrets_read:
            self.kept_secrets_read = True
            for which in ("applied", "previous"):
                folder = self.path(f"{STATE_DIR}/{which}")
                for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
                    kept = self.load_json(f"{STATE_DIR}/{which}/{entry}") or {}
                    with contextlib.suppress(ValueError, TypeError, AttributeError):
                        values = json.loads(kept.get("manifest") or "{}").get("secret_values") or []
                        self.learn_secrets([v for v in values if isinstance(v, str)])
        text = str(text)
        return self.secret_re.sub(HIDDEN, text) if self.secret_re else text

    def run(self, argv, check=True, **kwargs):
        """Run argv through the runner; (exit code, its output with secrets hidden, raw stdout).
        The raw stdout is for parsing only, never for a message."""
        code, output, stdout = self.runner(argv, **kwargs)
        output = self.redact(output)
        if check and code != 0:
            raise AgentError(f"`{shlex.join(argv)}` failed (exit {code}): {one_line(output)}")
        return code, output, stdout

    def systemctl(self, scope, *args, check=True):
        argv = ["systemctl"]
        if scope != "system":
            user = scope.split(":", 1)[1]
            self.wait_user_manager(user)
            argv += ["--user", "-M", f"{user}@"]
        return self.run(argv + list(args), check=check)

    # -- stored state ----------------------------------------------------------------------------
    @staticmethod
    def state_path(name):
        return f"{STATE_DIR}/manifests/{name}.json"

    def state_file(self, name):
        return self.path(self.state_path(name))

    def load_state(self, name):
        try:
            with open(self.state_file(name), encoding="utf-8") as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise AgentError(f"stored state {self.state_file(name)} is corrupt: {e}") from None

    def other_states(self, name):
        folder = self.path(f"{STATE_DIR}/manifests")
        names = sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json")) \
            if os.path.isdir(folder) else []
        return [s for n in names if n != name and (s := self.load_state(n))]

    def save_json(self, host_path, data):
        os.makedirs(os.path.dirname(self.path(host_path)), mode=0o700, exist_ok=True)
        staged = self.stage(host_path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode(),
                            0o600, 0, 0)
        try:
            self.commit(staged)
        finally:
            self.discard([staged])

    # -- files -----------------------------------------------------------------------------------
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
                # Both raw: the redacted output hides a secret key's lines, and the last base64 line
                # of an EC key (SEC1) holds the public point that the certificate's key shows too.
                _, _, cert_pub = self.run(["openssl", "x509", "-noout", "-pubkey", "-in", cert], check=False)
                code, _, key_pub = self.run(["openssl", "pkey", "-pubout", "-in", key], check=False)
                if code != 0 or not key_pub.strip() or key_pub.strip() != cert_pub.strip():
                    raise AgentError(f"refusing {s.host_path}: the private key "
                                     + ("cannot be read" if code != 0 else "does not match the certificate")
                                     + "; nothing was changed")

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

    # -- packages, users, dirs -----------------------------------------------------------------
    def ensure_packages(self, packages):
        if not packages:
            return []
        _, _, out = self.run(["dpkg-query", "-W", "-f=${Package}\t${db:Status-Status}\n", *packages],
                             check=False)
        installed = {line.split("\t")[0] for line in out.splitlines() if line.endswith("\tinstalled")}
        missing = [p for p in packages if p not in installed]
        if missing:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            apt = ["apt-get", "-o", f"DPkg::Lock::Timeout={APT_LOCK_WAIT}"]
            with self.step(f"installing packages {' '.join(missing)}"):
                self.run(apt + ["update", "-q"], timeout=APT_TIMEOUT, env=env)
                self.run(apt + ["install", "-y", "-q", *missing], timeout=APT_TIMEOUT, env=env)
            self.log(f"installed {' '.join(missing)}")
        return missing

    @contextlib.contextmanager
    def step(self, what):
        """Name the step an external command failed in. Packages and users come first in an
        apply: a failure there has changed no dir, file or unit, and the error says so."""
        try:
            yield
        except AgentError as e:
            raise AgentError(f"{what} failed ({UNTOUCHED}): {e}") from None

    def ensure_users(self, users):
        created = []
        for u in users:
            try:
                existing = pwd.getpwnam(u["name"])
            except KeyError:
                existing = None
            if existing is not None and existing.pw_gecos == USER_MARK and self.locked_by_outpost(u["name"]):
                # kept by an earlier removal: this manifest takes the user and its data back
                with self.step(f"unlocking user {u['name']}"):
                    self.run(["usermod", "--unlock", "--expiredate", "", "--shell", u["shell"], u["name"]])
                created.append(u["name"])
                self.log(f"unlocked user {u['name']}")
            if existing is not None and existing.pw_dir.rstrip("/") != u["home"].rstrip("/"):
                # The manifest's paths below the home were rendered for u["home"]; writing them
                # for an account whose home is elsewhere would put the files beside its real ones.
                raise AgentError(f"user {u['name']} exists with home {existing.pw_dir}, not {u['home']}: "
                                 "outpost does not take over an existing account; give the service a user: of its own")
            if existing is None:
                argv = ["useradd", "--create-home", "--home-dir", u["home"], "--shell", u["shell"],
                        "--comment", USER_MARK, "--user-group"]
                if u["system"]:
                    argv += ["--system", "--add-subids-for-system"]
                with self.step(f"creating user {u['name']}"):
                    self.run(argv + [u["name"]])
                created.append(u["name"])
                self.log(f"created user {u['name']}")
            if u["linger"] and not os.path.exists(self.path(f"/var/lib/systemd/linger/{u['name']}")):
                with self.step(f"enabling linger for {u['name']}"):
                    self.run(["loginctl", "enable-linger", u["name"]])
                self.log(f"enabled linger for {u['name']}")
        return created

    def wait_user_manager(self, user):
        """Wait (bounded) until USER's systemd manager and its bus are up."""
        if user in self.ready_managers:
            return
        uid = self.ids(user, "root", f"scope user:{user}")[0]
        bus = self.path(f"/run/user/{uid}/bus")
        deadline = time.monotonic() + USER_MANAGER_WAIT
        while True:
            state = self.run(["systemctl", "is-active", f"user@{uid}.service"], check=False)[2].strip()
            if state == "active" and os.path.exists(bus):
                break
            if time.monotonic() > deadline:
                raise AgentError(f"the systemd manager of {user} is not up after {USER_MANAGER_WAIT}s "
                                 f"(user@{uid}.service is {state or 'unknown'}, {bus} "
                                 f"{'exists' if os.path.exists(bus) else 'missing'}); the user needs "
                                 "linger: true and the host the dbus-user-session package")
            time.sleep(0.5)
        self.ready_managers.add(user)

    def user_manager_running(self, user):
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            return False
        return self.run(["systemctl", "is-active", f"user@{uid}.service"], check=False)[2].strip() == "active"

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

    # -- units -----------------------------------------------------------------------------------
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

    # -- restart plan ------------------------------------------------------------------------------
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
        for state in ("drain", "maint"):
            answer = self.redact(haproxy_command(d["socket"], f"set server {d['backend']}/{d['server']} state {state}"))
            if answer.strip():
                raise AgentError(f"haproxy refused to {state} {d['backend']}/{d['server']}: {one_line(answer)}")
        deadline = time.monotonic() + DRAIN_WAIT
        while (left := haproxy_sessions(d["socket"], d["backend"], d["server"])) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        self.log(f"drained {d['backend']}/{d['server']} at haproxy ({left} sessions left)")

    def undrain(self, d):
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
                self.remove_file(sw["path"])
            else:
                self.write_validated({**sw, "validate": None}, before, uid, gid)
            raise AgentError(f"switching {group['group']} to {inst['unit']} failed: "
                             f"`{shlex.join(sw['reload'])}` exited {code}: {one_line(output)}; "
                             f"{sw['path']} was restored")
        self.save_json(self.bluegreen_file(group["group"]),
                       {"live": inst["unit"], "port": inst.get("port"), "manifest": manifest_name})
        self.log(f"{group['group']}: proxy now routes to {inst['unit']}")

    def write_validated(self, sw, data, uid, gid):
        """Atomically replace the switch file, after its validate step passed on a staged copy."""
        staged = self.stage(sw["path"], data, int(sw["mode"], 8), uid, gid)
        try:
            if sw["validate"]:
                self.validate([{"argv": sw["validate"]}], [staged])
            self.commit(staged)
        finally:
            self.discard([staged])

    def load_json(self, host_path):
        try:
            with open(self.path(host_path), encoding="utf-8") as fh:
                return json.load(fh)
        except (FileNotFoundError, ValueError):
            return None

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

    # -- the subcommands ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self):
        """Serialize agents on this host (Pulumi runs several Commands at once); bounded wait."""
        os.makedirs(self.path(STATE_DIR), mode=0o700, exist_ok=True)
        fd = os.open(self.path(f"{STATE_DIR}/lock"), os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + LOCK_WAIT
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise AgentError(f"another outpost-apply held {STATE_DIR}/lock for "
                                         f"{LOCK_WAIT}s") from None
                    time.sleep(0.5)
            yield
        finally:
            os.close(fd)

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

    def save_state(self, name, state):
        try:
            self.save_json(self.state_path(name), {**state, "created_dirs": sorted(set(state["created_dirs"]))})
        except OSError as e:
            raise AgentError(f"could not save the state of {name} in {STATE_DIR}: {e.strerror}; "
                             "the next apply finishes this one") from None

    def say(self, line):
        """The final line on stdout; a deployer that went away (closed pipe) does not undo the work."""
        try:
            print(self.redact(line), flush=True)
        except OSError:
            pass

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
            self.remove_file(path)
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

    def paths_of_others(self, name):
        return {f["path"] for s in self.other_states(name) for f in s["manifest"]["files"]}

    def forget_group(self, group):
        """Remove what a blue-green group left behind: its switch file and its state."""
        if group["strategy"] != "blue-green":
            return 0
        self.remove_file(self.bluegreen_file(group["group"]))
        return int(self.remove_file(group["switch"]["path"]))

    # -- originals: what was on the host before a manifest overwrote it ----------------------------
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
            count += sum(self.remove_tree(p) for p in m.get("scratch", []) if p not in still)
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
        self.remove_file(f"{STATE_DIR}/lock")
        self.remove_empty_dirs([f"{STATE_DIR}/manifests", f"{STATE_DIR}/bluegreen", ORIGINALS_DIR, STATE_DIR])
        # outpost's own directory, when empty: whoever made it (an operator placing the pinned
        # litestream binary there before the first apply), nothing of outpost's stays behind
        self.remove_empty_dirs([SCRATCH_ROOTS[0].rstrip("/")])

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

    def retire_user(self, user, purge):
        """Stop a user the agent created (linger, manager, processes). Without purge the user
        stays, locked (`usermod --lock --expiredate 1`, shell nologin), with its home and data, so
        file ownership stays meaningful and a later apply can take it back; with purge it is
        deleted with its home and podman storage. Returns "deleted", "kept" or None (a user the
        agent did not create, or none at all)."""
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            return None
        if pw.pw_gecos != USER_MARK:
            self.log(f"kept user {user}: not created by outpost")
            return None
        uid = pw.pw_uid
        self.run(["loginctl", "disable-linger", user], check=False)
        self.run(["systemctl", "stop", f"user@{uid}.service", f"user-runtime-dir@{uid}.service"],
                 check=False)
        self.kill_processes(uid)
        if not purge:
            self.run(["usermod", "--lock", "--expiredate", "1", "--shell", NOLOGIN, user])
            self.log(f"kept user {user} locked, and its data in {pw.pw_dir} (purge: true deletes them)")
            return "kept"
        self.run(["userdel", "--remove", user], check=False)
        try:
            pwd.getpwnam(user)
            raise AgentError(f"userdel could not delete {user}")
        except KeyError:
            pass
        for leftover in (f"/tmp/storage-run-{uid}", f"/tmp/podman-run-{uid}",
                         f"/var/tmp/containers-user-{uid}"):  # podman's places outside the home
            if os.path.isdir(self.path(leftover)):
                self.run(["rm", "-rf", "--one-file-system", "--", self.path(leftover)])
        if os.path.isdir(self.path(pw.pw_dir)):
            self.log(f"warning: userdel left {pw.pw_dir} behind")
        self.log(f"deleted user {user} and its home {pw.pw_dir}")
        return "deleted"

    def locked_by_outpost(self, user):
        """True when USER's account expired on 1970-01-02: how retire_user locks a kept user."""
        try:
            with open(self.path("/etc/shadow"), encoding="utf-8") as fh:
                for line in fh:
                    fields = line.rstrip("\n").split(":")
                    if fields[0] == user and len(fields) > 7:
                        return fields[7] == "1"
        except FileNotFoundError:
            pass
        return False

    def kill_processes(self, uid, wait=15):
        """SIGTERM, then SIGKILL, every process of uid; bounded."""
        deadline, sig = time.monotonic() + wait, signal.SIGTERM
        while pids := processes_of(uid):
            if time.monotonic() > deadline:
                if sig == signal.SIGKILL:
                    raise AgentError(f"processes {pids} of uid {uid} survived SIGKILL")
                sig, deadline = signal.SIGKILL, time.monotonic() + 5
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(0.3)

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

    # -- operating what runs: the agent log, kept versions, report, drift, repair, rollback -------
    # The log (/var/lib/outpost/agent.log, 0600) gets one line per apply, remove, repair and
    # rollback: time, operation, name, token, what changed and restarted, outcome; never file
    # content, never a tool's output. The full manifests last applied and the one before are kept
    # root-only under applied/ and previous/ (the secrets in them are the ones already on disk),
    # so that repair and rollback can re-apply them through apply_locked.
    LOG_PATH = f"{STATE_DIR}/agent.log"

    def journal(self, op, name, token, line=None, error=None):
        """Append one line to the agent log (created 0600; never followed through a symlink)."""
        if op == "remove" and not os.path.isdir(self.path(STATE_DIR)):
            return  # the last manifest went and took the agent's state with it
        counts = re.match(r"outpost \S+: (\d+) changed, (\d+) removed, restarted: (.*)$", line or "")
        if counts:
            what = f"changed={counts[1]} removed={counts[2]} restarted={counts[3].replace(' ', '')}"
        elif removal := re.search(r"removed (\d+) files and dirs, stopped (\d+) units", line or ""):
            what = f"removed={removal[1]} stopped={removal[2]}"
        elif line:
            what = "removed=0 " + ("note=a-successor-owns-it" if "successor" in line else "note=nothing-stored")
        else:
            what = "changed=? restarted=?"
        # the failure's first clause only: what failed, never a tool's output or a response body
        outcome = "ok" if error is None else "failed: " + str(error).split(":", 1)[0][:160]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        entry = self.redact(f"{stamp} {op} {name} token={token} {what} outcome={outcome}") + "\n"
        os.makedirs(self.path(STATE_DIR), mode=0o700, exist_ok=True)
        fd = os.open(self.path(self.LOG_PATH),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, entry.encode())
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def journaled(self, op, name, token):
        """Log the outcome of the operation in the block; the block sets result["line"]."""
        result = {}
        try:
            yield result
        except AgentError as e:
            self.journal(op, name, token, error=e)
            raise
        self.journal(op, name, token, line=result.get("line"))
        if op == "remove":
            self.forget_kept(name)

    def log_entries(self):
        """The agent log parsed: [{time, op, name, token, ..., outcome}], oldest first."""
        try:
            with open(self.path(self.LOG_PATH), encoding="utf-8", errors="replace") as fh:
                lines = fh.read().splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            head, _, outcome = line.partition(" outcome=")
            parts = head.split(" ")
            if len(parts) < 3:
                continue
            entry = {"time": parts[0], "op": parts[1], "name": parts[2], "outcome": outcome}
            entry.update(p.split("=", 1) for p in parts[3:] if "=" in p)
            entries.append(entry)
        return entries

    def kept_path(self, which, name):
        return f"{STATE_DIR}/{which}/{name}.json"

    def keep_applied(self, name, token, text):
        """Remember the full manifest just applied; the one it replaces becomes `previous`."""
        current = self.load_json(self.kept_path("applied", name))
        if current and current.get("token") != token:
            self.save_json(self.kept_path("previous", name), current)
        self.save_json(self.kept_path("applied", name), {"token": token, "manifest": text})

    def forget_kept(self, name):
        """After a remove: drop the kept versions; with no manifest left, the log and dirs too."""
        if self.load_state(name) is not None:
            return  # a successor owns NAME: nothing was removed
        for which in ("applied", "previous"):
            self.remove_file(self.kept_path(which, name))
        if not self.other_states(None):
            self.remove_file(self.LOG_PATH)
            self.remove_empty_dirs([f"{STATE_DIR}/applied", f"{STATE_DIR}/previous", STATE_DIR])

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

    def owner_token(self, name, token):
        """The token a remove must present: TOKEN, or the stored one when NAME was rolled back
        from TOKEN (the stack's resource still owns it)."""
        state = self.load_state(name)
        if state and token == state.get("rolled_back_from"):
            return state["token"]
        return token

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

    def scope_states(self, pairs):
        """{(scope, unit): systemctl show properties}; a user scope whose manager is down → {}."""
        states = {}
        for scope, names in by_scope(pairs):
            if scope != "system" and not self.user_manager_running(scope.split(":", 1)[1]):
                states.update({(scope, n): {"ActiveState": "manager-down"} for n in names})
                continue
            states.update({(scope, n): s for n, s in self.unit_states(scope, names).items()})
        return states

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


def ancestors(path):
    parts = []
    while (path := os.path.dirname(path)) != "/":
        parts.append(path)
    return parts


def name_of(lookup, ident):
    """A user or group name from its id (the number as text when it has none)."""
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def processes_of(uid):
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
            except FileNotFoundError:
                pass
    return pids


USAGE = ("usage: outpost-apply apply NAME TOKEN < manifest.json | remove NAME TOKEN"
         " | restart NAME | switch GROUP | status | report --json | drift --json [--repair]"
         " | repair NAME | rollback NAME | logs NAME [--since=WHEN] [--lines=N] [--follow]")


def main(argv=None, agent=None):
    args = sys.argv[1:] if argv is None else argv
    agent = agent or Agent()
    try:
        if len(args) == 3 and args[0] in ("apply", "remove"):
            _, name, token = args
            if not NAME_RE.match(name) or not TOKEN_RE.match(token):
                raise AgentError(f"bad NAME {name!r} or TOKEN (NAME: [a-z0-9][a-z0-9-]*)")
            if args[0] == "apply":
                agent.apply(name, token, sys.stdin.read())
            else:
                agent.remove(name, token)
        elif len(args) == 2 and args[0] == "switch" and NAME_RE.match(args[1]):
            agent.switch(args[1])
        elif len(args) == 2 and args[0] == "restart" and NAME_RE.match(args[1]):
            agent.restart(args[1])
        elif args == ["status"]:
            agent.status()
        elif args == ["report", "--json"]:
            print(json.dumps(agent.report(), sort_keys=True), flush=True)
        elif args[:1] == ["drift"] and args[1:] in (["--json"], ["--json", "--repair"]):
            print(json.dumps(agent.drift(repair="--repair" in args), sort_keys=True), flush=True)
        elif len(args) == 2 and args[0] in ("repair", "rollback") and NAME_RE.match(args[1]):
            getattr(agent, args[0])(args[1])
        elif len(args) >= 2 and args[0] == "logs" and NAME_RE.match(args[1]):
            opts = dict(a.split("=", 1) for a in args[2:] if "=" in a)
            code = agent.unit_logs(args[1], since=opts.get("--since"), lines=opts.get("--lines", 200),
                                   follow="--follow" in args)
            return 0 if code in (0, None) else 1
        else:
            print(USAGE, file=sys.stderr)
            return 2
    except AgentError as e:
        print(f"outpost-apply: error: {agent.redact(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - one paragraph, never a traceback
        print(f"outpost-apply: unexpected {type(e).__name__}: {agent.redact(e)}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    # A dropped SSH session hangs up on the agent: finish the step at hand rather than die in
    # the middle of it (the state makes a later run converge either way).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    sys.exit(main())
