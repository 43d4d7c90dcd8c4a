"""Manifest loading: the JSON on stdin parsed, checked and given its defaults, and the pure views
the layers above take of a manifest (masked for the state, the units it owns, the restart groups
an apply must run, the summary line).

Pure: touches neither the host nor the process. The only module that decodes a file entry's
content (`file_bytes`): how file contents travel in the manifest is decided here alone.
"""

import base64
import hashlib
import json
import os
import re
import sys
import urllib.parse

from .base import AgentError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
TOKEN_RE = re.compile(r"^[A-Za-z0-9._:-]{1,256}$")
PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
UNIT_RE = re.compile(r"^[A-Za-z0-9:_.@\\-]+\.(service|socket|timer|path|target|mount)$")
MODE_RE = re.compile(r"^0?[0-7]{3,4}$")
STAGED_RE = re.compile(r"\{staged:([^}]*)\}")
NOLOGIN = "/usr/sbin/nologin"
STRATEGIES = ("restart", "reload", "rolling", "blue-green")
# Where a manifest's `scratch` may point: what its own programs create on the host (a fetched
# binary, a cache), deleted with the last manifest that lists it.
SCRATCH_ROOTS = ("/usr/local/lib/outpost/", "/var/cache/outpost-")


def load_bundle(text, host):
    """The host bundle on stdin (`apply-host`): [(name, token, manifest text)] in the order they
    apply; raise AgentError listing every problem. Each manifest's text is its canonical JSON (what
    `apply NAME TOKEN` would read on stdin), checked by load_manifest when it applies."""
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise AgentError(f"the host bundle on stdin is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != 1 or not isinstance(doc.get("manifests"), list):
        raise AgentError("the host bundle on stdin must be {\"format\": 1, \"host\": ..., \"manifests\": [...]}")
    problems = [] if doc.get("host") == host else [f"host is {doc.get('host')!r} but the command line says {host!r}"]
    entries, seen = [], set()
    for i, entry in enumerate(doc["manifests"]):
        if not isinstance(entry, dict) or set(entry) != {"name", "token", "manifest"}:
            problems.append(f"manifests[{i}] must be {{name, token, manifest}}")
            continue
        name, token = entry["name"], entry["token"]
        if not (isinstance(name, str) and NAME_RE.match(name)) or not (isinstance(token, str) and TOKEN_RE.match(token)):
            problems.append(f"manifests[{i}]: bad name {name!r} or token")
        elif name in seen:
            problems.append(f"manifests[{i}]: {name} appears twice")
        seen.add(name)
        entries.append((name, token, json.dumps(entry["manifest"], sort_keys=True, separators=(",", ":"),
                                                ensure_ascii=False)))
    if "base" not in seen:
        problems.append("the base manifest is missing: every host bundle starts with it")
    if problems:
        raise AgentError("bad host bundle: " + "; ".join(problems))
    return entries


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
            "secret_values", "scratch", "dynamic_users")
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
    for i, d in enumerate(m["dynamic_users"]):
        if not (isinstance(d, dict) and isinstance(d.get("name"), str) and USER_RE.match(d["name"])
                and set(d) <= {"name", "key"} and isinstance(d.get("key", ""), str)):
            problems.append(f"dynamic_users[{i}]: needs a valid name (and optionally the key that sets it)")
    for i, d in enumerate(m["dirs"]):
        problems += check_owned(d, f"dirs[{i}]", "0755", ("path", "mode", "owner", "group"))
    for i, f in enumerate(m["files"]):
        problems += check_owned(f, f"files[{i}]", "0644",
                                ("path", "mode", "owner", "group", "content", "b64", "agent_sha256"))
        if isinstance(f, dict) and "agent_sha256" in f:
            problems += take_own_bytes(f, f"files[{i}]")
        elif isinstance(f, dict):
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
    if not isinstance(u.get("key", ""), str):
        problems.append(f"{where}: key must be the stack key that names the user")
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
    haproxy = isinstance(drain, dict) and drain.get("kind") == "haproxy" \
        and all(isinstance(drain.get(k), str) and drain[k] for k in ("socket", "backend", "server"))
    port = isinstance(drain, dict) and drain.get("kind") == "port" and set(drain) <= {"kind", "port", "to"} \
        and all(isinstance(drain.get(k), int) and not isinstance(drain[k], bool) and 1 <= drain[k] <= 65535
                for k in ("port", "to") if k in drain or k == "port")
    if drain is not None and not (haproxy or port):
        problems.append(f"{where}: drain must be {{kind: haproxy, socket, backend, server}} or {{kind: port, port, to}}")
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


# The zipapp this agent runs from, as the manifest that installs it names it (by sha256, not by
# content, so that the engine never holds its bytes: components/shipping.py). Tests set the bytes.
OWN_ZIPAPP = None


def own_zipapp():
    if OWN_ZIPAPP is not None:
        return OWN_ZIPAPP
    with open(sys.argv[0], "rb") as fh:
        return fh.read()


def take_own_bytes(f, where):
    """A file entry that is the agent itself ({"agent_sha256": ...}, no content) gets the running
    agent's bytes as its content, when they are the ones it names."""
    if set(f) & {"content", "b64"}:
        return [f"{where}: agent_sha256 comes without content"]
    try:
        own = own_zipapp()
    except OSError as e:
        return [f"{where}: the agent cannot read its own zipapp {sys.argv[0]!r}: {e.strerror}"]
    if hashlib.sha256(own).hexdigest() != f["agent_sha256"]:
        return [f"{where}: installs the agent {str(f['agent_sha256'])[:16]}..., but the agent running is "
                f"{hashlib.sha256(own).hexdigest()[:16]}...: only the agent itself can install itself"]
    del f["agent_sha256"]
    f.update(content=base64.b64encode(own).decode(), b64=True)
    return []


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
