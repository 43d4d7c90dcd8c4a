"""WireGuard keys for every member of every `kind: wireguard` network, made by the program.

Each private key is 32 random bytes (pulumi-random, kept in state, secret); its public key is
derived with X25519 (what `wg pubkey` computes). They fill the `wg:<net>:<host>.key/.pub`
placeholders of the render layer's mesh manifests.
"""

from __future__ import annotations

import base64
from typing import Optional

import pulumi
import pulumi_random as random
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .config.model import Stack
from .render.mesh import members


def public_key(private_b64: str) -> str:
    raw = X25519PrivateKey.from_private_bytes(base64.b64decode(private_b64)).public_key()
    return base64.b64encode(raw.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


class MeshKeys(pulumi.ComponentResource):
    values: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, stack: Stack, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("outpost:network:MeshKeys", name, None, opts)
        self.values = {}
        for network, net in stack.networks.items():
            if net.kind != "wireguard":
                continue
            for host in members(stack, network):
                key = random.RandomBytes(f"{name}-{network}-{host}", length=32,
                                         opts=pulumi.ResourceOptions(parent=self,
                                                                     additional_secret_outputs=["base64", "hex"]))
                self.values[f"wg:{network}:{host}.key"] = pulumi.Output.secret(key.base64)
                self.values[f"wg:{network}:{host}.pub"] = pulumi.Output.unsecret(key.base64.apply(public_key))
        self.register_outputs({})
