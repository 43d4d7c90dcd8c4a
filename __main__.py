"""outpost's Pulumi program: validate the stack config, then build the whole environment."""

import pulumi

from components.config import ConfigError
from components.load import load_pulumi
from components.secrets import config_secrets
from components.stack import Outpost, OutpostArgs

try:
    stack = load_pulumi()
except ConfigError as error:
    # RunError ends the program with just this message: no traceback, nothing registered.
    raise pulumi.RunError(str(error)) from None

outpost = Outpost("outpost", OutpostArgs(stack=stack, secrets=config_secrets(stack)))
# How `make status`, `make logs`, `make drift` and `make rollback` reach cloud hosts: their
# address and pinned host key (generated in the stack, in no config file). Public values only.
pulumi.export("hosts", {name: {"address": host.connection.host, "port": host.connection.port,
                               "host_key": host.connection.host_key}
                        for name, host in outpost.hosts.items()})
if outpost.ca_certificate is not None:
    # tls: internal: the stack CA that clients (and the end-to-end tests) trust. A public value.
    pulumi.export("ca_certificate", outpost.ca_certificate)
