"""The engine's floor for a resource count: N `command:remote:Command` resources shaped like the
ones outpost ships manifests with (a connection with a secret private key and a pinned host key,
`create`, `delete`, a stdin of a given size, stdout/stderr/stdin as secret outputs), and nothing
else: no render, no components, no other provider. What a preview of it costs is what the engine
costs for that many Commands with that many bytes of input; bench/engine_scale.py compares
outpost's stack against it at the same resource count.

Config (project namespace `floor`): `count` (default 100), `stdin_bytes` (default 10), `secret`:
- `outputs` (default): outpost's shape for a manifest without secrets: the connection's private
  key is a secret, stdin/stdout/stderr are secret outputs, stdin itself is a plain input;
- `stdin`: as `outputs`, and stdin is a secret input too (outpost's manifests holding a secret);
- `none`: nothing secret of ours (no secret key, no secret outputs); pulumi-command itself still
  makes `connection` a secret, in the inputs and the outputs.
"""

import pulumi
from pulumi_command import remote

config = pulumi.Config("floor")
count = config.get_int("count") or 100
size = config.get_int("stdin_bytes") or 10
mode = config.get("secret") or "outputs"
if mode not in ("none", "outputs", "stdin"):
    raise pulumi.RunError(f"floor:secret: {mode!r} is not one of none, outputs, stdin")

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA0I4Ww4cUKzj8bGqL1TYtDfQ1ybB0fKzmKq5gqAqZ5o floor"
# Not a key: the engine only ever sees its bytes (a preview connects nowhere).
private_key = ("-----BEGIN OPENSSH PRIVATE KEY-----\n" + "A" * 400 + "\n-----END OPENSSH PRIVATE KEY-----\n")
connection = remote.ConnectionArgs(host="198.51.100.1", port=22, user="admin",
                                   private_key=private_key if mode == "none" else pulumi.Output.secret(private_key),
                                   host_key=KEY)
secret_outputs = [] if mode == "none" else ["stdin", "stdout", "stderr"]
filler = "0123456789abcdef" * (size // 16 + 1)

for i in range(count):
    head = f"{i:06d}:"
    stdin = (head + filler)[:size] if size > len(head) else head[:size]
    remote.Command(
        f"c{i}",
        connection=connection,
        create=f"sudo -n python3 /usr/local/lib/outpost/outpost-apply.py apply c{i} {i:020d}",
        delete=f"sudo -n python3 /usr/local/lib/outpost/outpost-apply.py remove c{i} {i:020d}",
        stdin=pulumi.Output.secret(stdin) if mode == "stdin" else stdin,
        add_previous_output_in_env=False,
        opts=pulumi.ResourceOptions(additional_secret_outputs=secret_outputs),
    )
