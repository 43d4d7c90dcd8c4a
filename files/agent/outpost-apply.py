#!/usr/bin/env python3
"""outpost-apply: the on-host agent that makes a host match an outpost manifest.

Installed by the base setup at /usr/local/lib/outpost/outpost-apply.py and run as root
(`sudo -n python3 ...`) by every outpost `remote.Command`:

    outpost-apply apply NAME TOKEN < manifest.json   ensure packages, users, dirs, files and
                                                      units; remove what the previous manifest
                                                      of NAME had and this one drops; run the
                                                      restart plan; print one summary line
    outpost-apply remove NAME TOKEN                  undo everything manifest NAME set up,
                                                      unless a successor (other TOKEN) owns it
    outpost-apply restart NAME                       run stored manifest NAME's restart plan now
    outpost-apply switch GROUP                       flip a blue-green group to its other slot
    outpost-apply status                             list the stored manifests

The manifest format and the exact behaviour are documented in docs/manifest.md of the outpost
repository. Python 3 standard library only; every external command runs from an argv list,
every wait is bounded, failures end in one paragraph on stderr and a non-zero exit.
"""

import base64
import contextlib
import fcntl
import grp
import hashlib
import http.client
import json
import os
import pwd
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

STATE_DIR = "/var/lib/outpost"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9._:-]{1,256}$")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
UNIT_RE = re.compile(r"^[A-Za-z0-9:_.@\\-]+\.(service|socket|timer|path|target|mount)$")
MODE_RE = re.compile(r"^0?[0-7]{3,4}$")
STAGED_RE = re.compile(r"\{staged:([^}]*)\}")
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
COMMAND_TIMEOUT = 300
APT_TIMEOUT = 1800


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
    keys = ("format", "name", "packages", "users", "dirs", "files", "units", "validate", "restart")
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
    u.setdefault("shell", "/usr/sbin/nologin")
    return check_path(u["home"], where)


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
    return check_scope(u["scope"], where)


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
    """The manifest as stored: every file's content replaced by its sha256 digest."""
    masked = json.loads(json.dumps(manifest))
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
# The agent: everything with side effects

class Agent:
    """Applies and removes manifests. `root` prefixes every host path (tests use a temp dir);
    `run` executes argv lists (tests may record them instead)."""

    def __init__(self, root="", run=run_command, log=sys.stderr):
        self.root = root.rstrip("/")
        self.runner = run
        self.log_to = log
        self.ready_managers = set()

    # -- basics --------------------------------------------------------------------------------
    def path(self, host_path):
        return self.root + host_path

    def log(self, message):
        print(f"  {message}", file=self.log_to, flush=True)

    def run(self, argv, check=True, **kwargs):
        code, output, stdout = self.runner(argv, **kwargs)
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
        self.commit(staged)

    # -- files -----------------------------------------------------------------------------------
    def ids(self, owner, group, what):
        try:
            return pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid
        except KeyError:
            raise AgentError(f"{what}: owner {owner}:{group} does not exist on this host") from None

    def differs(self, host_path, data, mode, uid, gid):
        try:
            st = os.lstat(self.path(host_path))
        except FileNotFoundError:
            return True
        if stat.S_ISDIR(st.st_mode):
            raise AgentError(f"{host_path} is a directory, but the manifest ships a file there")
        if not stat.S_ISREG(st.st_mode) or (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) != (mode, uid, gid) \
                or st.st_size != len(data):
            return True
        with open(self.path(host_path), "rb") as fh:
            return fh.read() != data

    def make_parents(self, host_path, uid, gid, created):
        """Create the missing parent directories of host_path (0755, owned like the file)."""
        missing, parent = [], os.path.dirname(host_path)
        while not os.path.isdir(self.path(parent)):
            missing.append(parent)
            parent = os.path.dirname(parent)
        for d in reversed(missing):
            os.mkdir(self.path(d), 0o755)
            os.chown(self.path(d), uid, gid)
            created.append(d)
            self.log(f"created {d}/")

    def stage(self, host_path, data, mode, uid, gid):
        """Write data to a staging copy with the same file name beside host_path."""
        stage_dir = tempfile.mkdtemp(prefix=".outpost-stage-", dir=os.path.dirname(self.path(host_path)))
        staged = os.path.join(stage_dir, os.path.basename(host_path))
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chown(staged, uid, gid)
        os.chmod(staged, mode)
        return host_path, staged

    def commit(self, staged):
        host_path, staged_path = staged
        os.rename(staged_path, self.path(host_path))
        os.rmdir(os.path.dirname(staged_path))

    @staticmethod
    def discard(staged_list):
        """Remove staging copies that were not committed (and their staging dirs)."""
        for _, staged_path in staged_list:
            try:
                if os.path.lexists(staged_path):
                    os.unlink(staged_path)
                os.rmdir(os.path.dirname(staged_path))
            except OSError:
                pass

    def stage_files(self, files, created_dirs):
        """Stage every file whose content, mode or owner differs; return [(path, staged)]."""
        staged = []
        try:
            for f in files:
                data, mode = file_bytes(f), int(f["mode"], 8)
                uid, gid = self.ids(f["owner"], f["group"], f["path"])
                if self.differs(f["path"], data, mode, uid, gid):
                    self.make_parents(f["path"], uid, gid, created_dirs)
                    staged.append(self.stage(f["path"], data, mode, uid, gid))
        except BaseException:
            self.discard(staged)
            raise
        return staged

    def validate(self, steps, staged):
        """Run every validate step against the staged copies; raise on the first failure."""
        staged_of = dict(staged)
        for step in steps:
            argv = [STAGED_RE.sub(lambda m: staged_of.get(m.group(1), self.path(m.group(1))), a)
                    for a in step["argv"]]
            code, output, _ = self.run(argv, check=False)
            if code != 0:
                raise AgentError(f"validation failed, no file was changed: `{shlex.join(step['argv'])}` "
                                 f"exited {code}: {one_line(output)}")

    def remove_file(self, host_path):
        try:
            os.unlink(self.path(host_path))
        except FileNotFoundError:
            return False
        self.log(f"removed {host_path}")
        return True

    def remove_empty_dirs(self, dirs):
        """rmdir each dir that is empty, deepest first; return those removed."""
        removed = []
        for d in sorted(set(dirs), key=lambda p: (-p.count("/"), p)):
            try:
                os.rmdir(self.path(d))
            except FileNotFoundError:
                removed.append(d)
            except OSError:
                continue
            else:
                removed.append(d)
                self.log(f"removed {d}/")
        return removed

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
            self.run(["apt-get", "update", "-q"], timeout=APT_TIMEOUT, env=env)
            self.run(["apt-get", "install", "-y", "-q", *missing], timeout=APT_TIMEOUT, env=env)
            self.log(f"installed {' '.join(missing)}")
        return missing

    def ensure_users(self, users):
        created = []
        for u in users:
            try:
                existing = pwd.getpwnam(u["name"])
            except KeyError:
                existing = None
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
                self.run(argv + [u["name"]])
                created.append(u["name"])
                self.log(f"created user {u['name']}")
            if u["linger"] and not os.path.exists(self.path(f"/var/lib/systemd/linger/{u['name']}")):
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
            _, state, _ = self.run(["systemctl", "is-active", f"user@{uid}.service"], check=False)
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
        return self.run(["systemctl", "is-active", f"user@{uid}.service"], check=False)[1] == "active"

    def ensure_dirs(self, dirs, created_dirs):
        changed = 0
        for d in dirs:
            uid, gid = self.ids(d["owner"], d["group"], d["path"])
            real, mode = self.path(d["path"]), int(d["mode"], 8)
            if not os.path.isdir(real):
                self.make_parents(d["path"], 0, 0, created_dirs)
                os.mkdir(real, mode)
                created_dirs.append(d["path"])
            else:
                st = os.stat(real)
                if (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, uid, gid):
                    continue
            os.chown(real, uid, gid)
            os.chmod(real, mode)
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
        """Enable and start units; return (number of actions, {(scope, unit) started now})."""
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
                state = self.systemctl(group["scope"], "is-active", inst["unit"], check=False)[1]
                ok, last = state == "active", f"systemctl is-active: {state}"
            if ok:
                return None
        return last

    def drain(self, d):
        for state in ("drain", "maint"):
            answer = haproxy_command(d["socket"], f"set server {d['backend']}/{d['server']} state {state}")
            if answer.strip():
                raise AgentError(f"haproxy refused to {state} {d['backend']}/{d['server']}: {one_line(answer)}")
        deadline = time.monotonic() + DRAIN_WAIT
        while (left := haproxy_sessions(d["socket"], d["backend"], d["server"])) \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        self.log(f"drained {d['backend']}/{d['server']} at haproxy ({left} sessions left)")

    def undrain(self, d):
        answer = haproxy_command(d["socket"], f"set server {d['backend']}/{d['server']} state ready")
        if answer.strip():
            raise AgentError(f"haproxy refused to ready {d['backend']}/{d['server']}: {one_line(answer)}")
        self.log(f"{d['backend']}/{d['server']} is ready again at haproxy")

    def rolling(self, group, fresh):
        """Restart instances one at a time; stop at the first that does not become healthy."""
        acted = False
        for i, inst in enumerate(group["instances"]):
            drain = inst["drain"] if (group["scope"], inst["unit"]) not in fresh else None
            if drain:
                self.drain(drain)
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

    def blue_green(self, group, fresh, manifest_name):
        """Restart the idle slot, health-check it, then switch the proxy to it."""
        state = self.load_json(self.bluegreen_file(group["group"])) or {}
        a, b = group["instances"]
        target = b if state.get("live") == a["unit"] else a
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
        created = []
        self.make_parents(sw["path"], uid, gid, created)
        try:
            with open(self.path(sw["path"]), "rb") as fh:
                before = fh.read()
        except FileNotFoundError:
            before = None
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

    def run_group(self, group, fresh, manifest_name):
        """Run one restart group; return True when something was restarted or switched."""
        strategy, units = group["strategy"], [i["unit"] for i in group["instances"]
                                              if (group["scope"], i["unit"]) not in fresh]
        if strategy == "rolling":
            return self.rolling(group, fresh)
        if strategy == "blue-green":
            return self.blue_green(group, fresh, manifest_name)
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
        with self.locked():
            return self.apply_locked(name, token, manifest)

    def apply_locked(self, name, token, manifest):
        previous = self.load_state(name)
        old = previous["manifest"] if previous else {"files": [], "units": [], "restart": []}
        created_dirs = list(previous.get("created_dirs", [])) if previous else []
        changed = len(self.ensure_packages(manifest["packages"]))
        changed += len(self.ensure_users(manifest["users"]))
        changed += self.ensure_dirs(manifest["dirs"], created_dirs)
        changed_paths = self.write_files(manifest, created_dirs)
        removed_paths, removed = self.drop_leftovers(name, old, manifest, created_dirs)
        self.daemon_reload(changed_paths + removed_paths)
        # record what is on disk now, so that a failure below is retried and remove finds it
        todo = groups_to_restart(manifest, previous, changed_paths)
        state = {"format": 1, "name": name, "token": previous["token"] if previous else token,
                 "manifest": mask(manifest), "created_dirs": sorted(set(created_dirs)),
                 "pending": [g["group"] for g in todo]}
        self.save_json(self.state_path(name), state)
        actions, fresh = self.ensure_units(manifest["units"])
        restarted = self.run_restarts(name, todo, fresh, state)
        self.save_json(self.state_path(name), {**state, "token": token, "pending": []})
        line = summary(name, changed + len(changed_paths) + actions, removed, restarted)
        print(line, flush=True)
        return line

    def write_files(self, manifest, created_dirs):
        """Stage the files that differ, validate the staged copies, then move them into place;
        return their paths. A failed validation leaves every file as it was."""
        dirs_before = list(created_dirs)
        staged = self.stage_files(manifest["files"], created_dirs)
        try:
            self.validate(manifest["validate"] if staged else [], staged)
        except AgentError:
            self.discard(staged)
            self.remove_empty_dirs([d for d in created_dirs if d not in dirs_before])
            raise
        try:
            for s in staged:
                self.commit(s)
                self.log(f"wrote {s[0]}")
        finally:
            self.discard(staged)
        return [s[0] for s in staged]

    def drop_leftovers(self, name, old, manifest, created_dirs):
        """Stop units, remove files, switch files and created dirs that the previous manifest
        had and this one drops; return (removed file paths, number of things removed)."""
        new_units = set(owned_units(manifest))
        self.stop_units([p for p in owned_units(old) if p not in new_units])
        keep = {f["path"] for f in manifest["files"]} | self.paths_of_others(name)
        paths = [f["path"] for f in old["files"] if f["path"] not in keep]
        removed = sum(self.remove_file(p) for p in paths)
        new_groups = {g["group"] for g in manifest["restart"]}
        removed += sum(self.forget_group(g) for g in old["restart"] if g["group"] not in new_groups)
        needed = {d["path"] for d in manifest["dirs"]} | {os.path.dirname(f["path"]) for f in manifest["files"]}
        needed |= {a for p in needed for a in ancestors(p)}
        gone = self.remove_empty_dirs([d for d in created_dirs if d not in needed])
        created_dirs[:] = [d for d in created_dirs if d not in gone]
        return paths, removed + len(gone)

    def run_restarts(self, name, todo, fresh, state):
        """Run the restart groups in order; on failure, store the rest as pending and re-raise."""
        restarted = []
        for i, group in enumerate(todo):
            try:
                if self.run_group(group, fresh, name):
                    restarted.append((group["group"], group["strategy"]))
            except AgentError:
                self.save_json(self.state_path(name), {**state, "pending": state["pending"][i:]})
                raise
        return restarted

    def paths_of_others(self, name):
        return {f["path"] for s in self.other_states(name) for f in s["manifest"]["files"]}

    def forget_group(self, group):
        """Remove what a blue-green group left behind: its switch file and its state."""
        if group["strategy"] != "blue-green":
            return 0
        self.remove_file(self.bluegreen_file(group["group"]))
        return int(self.remove_file(group["switch"]["path"]))

    def remove(self, name, token):
        with self.locked():
            return self.remove_locked(name, token)

    def remove_locked(self, name, token):
        state = self.load_state(name)
        if state is None:
            line = f"outpost {name}: nothing stored under this name, nothing to remove"
        elif state.get("token") != token:
            line = f"outpost {name}: a successor owns {name} (the stored token differs), nothing removed"
        else:
            m, others = state["manifest"], self.other_states(name)
            units = owned_units(m)
            self.stop_units(units)
            keep = {f["path"] for s in others for f in s["manifest"]["files"]}
            paths = [f["path"] for f in m["files"] if f["path"] not in keep]
            count = sum(self.remove_file(p) for p in paths)
            count += sum(self.forget_group(g) for g in m["restart"])
            self.daemon_reload(paths, wait=False)
            self.reload_host_units(m, units, paths)
            listed = {u["name"] for s in others for u in s["manifest"]["users"]}
            users = [u["name"] for u in m["users"] if u["name"] not in listed and self.delete_user(u["name"])]
            os.unlink(self.state_file(name))
            if not others:
                self.forget_host()
            count += len(self.remove_empty_dirs(state.get("created_dirs", [])))
            line = (f"outpost {name}: removed {count} files and dirs, stopped {len(units)} units, "
                    f"deleted users: {', '.join(users) or 'none'}")
        print(line, flush=True)
        return line

    def forget_host(self):
        """The last manifest is gone: the agent's own state (its manifest and blue-green folders,
        its lock) goes too, so the base setup's removal leaves no trace of outpost. The lock may
        be unlinked while held: it only serializes agents that still have work here."""
        self.remove_file(f"{STATE_DIR}/lock")
        self.remove_empty_dirs([f"{STATE_DIR}/manifests", f"{STATE_DIR}/bluegreen", STATE_DIR])

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

    def delete_user(self, user):
        """Delete a user the agent created, with its home, manager, processes and podman storage."""
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            return False
        if pw.pw_gecos != USER_MARK:
            self.log(f"kept user {user}: not created by outpost")
            return False
        uid = pw.pw_uid
        self.run(["loginctl", "disable-linger", user], check=False)
        self.run(["systemctl", "stop", f"user@{uid}.service", f"user-runtime-dir@{uid}.service"],
                 check=False)
        self.kill_processes(uid)
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
        self.log(f"deleted user {user}")
        return True

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
            print(line, flush=True)
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
        print(line, flush=True)
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


def ancestors(path):
    parts = []
    while (path := os.path.dirname(path)) != "/":
        parts.append(path)
    return parts


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
         " | restart NAME | switch GROUP | status")


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
        else:
            print(USAGE, file=sys.stderr)
            return 2
    except AgentError as e:
        print(f"outpost-apply: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - one paragraph, never a traceback
        print(f"outpost-apply: unexpected {type(e).__name__}: {e}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
