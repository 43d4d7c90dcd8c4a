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
runs nothing. The agent itself is not in stdin: `<host>-agent` uploads its zipapp as a file asset
(the engine holds its hash) when it changes, the base manifest names it by sha256, and `create`
runs exactly that agent (`_BOOT`), so a new host needs nothing installed.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence

import pulumi
from pulumi_command import remote

from .render.agent import AGENT_PATH, UPLOAD_PATH, agent_digest, agent_file
from .render.manifest import Manifest, encoded_digest

COMMAND_TYPE = "command:remote:Command"
# A Command's outputs that hold what the host said or was sent: secret in the state (encrypted
# with the stack's passphrase) and masked in the CLI. stdout/stderr carry the agent's log and any
# tool's error text, which must never be readable from a state file or a CI log.
SECRET_OUTPUTS = ("stdin", "stdout", "stderr")

# Runs the agent this bundle names by its sha256 (argv: HOST ADMIN SHA256): the copy the deploy
# uploaded to the admin's home when the agent changed (`<host>-agent`), or else the one the base
# setup installed. Standard library only; read without following links, checked against the
# digest, run from a 0700 temporary directory. The agent drops the upload once its apply went
# through (`--upload-by`), so a run cut short finds it again.
_BOOT = f"""\
import hashlib, os, subprocess, sys, tempfile
host, admin, digest = sys.argv[1:4]
upload = {UPLOAD_PATH!r}.format(admin=admin)
def read(path):
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
            return fh.read()
    except OSError:
        return None
agent = next((data for data in map(read, (upload, {AGENT_PATH!r}))
              if data is not None and hashlib.sha256(data).hexdigest() == digest), None)
if agent is None:
    sys.exit(f"outpost: the agent this deploy needs (sha256 {{digest[:16]}}...) is neither uploaded at {{upload}} "
             f"nor installed at {AGENT_PATH}: upload it again with `pulumi up --replace` of the {{host}}-agent resource")
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "outpost-apply.py")
    with open(path, "wb") as out:
        out.write(agent)
    sys.exit(subprocess.run([sys.executable, path, "apply-host", host, "--upload-by", admin]).returncode)
"""


def token(masked: str) -> str:
    """The token for a manifest's masked encoding (`Manifest.encode()`)."""
    return encoded_digest(masked)[:20]


def purge_note(manifest: Manifest) -> str:
    purged = [u for u in manifest.users if u.purge]
    return ("  (purge: removing it DELETES " + ", ".join(f"user {u.name} with its home {u.home}" for u in purged)
            + " and their data)") if purged else ""


def create_command(host: str, admin: str, entries: Sequence[tuple[Manifest, str]]) -> str:
    """The manifests and their tokens as comment lines, then the agent's `apply-host`."""
    width = max(len(m.name) for m, _ in entries)
    lines = [f"# outpost on {host}: each manifest and its token; the agent applies the ones that changed"]
    lines += [f"#   {m.name:<{width}}  {tok}{purge_note(m)}" for m, tok in entries]
    lines.append(shlex.join(["sudo", "-n", "python3", "-c", _BOOT, host, admin, agent_digest()]))
    return "\n".join(lines)


def delete_command(host: str, admin: str, manifests: Sequence[Manifest]) -> str:
    """The agent's `remove-host`. When it deletes data (users with purge), a comment says so, so
    `pulumi preview --diff` shows it plainly on the Command that goes away."""
    notes = [f"#   {m.name}{purge_note(m)}" for m in manifests if purge_note(m)]
    head = [f"# outpost on {host}: removes every manifest" + (", and DELETES DATA:" if notes else "")]
    remove = ["sudo", "-n", "python3", AGENT_PATH, "remove-host", host, "--upload-by", admin]
    return "\n".join(head + notes + [shlex.join(remove)])


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


def ship_agent(name: str, admin: str, connection: remote.ConnectionArgs, parent: pulumi.Resource,
               depends_on: Sequence[pulumi.Resource] = ()) -> remote.CopyToRemote:
    """The agent's zipapp uploaded to the admin's home: a file asset, so the engine holds its hash,
    not its ~170 KB, for each host; it runs again only when the agent changes or the host does (a
    new machine behind the same name has a new host key or address: the provider would otherwise
    take a changed connection for nothing to copy, measured in the disaster drill)."""
    return remote.CopyToRemote(
        name, connection=connection, source=pulumi.FileAsset(str(agent_file())),
        remote_path=UPLOAD_PATH.format(admin=admin),
        triggers=[connection.host, connection.port, connection.host_key],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on)))


def ship_host(name: str, host: str, admin: str, manifests: Sequence[Manifest], connection: remote.ConnectionArgs,
              secrets: Mapping[str, pulumi.Output[str]], parent: pulumi.Resource,
              depends_on: Sequence[pulumi.Resource] = ()) -> remote.Command:
    """The one Command that applies MANIFESTS (base first, in apply order) on HOST, after DEPENDS_ON
    (which holds the agent's upload)."""
    if not manifests or manifests[0].name != "base":
        raise ValueError(f"{host}: a host's manifests start with its base setup")
    entries = []
    for manifest in manifests:
        masked = manifest.encode()      # encoded once: the token's source and, without secrets, stdin
        entries.append((manifest, token(masked), masked))
    stdin = stdin_for(host, entries, secrets)
    # stdin is a secret output only when it is a secret: secret bytes in the state cost the engine
    # memory and time at every step, plain ones next to nothing (docs/engine-scale.md)
    secret_outputs = [o for o in SECRET_OUTPUTS if o != "stdin" or isinstance(stdin, pulumi.Output)]
    return remote.Command(
        name,
        connection=connection,
        create=create_command(host, admin, [(m, tok) for m, tok, _ in entries]),
        delete=delete_command(host, admin, manifests),
        stdin=stdin,
        add_previous_output_in_env=False,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on),
                                    additional_secret_outputs=secret_outputs),
    )
