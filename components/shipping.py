"""Ships one rendered Manifest to one host: a `remote.Command` running the on-host agent.

The manifest travels on stdin (a Pulumi secret whenever any file holds a secret); `create` and
`delete` name only the manifest and its token. The token is the masked manifest's digest, so a
no-change `pulumi up` sees byte-identical inputs and runs nothing, and an old resource's `delete`
can never undo what a successor with different content applied (the agent compares tokens).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

import pulumi
from pulumi_command import remote

from .render.base import AGENT_PATH
from .render.manifest import Manifest, encoded_digest

COMMAND_TYPE = "command:remote:Command"
# A Command's outputs that hold what the host said or was sent: secret in the state (encrypted
# with the stack's passphrase) and masked in the CLI. stdout/stderr carry the agent's log and any
# tool's error text, which must never be readable from a state file or a CI log.
SECRET_OUTPUTS = ("stdin", "stdout", "stderr")

# Runs the agent carried inside the base manifest itself: the first apply on a new host, before
# /usr/local/lib/outpost/outpost-apply.py exists. Standard library only; the agent (a zipapp, so
# its entry is base64, `b64: true`) is written to a 0700 temporary directory and removed
# afterwards. This is the one file entry decoded outside the agent's manifest module: the agent's
# own entry stays base64 whatever way other files' contents travel (docs/manifest.md).
_BOOT = f"""\
import base64, json, os, subprocess, sys, tempfile
text = sys.stdin.read()
entry = next(f for f in json.loads(text)["files"] if f["path"] == {AGENT_PATH!r})
with tempfile.TemporaryDirectory() as tmp:
    agent = os.path.join(tmp, "outpost-apply.py")
    with open(agent, "wb") as out:
        out.write(base64.b64decode(entry["content"]))
    sys.exit(subprocess.run([sys.executable, agent] + sys.argv[1:], input=text.encode()).returncode)
"""


def token(masked: str) -> str:
    """The token for a manifest's masked encoding (`Manifest.encode()`)."""
    return encoded_digest(masked)[:20]


def create_command(manifest: Manifest, tok: str) -> str:
    args = ["apply", manifest.name, tok]
    if manifest.name == "base":
        return shlex.join(["sudo", "-n", "python3", "-c", _BOOT, *args])
    return shlex.join(["sudo", "-n", "python3", AGENT_PATH, *args])


def delete_command(manifest: Manifest, tok: str) -> str:
    """The agent's `remove`. When it deletes data (users with purge), a shell comment says so,
    so `pulumi preview --diff` shows it plainly on the Command that goes away."""
    command = shlex.join(["sudo", "-n", "python3", AGENT_PATH, "remove", manifest.name, tok])
    purged = [u for u in manifest.users if u.purge]
    if purged:
        command += ("  # purge: DELETES " + ", ".join(f"user {u.name} with its home {u.home}" for u in purged)
                    + " and their data")
    return command


def stdin_for(manifest: Manifest, masked: str,
              secrets: Mapping[str, pulumi.Output[str]]) -> pulumi.Input[str]:
    """The manifest JSON with every `<secret:NAME>` filled in; a secret Output if any was.
    MASKED is `manifest.encode()`, which is stdin as it stands when no file holds a secret."""
    names = manifest.secrets
    if not names:
        return masked
    missing = [n for n in names if n not in secrets]
    if missing:
        raise ValueError(f"manifest {manifest.name} references unknown secrets {missing}")
    values = pulumi.Output.all(*[secrets[n] for n in names])
    return pulumi.Output.secret(values.apply(lambda vals: manifest.encode(dict(zip(names, vals)))))


def ship(name: str, manifest: Manifest, connection: remote.ConnectionArgs,
         secrets: Mapping[str, pulumi.Output[str]], parent: pulumi.Resource,
         depends_on: Sequence[pulumi.Resource] = ()) -> remote.Command:
    masked = manifest.encode()      # encoded once: the token's source and, without secrets, stdin
    tok = token(masked)
    return remote.Command(
        name,
        connection=connection,
        create=create_command(manifest, tok),
        delete=delete_command(manifest, tok),
        stdin=stdin_for(manifest, masked, secrets),
        add_previous_output_in_env=False,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on),
                                    additional_secret_outputs=list(SECRET_OUTPUTS)),
    )
