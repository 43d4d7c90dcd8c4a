"""The offline plan: every file each host would get, and every resource the program would register.

`write_plan(stack_name, out)` writes `out/hosts/<host>/<absolute path>` for each rendered file
(secrets as `<secret:NAME>` placeholders) and `out/plan.json`. No Pulumi CLI, cloud or network:
resources come from running the program under mocks. Byte-identical across runs.
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import shutil
from pathlib import Path
from typing import Any

from .load import load_file
from .program import ROOT, Registered, run_program, stack_config
from .render import render_stack
from .render.manifest import File, Manifest

SECRET = "<secret>"


def _name_of(urn: str | None) -> str | None:
    return urn.rsplit("::", 1)[-1] if urn else None


def _is_stack(urn: str | None) -> bool:
    return not urn or urn.rsplit("::", 2)[-2].split("$")[-1] == "pulumi:pulumi:Stack"


def _masked_inputs(res: Registered) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for key, value in sorted(res.inputs.items()):
        if key == "stdin" and isinstance(value, str):
            bundle = json.loads(value)
            inputs[key] = {"host": bundle["host"],
                           "manifests": {m["name"]: m["token"] for m in bundle["manifests"]},
                           "sha256": hashlib.sha256(value.encode()).hexdigest()}
        elif key == "connection" and isinstance(value, dict):
            inputs[key] = {k: (SECRET if k == "privateKey" else v) for k, v in sorted(value.items())}
        elif key in res.secret_inputs:
            inputs[key] = SECRET
        else:
            inputs[key] = value
    return inputs


def resources_document(registered: list[Registered]) -> list[dict[str, Any]]:
    out = []
    for res in sorted(registered, key=lambda r: r.urn):
        out.append({
            "type": res.type,
            "name": res.name,
            "parent": None if _is_stack(res.parent) else _name_of(res.parent),
            "protect": res.protect,
            "depends_on": sorted(_name_of(u) for u in res.depends_on),
            "inputs": _masked_inputs(res),
        })
    return out


def manifest_document(manifest: Manifest) -> dict[str, Any]:
    doc = manifest.to_json()
    files = {}
    for f in doc.pop("files"):
        if "agent_sha256" not in f:        # the agent is already named by its digest
            f["sha256"] = hashlib.sha256(f.pop("content").encode()).hexdigest()
        files[f.pop("path")] = f
    doc["files"] = files
    doc["secrets"] = list(manifest.secrets)
    doc["restarts"] = dict(sorted(manifest.restarts.items()))
    if manifest.restores:
        doc["restores"] = manifest.restores
    return doc


def give_mode_and_owner(target: Path, f: File) -> None:
    """TARGET gets the mode F will have on the host (a reviewer sees 0600 secrets, 0755 scripts)
    and, when this runs as root and the account exists here, its owner and group too; plan.json
    records both either way."""
    os.chmod(target, int(f.mode, 8))
    if os.geteuid() != 0:
        return
    try:
        uid, gid = pwd.getpwnam(f.owner).pw_uid, grp.getgrnam(f.group).gr_gid
    except KeyError:
        return  # a service user the host will have and this machine doesn't
    os.chown(target, uid, gid)


def write_plan(stack_name: str, out: Path, project_dir: Path = ROOT) -> dict[str, Any]:
    stack = load_file(project_dir / f"Pulumi.{stack_name}.yaml")
    rendered = render_stack(stack)
    registered = run_program(stack_name, stack_config(stack_name, project_dir=project_dir))

    hosts_dir = out / "hosts"
    if hosts_dir.exists():
        shutil.rmtree(hosts_dir)
    for host, manifests in rendered.items():
        (hosts_dir / host).mkdir(parents=True, exist_ok=True)
        for manifest in manifests:
            for f in manifest.files:
                target = hosts_dir / host / f.path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(f.content, bytes):
                    target.write_bytes(f.content)
                else:
                    target.write_text(f.content)
                give_mode_and_owner(target, f)
    plan = {
        "stack": stack_name,
        "hosts": {host: {m.name: manifest_document(m) for m in manifests}
                  for host, manifests in rendered.items()},
        "resources": resources_document(registered),
    }
    (out / "plan.json").write_text(json.dumps(plan, indent=2, sort_keys=True) + "\n")
    return plan
