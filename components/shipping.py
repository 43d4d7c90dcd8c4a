"""Ships a host's rendered Manifests to it: one `remote.Command` per host, running the on-host
agent's `apply-host` with the host's bundle (every manifest and its token) on stdin.

Why one Command per host and not one per manifest: the engine's cost grows with the number of
resources far faster than with anything else (it re-serializes its whole snapshot after every step),
and a fleet of 200 hosts × 10 services was 5,000 resources that no machine could preview. The
agent applies only the manifests whose token changed, so one changed service still opens one SSH
session, to its host, and restarts only that service.

What the engine holds, and shows in `pulumi preview --diff`:
- `create` lists each manifest with its token, one comment line each, before the command itself:
  a change names its host (the resource) and its manifest (the line whose token moved); `delete`
  says when removing the host deletes data (users with purge).
- `stdin` is the bundle: canonical JSON, a Pulumi secret whenever any manifest holds a secret.
A token is its masked manifest's digest, so a no-change `pulumi up` sees byte-identical inputs and
runs nothing. The base manifest carries the agent; `create` runs that very agent out of stdin
(`_BOOT`), so a new host needs nothing installed and the agent always matches the bundle.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence

import pulumi
from pulumi_command import remote

from .render.agent import AGENT_PATH
from .render.manifest import Manifest, encoded_digest

COMMAND_TYPE = "command:remote:Command"
# A Command's outputs that hold what the host said or was sent: secret in the state (encrypted
# with the stack's passphrase) and masked in the CLI. stdout/stderr carry the agent's log and any
# tool's error text, which must never be readable from a state file or a CI log.
SECRET_OUTPUTS = ("stdin", "stdout", "stderr")

# Runs the agent carried inside the bundle's base manifest: the host's own copy may be missing (a
# new host) or older. Standard library only; the agent (a zipapp, so its entry is base64, `b64:
# true`) is written to a 0700 temporary directory and removed afterwards. This is the one file
# entry decoded outside the agent's manifest module (docs/manifest.md).
_BOOT = f"""\
import base64, json, os, subprocess, sys, tempfile
text = sys.stdin.read()
base = next(m["manifest"] for m in json.loads(text)["manifests"] if m["name"] == "base")
entry = next(f for f in base["files"] if f["path"] == {AGENT_PATH!r})
with tempfile.TemporaryDirectory() as tmp:
    agent = os.path.join(tmp, "outpost-apply.py")
    with open(agent, "wb") as out:
        out.write(base64.b64decode(entry["content"]))
    sys.exit(subprocess.run([sys.executable, agent] + sys.argv[1:], input=text.encode()).returncode)
"""


def token(masked: str) -> str:
    """The token for a manifest's masked encoding (`Manifest.encode()`)."""
    return encoded_digest(masked)[:20]


def purge_note(manifest: Manifest) -> str:
    purged = [u for u in manifest.users if u.purge]
    return ("  (purge: removing it DELETES " + ", ".join(f"user {u.name} with its home {u.home}" for u in purged)
            + " and their data)") if purged else ""


def create_command(host: str, entries: Sequence[tuple[Manifest, str]]) -> str:
    """The manifests and their tokens as comment lines, then the agent's `apply-host`."""
    width = max(len(m.name) for m, _ in entries)
    lines = [f"# outpost on {host}: each manifest and its token; the agent applies the ones that changed"]
    lines += [f"#   {m.name:<{width}}  {tok}{purge_note(m)}" for m, tok in entries]
    lines.append(shlex.join(["sudo", "-n", "python3", "-c", _BOOT, "apply-host", host]))
    return "\n".join(lines)


def delete_command(host: str, manifests: Sequence[Manifest]) -> str:
    """The agent's `remove-host`. When it deletes data (users with purge), a comment says so, so
    `pulumi preview --diff` shows it plainly on the Command that goes away."""
    notes = [f"#   {m.name}{purge_note(m)}" for m in manifests if purge_note(m)]
    head = [f"# outpost on {host}: removes every manifest" + (", and DELETES DATA:" if notes else "")]
    return "\n".join(head + notes + [shlex.join(["sudo", "-n", "python3", AGENT_PATH, "remove-host", host])])


def bundle_text(host: str, entries: Sequence[tuple[str, str, str]]) -> str:
    """The bundle for (name, token, manifest JSON text) entries: canonical JSON (docs/manifest.md)."""
    doc = {"format": 1, "host": host,
           "manifests": [{"name": n, "token": t, "manifest": json.loads(text)} for n, t, text in entries]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def stdin_for(host: str, entries: Sequence[tuple[Manifest, str, str]],
              secrets: Mapping[str, pulumi.Output[str]]) -> pulumi.Input[str]:
    """The bundle with every `<secret:NAME>` filled in; a secret Output if any was. ENTRIES are
    (manifest, token, masked encoding)."""
    names = sorted({s for m, _, _ in entries for s in m.secrets})
    if not names:
        return bundle_text(host, [(m.name, tok, masked) for m, tok, masked in entries])
    missing = [n for n in names if n not in secrets]
    if missing:
        raise ValueError(f"the manifests of {host} reference unknown secrets {missing}")

    def filled(values: list[str]) -> str:
        given = dict(zip(names, values))
        return bundle_text(host, [(m.name, tok, m.encode({n: given[n] for n in m.secrets}) if m.secrets else masked)
                                  for m, tok, masked in entries])

    return pulumi.Output.secret(pulumi.Output.all(*[secrets[n] for n in names]).apply(filled))


def ship_host(name: str, host: str, manifests: Sequence[Manifest], connection: remote.ConnectionArgs,
              secrets: Mapping[str, pulumi.Output[str]], parent: pulumi.Resource,
              depends_on: Sequence[pulumi.Resource] = ()) -> remote.Command:
    """The one Command that applies MANIFESTS (base first, in apply order) on HOST."""
    if not manifests or manifests[0].name != "base":
        raise ValueError(f"{host}: a host's manifests start with its base setup")
    entries = []
    for manifest in manifests:
        masked = manifest.encode()      # encoded once: the token's source and, without secrets, stdin
        entries.append((manifest, token(masked), masked))
    return remote.Command(
        name,
        connection=connection,
        create=create_command(host, [(m, tok) for m, tok, _ in entries]),
        delete=delete_command(host, manifests),
        stdin=stdin_for(host, entries, secrets),
        add_previous_output_in_env=False,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on),
                                    additional_secret_outputs=list(SECRET_OUTPUTS)),
    )
