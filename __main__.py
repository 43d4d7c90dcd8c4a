"""outpost's Pulumi program: validate the stack config, then build the whole environment."""

import pulumi

from components.config import ConfigError, load_pulumi
from components.secrets import config_secrets
from components.stack import Outpost, OutpostArgs

try:
    stack = load_pulumi()
except ConfigError as error:
    # RunError ends the program with just this message: no traceback, nothing registered.
    raise pulumi.RunError(str(error)) from None

Outpost("outpost", OutpostArgs(stack=stack, secrets=config_secrets(stack)))
