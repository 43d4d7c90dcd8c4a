"""Runs the whole Pulumi program in-process under `pulumi.runtime.set_mocks` and returns every
resource it registered: type, name, parent, options and inputs, with which inputs were secret,
and every provider function (lookup) it invoked.

Used by `make plan` (plan.json), the program tests and the end-to-end harness. No Pulumi CLI, no
engine, no cloud: the mocks answer each registration with deterministic outputs.
"""

from __future__ import annotations

import hashlib
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pulumi
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.config import set_all_config

ROOT = Path(__file__).resolve().parent.parent
SECRET_SIG = "4dabf18193072939515e22adb298388d"


def mock_secret(name: str) -> str:
    """The value a secret gets under mocks: its own placeholder, so stdin == the masked manifest."""
    return f"<secret:{name}>"


@dataclass
class Registered:
    type: str
    name: str
    urn: str
    parent: Optional[str]                 # parent URN ("" for the stack's children)
    custom: bool
    inputs: dict[str, Any]
    secret_inputs: set[str]               # top-level input names holding a secret anywhere
    protect: bool
    depends_on: list[str]                 # URNs
    ignore_changes: list[str]
    delete_before_replace: bool
    additional_secret_outputs: list[str]
    id: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)


def _fake_id(name: str) -> str:
    return str(int(hashlib.sha256(name.encode()).hexdigest()[:7], 16))


def _fake_ip(name: str, version: int) -> str:
    n = int(hashlib.sha256(name.encode()).hexdigest()[:4], 16)
    return f"192.0.2.{n % 254 + 1}" if version == 4 else f"2001:db8::{n:x}"


class OutpostMocks(pulumi.runtime.Mocks):
    """Deterministic outputs for the providers outpost uses."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        if args.typ == "hcloud:index/server:Server":
            outputs.update(ipv4_address=_fake_ip(args.name, 4), ipv6_address=_fake_ip(args.name, 6))
        elif args.typ == "tls:index/privateKey:PrivateKey":
            digest = hashlib.sha256(args.name.encode()).digest()
            import base64
            blob = base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + digest).decode()
            outputs.update(public_key_openssh=f"ssh-ed25519 {blob}\n",
                           private_key_openssh=f"<mock private key {args.name}>",
                           private_key_pem=f"<mock private key {args.name}>",
                           public_key_pem=f"<mock public key {args.name}>")
        elif args.typ in ("tls:index/selfSignedCert:SelfSignedCert", "tls:index/locallySignedCert:LocallySignedCert"):
            outputs.update(cert_pem=f"<mock certificate {args.name}>\n")
        elif args.typ == "tls:index/certRequest:CertRequest":
            outputs.update(cert_request_pem=f"<mock request {args.name}>\n")
        elif args.typ == "acme:index/certificate:Certificate":
            outputs.update(certificate_pem=f"<mock certificate {args.name}>\n",
                           issuer_pem=f"<mock issuer of {args.name}>\n",
                           private_key_pem=f"<mock private key {args.name}>")
        elif args.typ == "random:index/randomBytes:RandomBytes":
            raw = hashlib.sha256(args.name.encode()).digest()[: int(args.inputs.get("length", 32))]
            import base64
            outputs.update(base64=base64.b64encode(raw).decode(), hex=raw.hex())
        elif args.typ == "command:remote:Command":
            outputs.update(stdout="", stderr="")
        return _fake_id(args.name), outputs

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "hcloud:index/getZone:getZone":
            # An existing zone looked up by name (outpost:dns.create_zone: false).
            name = args.args.get("name") or f"zone-{args.args.get('id')}"
            return {"id": int(_fake_id(name)), "name": name, "mode": "primary", "ttl": 3600,
                    "delete_protection": False, "labels": {}}
        return {}


def _unwrap_secrets(value: Any) -> Any:
    """Inputs as plain values (which ones were secret is kept apart in `secret_inputs`)."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG) == "1b47061264138c4ac30d75fd1eb44270":
            return _unwrap_secrets(value.get("value"))
        return {k: _unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap_secrets(v) for v in value]
    return value


@dataclass
class Invoked:
    token: str                            # e.g. hcloud:index/getZone:getZone
    args: dict[str, Any]


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """A mock monitor that also keeps each registration's options and secret-ness, and every
    provider function the program invoked."""

    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.registered: list[Registered] = []
        self.invoked: list[Invoked] = []

    def Invoke(self, request):
        if request.tok != "pulumi:pulumi:getResource":
            self.invoked.append(Invoked(request.tok, pulumi_mocks.rpc.deserialize_properties(request.args)))
        return super().Invoke(request)

    def by_name(self) -> dict[str, Registered]:
        return {r.name: r for r in self.registered}

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        raw = json_format.MessageToDict(request.object)
        state = self.resources[response.urn]
        self.registered.append(Registered(
            type=request.type, name=request.name, urn=response.urn, parent=request.parent or None,
            custom=request.custom, inputs=_unwrap_secrets(pulumi_mocks.rpc.deserialize_properties(request.object)),
            secret_inputs={k for k, v in raw.items() if SECRET_SIG in json.dumps(v)},
            protect=bool(request.protect), depends_on=list(request.dependencies),
            ignore_changes=list(request.ignoreChanges),
            delete_before_replace=bool(request.deleteBeforeReplace),
            additional_secret_outputs=list(request.additionalSecretOutputs),
            id=state.id, outputs=dict(state.state)))
        return response


def stack_config(stack: str, overrides: Optional[dict[str, Any]] = None,
                 secrets: Optional[dict[str, str]] = None, project_dir: Path = ROOT) -> dict[str, Any]:
    """The config mapping of Pulumi.STACK.yaml with OVERRIDES applied (key → value) and
    every secret given its mock placeholder unless SECRETS has a real value for it."""
    doc = yaml.safe_load((project_dir / f"Pulumi.{stack}.yaml").read_text()) or {}
    config = dict(doc.get("config") or {})
    config.update(overrides or {})
    names = config.get("outpost:secrets") or {}
    config["outpost:secrets"] = {n: (secrets or {}).get(n, mock_secret(n)) for n in names}
    return config


def install_mocks(mocks: Optional[pulumi.runtime.Mocks] = None, stack: str = "test") -> RecordingMonitor:
    """From now on, every resource this process registers goes to a fresh RecordingMonitor under
    MOCKS (default: OutpostMocks); it is returned for the caller to inspect. Component tests call
    this inside a `@pulumi.runtime.test` function; `record_program` calls it for the whole program."""
    monitor = RecordingMonitor(mocks or OutpostMocks())
    pulumi_settings.set_root_resource(None)
    pulumi.runtime.set_mocks(monitor.mocks, project="outpost", stack=stack, preview=False, monitor=monitor)
    return monitor


def record_program(stack: str, config: dict[str, Any], program: Path = ROOT / "__main__.py",
                   mocks: Optional[pulumi.runtime.Mocks] = None) -> RecordingMonitor:
    """Run the program for STACK with CONFIG (a `stack_config` mapping) under MOCKS; the monitor
    holds what it registered and invoked."""
    flat = {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()
            if not (isinstance(v, dict) and set(v) == {"secure"})}
    set_all_config(flat, secret_keys=[k for k in flat if k.endswith(":secrets") or k == "hcloud:token"])
    monitor = install_mocks(mocks, stack=stack)

    def main() -> None:
        runpy.run_path(str(program), run_name="__main__")

    pulumi.runtime.sync_await._sync_await(pulumi.runtime.stack.run_pulumi_func(main))
    return monitor


def run_program(stack: str, config: dict[str, Any], program: Path = ROOT / "__main__.py",
                mocks: Optional[pulumi.runtime.Mocks] = None) -> list[Registered]:
    """Every resource the program registers for STACK with CONFIG under MOCKS."""
    return record_program(stack, config, program, mocks).registered
