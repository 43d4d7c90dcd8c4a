"""Host groups, `outpost:groups`: many hosts from one entry, for fleets that would not fit one by
one (the language host hands the program its whole config in one environment variable, and Linux
refuses one over 128 KiB: about 70 hosts written out in full).

    outpost:groups:
      web:                                # members web-1 ... web-50
        count: 50
        host: {provider: hcloud, type: cx22, location: hel1, role: web}
        networks: {internal: 10.0.1.10}   # member 1's address; each next member the next address
      edge:                               # named members, each with its own keys over `host`
        host: {provider: static, user: root}
        members:
          edge-a: {address: 203.0.113.10, host_key: "ssh-ed25519 AAAA..."}
          edge-b: {address: 203.0.113.11, host_key: "ssh-ed25519 AAAA..."}

A group's name stands for all its members wherever a list of hosts is asked for
(`services.<name>.hosts`, `geodns.records[i].pools.<pool>`); a member is also a host by its own name.
`expand` turns the groups into the long form (`outpost:hosts` entries and host lists written out)
before anything is validated, so everything after it, every check and renderer, sees exactly what
the same stack written host by host would give; `origin` maps a problem's key path in that long
form back to the key the user wrote.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from typing import Any

from .problem import KeyProblem

GROUP_KEYS = ("count", "members", "host", "networks")
MAX_MEMBERS = 1000
LIST_PATH = re.compile(r"^(services\.[^.\[]+\.hosts|geodns\.records\[\d+\]\.pools\.[^.\[]+)\[(\d+)\](.*)$")


class Expanded:
    """The long form of a raw `outpost:*` mapping, and where each generated key came from."""

    def __init__(self, raw: dict[str, Any]):
        self.raw = raw
        # member → (key path of its group, its own keys' key path or None, the keys it has of its own)
        self.hosts: dict[str, tuple[str, str | None, frozenset[str]]] = {}
        self.lists: dict[str, list[int]] = {}              # list key path → index written, per index

    def origin(self, path: str) -> str:
        """A key path in the long form → the key path the user wrote."""
        if path.startswith("hosts."):
            member, _, rest = path[len("hosts."):].partition(".")
            if member in self.hosts:
                group, own_path, own = self.hosts[member]
                key = re.split(r"[.\[]", rest, maxsplit=1)[0]
                if own_path and key in own:
                    return f"{own_path}.{rest}"
                if key == "networks" and rest.count(".") >= 1 and "networks" not in own:
                    return f"{group}.{rest}"
                return f"{group}.host" + (f".{rest}" if rest else "")
        m = LIST_PATH.match(path)
        if m and m.group(1) in self.lists:
            written = self.lists[m.group(1)]
            index = int(m.group(2))
            return f"{m.group(1)}[{written[index] if index < len(written) else index}]{m.group(3)}"
        return path


def expand(raw: dict[str, Any]) -> Expanded:
    """RAW (the `outpost:*` keys without the namespace) with `groups` written out. Raises
    KeyProblem for a group that can't be expanded (the model then checks what it made)."""
    groups = raw.get("groups")
    if groups is None:
        return Expanded(raw)
    if not isinstance(groups, dict):
        raise KeyProblem("groups", "must be a mapping of group name → {count or members, host, networks}")
    out = copy.deepcopy({k: v for k, v in raw.items() if k != "groups"})
    hosts = out.setdefault("hosts", {})
    if not isinstance(hosts, dict):
        return Expanded(raw)           # the model says what is wrong with outpost:hosts
    expanded = Expanded(out)
    members_of: dict[str, list[str]] = {}
    for name, group in groups.items():
        members_of[name] = _members(name, group, hosts, expanded)
    for path, names in _host_lists(out):
        written, flat = [], []
        for i, host in enumerate(names):
            for member in members_of.get(host, [host]) if isinstance(host, str) else [host]:
                written.append(i)
                flat.append(member)
        if flat != names:
            names[:] = flat
            expanded.lists[path] = written
    return expanded


def _members(name: str, group: Any, hosts: dict[str, Any], expanded: Expanded) -> list[str]:
    where = f"groups.{name}"
    if not isinstance(group, dict):
        raise KeyProblem(where, "must be a mapping with count or members, and host")
    unknown = sorted(set(group) - set(GROUP_KEYS))
    if unknown:
        raise KeyProblem(f"{where}.{unknown[0]}", f"unknown key; valid keys here: {', '.join(GROUP_KEYS)}")
    if name in hosts:
        raise KeyProblem(where, f"{name!r} is also in outpost:hosts; a group's name stands for its members "
                                "and may not be a host's name")
    template = group.get("host")
    if not isinstance(template, dict):
        raise KeyProblem(f"{where}.host", "required: the keys every member has, like {provider: hcloud, type: cx22}")
    count, named = group.get("count"), group.get("members")
    if (count is None) == (named is None):
        raise KeyProblem(where, "give either count (members NAME-1 ... NAME-count) or members (by name)")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_MEMBERS:
            raise KeyProblem(f"{where}.count", f"{count!r} is not a number of hosts from 1 to {MAX_MEMBERS}")
        members = {f"{name}-{i}": ({}, f"{where}.host") for i in range(1, count + 1)}
    else:
        if not isinstance(named, dict) or not named:
            raise KeyProblem(f"{where}.members", "must be a mapping of member name → its own keys (or {})")
        members = {}
        for member, own in named.items():
            if own is not None and not isinstance(own, dict):
                raise KeyProblem(f"{where}.members.{member}", "must be a mapping of the member's own keys (or {})")
            members[member] = (own or {}, f"{where}.members.{member}")
    networks = group.get("networks") or {}
    if not isinstance(networks, dict):
        raise KeyProblem(f"{where}.networks", "must be a mapping of network name → member 1's address")
    for index, (member, (own, origin)) in enumerate(members.items()):
        if member in hosts:
            raise KeyProblem(origin if count is None else where,
                             f"member {member!r} is already a host (in outpost:hosts or another group)")
        host = {**copy.deepcopy(template), **copy.deepcopy(own)}
        if networks:
            host["networks"] = {**{net: _nth(f"{where}.networks.{net}", first, index)
                                   for net, first in networks.items()}, **(host.get("networks") or {})}
        hosts[member] = host
        expanded.hosts[member] = (where, origin if count is None else None, frozenset(own))
    return list(members)


def _nth(where: str, first: Any, index: int) -> str:
    try:
        return str(ipaddress.ip_address(str(first)) + index)
    except (ValueError, ipaddress.AddressValueError):
        raise KeyProblem(where, f"{first!r} is not an IP address like 10.0.1.10 (member 1's; each next "
                                "member gets the next address)") from None


def _host_lists(raw: dict[str, Any]):
    """(key path, list) for every list of host names in RAW."""
    for name, service in (raw.get("services") or {}).items() if isinstance(raw.get("services"), dict) else ():
        if isinstance(service, dict) and isinstance(service.get("hosts"), list):
            yield f"services.{name}.hosts", service["hosts"]
    geodns = raw.get("geodns")
    records = geodns.get("records") if isinstance(geodns, dict) else None
    for i, record in enumerate(records if isinstance(records, list) else []):
        pools = record.get("pools") if isinstance(record, dict) else None
        for pool, hosts in (pools.items() if isinstance(pools, dict) else ()):
            if isinstance(hosts, list):
                yield f"geodns.records[{i}].pools.{pool}", hosts
