"""One `command:local:Command` whose create holds the update open: it touches the file named by
`outpost-lock:held`, then waits (at most 120 s) for a line on the FIFO `outpost-lock:release`.
While it waits, its `pulumi up` holds the stack's lock, so the test can start a second one."""

import pulumi
from pulumi_command import local

config = pulumi.Config()
held = local.Command(
    "held",
    create="touch \"$HELD\" && timeout 120 sh -c 'read -r line < \"$RELEASE\"' && echo released",
    environment={"HELD": config.require("held"), "RELEASE": config.require("release")},
    triggers=[config.require("round")],
)
pulumi.export("stdout", held.stdout)
