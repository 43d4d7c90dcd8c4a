"""The pinned Pulumi CLI (.engine/bin, `make engine`) driving one stack of this project with its
state kept outside the repository: what `make up`/`make down` (tools/local_stack.py), the
end-to-end suite, the day-two commands and the benchmarks run.

Everything machine-specific lives in one state directory:
- `pulumi-state/`: the file backend (`PULUMI_BACKEND_URL=file://...`);
- `passphrase`: the passphrase that encrypts the stack's secrets (0600, random, made once), handed
  to the CLI as PULUMI_CONFIG_PASSPHRASE_FILE, never in the environment itself;
- `Pulumi.<stack>.yaml`: the stack config the CLI reads and writes (`--config-file`), laid from a
  config mapping on every run; only its encryption salt and the encrypted `outpost:secrets` are
  carried over, so an unchanged mapping gives an unchanged file.
`pulumi stack init` writes the new salt into the project's stack file, so it runs in a scratch copy
of the project: the repository's Pulumi.<stack>.yaml is never touched.

Secrets go to the CLI on stdin only (`pulumi config set --secret`); updates report what the
engine did, read from its own event stream (`pulumi up --json`), never from scraping its display.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets as random_secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".engine" / "bin"
SECRETS_KEY = "outpost:secrets"
# The changes an update reports; "same" (and reads) are not changes.
CHANGES = ("create", "update", "delete", "replace", "create-replacement", "delete-replaced")


class CliFailed(Exception):
    """A CLI run that exited non-zero: the command and the CLI's own last words (never a secret:
    the CLI masks every secret value it knows in what it prints)."""

    def __init__(self, args: list[str], result: subprocess.CompletedProcess, errors: list[str] | None = None):
        self.args_, self.result, self.errors = args, result, errors or []
        detail = "\n".join(self.errors) or "\n".join((result.stderr or result.stdout or "").strip().splitlines()[-8:])
        super().__init__(f"`pulumi {' '.join(args[:2])}` exited {result.returncode}: {detail}")


@dataclass
class Step:
    """One resource the engine changed: its name, the operation and its outputs' text."""
    name: str
    type: str
    op: str
    seconds: float
    stdout: str = ""
    stderr: str = ""


@dataclass
class Update:
    """What one `pulumi up`/`destroy` did, from the engine's events."""
    steps: list[Step] = field(default_factory=list)
    changes: dict[str, int] = field(default_factory=dict)    # the summary's resourceChanges
    errors: list[str] = field(default_factory=list)          # error diagnostics, each with its resource
    seconds: float = 0.0
    output: str = ""         # all the CLI printed when captured (its --json events), as text

    @property
    def changed(self) -> int:
        return sum(n for op, n in self.changes.items() if op in CHANGES)


def read_events(lines: list[str]) -> Update:
    """An Update from the engine's events, one JSON object per line (`pulumi up --json`)."""
    update, started = Update(), {}
    for line in lines:
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if "resourcePreEvent" in event:
            meta = event["resourcePreEvent"]["metadata"]
            started[(meta["urn"], meta["op"])] = event.get("timestamp", 0)
        elif "resOutputsEvent" in event:
            meta = event["resOutputsEvent"]["metadata"]
            if meta["op"] in CHANGES:
                begun = started.get((meta["urn"], meta["op"]), event.get("timestamp", 0))
                update.steps.append(Step(meta["urn"].rsplit("::", 1)[-1], meta["type"], meta["op"],
                                         float(event.get("timestamp", 0) - begun)))
        elif "diagnosticEvent" in event:
            diag = event["diagnosticEvent"]
            if diag.get("severity") == "error" and diag.get("message", "").strip():
                name = (diag.get("urn") or "").rsplit("::", 1)[-1]
                update.errors.append(f"{name}: {diag['message'].strip()}" if name else diag["message"].strip())
        elif "summaryEvent" in event:
            update.changes = dict(event["summaryEvent"].get("resourceChanges") or {})
            update.seconds = float(event["summaryEvent"].get("durationSeconds") or 0)
    return update


SECRET_SIG = "4dabf18193072939515e22adb298388d"


def unwrap_secrets(value: Any) -> Any:
    """A state value with each secret (exported with --show-secrets: a signature and its JSON text
    as `plaintext`) replaced by the value itself."""
    if isinstance(value, dict):
        if SECRET_SIG in value and "plaintext" in value:
            return unwrap_secrets(json.loads(value["plaintext"]))
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value


def is_encrypted(value: Any) -> bool:
    """Whether a config value is a `{secure: ...}` ciphertext."""
    return isinstance(value, dict) and set(value) == {"secure"}


class StackCli:
    """The CLI on STACK of the project in PROJECT, with its state in STATE; with no STATE, the
    user's own backend, passphrase and the project's Pulumi.<stack>.yaml (a team's test or prod).

    BACKEND_URL (with a STATE) keeps the stack somewhere else than the file backend under STATE,
    e.g. an S3-compatible bucket (`s3://...`); the passphrase and the config file stay in STATE.
    EXTRA_ENV is added to every run's environment: never a secret (settings, paths to files)."""

    def __init__(self, stack: str, state: Path | None, project: Path = ROOT, backend_url: str | None = None,
                 extra_env: dict[str, str] | None = None):
        self.stack, self.project = stack, Path(project)
        self.state = Path(state) if state is not None else None
        self.backend_url, self.extra_env = backend_url, dict(extra_env or {})
        self._set: dict[str, str] = {}     # secret name → digest of the value set this session

    # -- the environment ----------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return (self.state or self.project) / f"Pulumi.{self.stack}.yaml"

    @property
    def backend(self) -> Path:
        assert self.state is not None, "the user's own backend is not a directory of ours"
        return self.state / "pulumi-state"

    def env(self) -> dict[str, str]:
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               "PULUMI_SKIP_UPDATE_CHECK": "true", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true"}
        if self.state is not None:
            env.update(PULUMI_BACKEND_URL=self.backend_url or f"file://{self.backend}",
                       PULUMI_CONFIG_PASSPHRASE_FILE=str(self.state / "passphrase"))
            env.pop("PULUMI_CONFIG_PASSPHRASE", None)  # the file is the one source of the passphrase
        env.update(self.extra_env)
        return env

    def argv(self, args: list[str], global_flags: list[str] = ()) -> list[str]:
        """The CLI's argv for ARGS on this stack; GLOBAL_FLAGS go before the command (e.g.
        `--profiling=PREFIX`). For callers that start the process themselves (bench/)."""
        argv = [str(BIN / "pulumi"), *global_flags, *args, "--stack", self.stack, "--non-interactive"]
        if args[0] in ("config", "up", "preview", "destroy", "refresh"):
            argv += ["--config-file", str(self.config_file)]
        return argv

    def run(self, args: list[str], stdin: str | None = None, capture: bool = True, check: bool = True,
            cwd: Path | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
        argv = self.argv(args)
        result = subprocess.run(argv, cwd=cwd or self.project, env=self.env(), input=stdin, text=True,
                                capture_output=capture, timeout=timeout,
                                stdin=None if stdin is not None else subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise CliFailed(args, result)
        return result

    # -- the stack and its config -------------------------------------------------------------------
    def stack_file(self) -> Path:
        name = yaml.safe_load((self.project / "Pulumi.yaml").read_text())["name"]
        return self.backend / ".pulumi" / "stacks" / name / f"{self.stack}.json"

    def _stack_exists(self, scratch: Path) -> bool:
        if self.backend_url is None:
            return self.stack_file().exists()
        listed = json.loads(self.run(["stack", "ls", "--json"], cwd=scratch).stdout or "[]")
        return any(entry.get("name", "").rsplit("/", 1)[-1] == self.stack for entry in listed)

    def ensure(self) -> None:
        """The state directory, the passphrase and the stack."""
        self.state.mkdir(parents=True, exist_ok=True)
        if self.backend_url is None:
            self.backend.mkdir(exist_ok=True)
        passphrase = self.state / "passphrase"
        if not passphrase.exists():
            fd = os.open(passphrase, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(base64.b64encode(random_secrets.token_bytes(24)).decode() + "\n")
        with tempfile.TemporaryDirectory(prefix="outpost-stack-") as scratch:
            shutil.copyfile(self.project / "Pulumi.yaml", Path(scratch) / "Pulumi.yaml")
            if not self._stack_exists(Path(scratch)):
                self.run(["stack", "init", "--secrets-provider", "passphrase"], cwd=Path(scratch))
                made = Path(scratch) / f"Pulumi.{self.stack}.yaml"
                if made.exists() and not self.config_file.exists():
                    # stack init's config file, with the salt: the only copy of it a bucket backend
                    # offers without reading its state (the file backend's checkpoint has one too).
                    shutil.copyfile(made, self.config_file)

    def _salt(self) -> str:
        """The passphrase salt the stack was created with, as its checkpoint records it."""
        if self.backend_url is not None:
            return ""
        checkpoint = json.loads(self.stack_file().read_text()).get("checkpoint") or {}
        provider = (checkpoint.get("latest") or {}).get("secrets_providers") or {}
        return (provider.get("state") or {}).get("salt", "")

    def laid(self) -> dict[str, Any]:
        return (yaml.safe_load(self.config_file.read_text()) if self.config_file.exists() else None) or {}

    def lay(self, config: dict[str, Any], secrets: dict[str, str] | None = None,
            secret_keys: dict[str, str] | None = None) -> None:
        """The config file = CONFIG (every key but its secrets block) plus the secrets set here before;
        then each of SECRETS (name in outpost:secrets → value) and SECRET_KEYS (a whole config key
        such as hcloud:token → value) that is new or changed this session is set through the CLI."""
        self.ensure()
        kept = self.laid()
        kept_config = kept.get("config") or {}
        secret_keys = dict(secret_keys or {})
        # Only values encrypted here can be read: the mapping's own secrets block and its other
        # `secure:` values (the repository's placeholders) are never copied, those set here before
        # are kept.
        wanted = {k: v for k, v in config.items()
                  if k != SECRETS_KEY and k not in secret_keys and not is_encrypted(v)}
        wanted.update({k: v for k, v in kept_config.items()
                       if is_encrypted(v) and (k in secret_keys or is_encrypted(config.get(k)))})
        wanted[SECRETS_KEY] = dict(kept_config.get(SECRETS_KEY) or {})
        doc = {"encryptionsalt": kept.get("encryptionsalt") or self._salt(), "config": wanted}
        text = (f"# Laid by tools/pulumi_cli.py for stack {self.stack}: not a file to edit.\n"
                + yaml.safe_dump(doc, sort_keys=False))
        if not self.config_file.exists() or self.config_file.read_text() != text:
            self.config_file.write_text(text)
        for name, value in (secrets or {}).items():
            digest = hashlib.sha256(value.encode()).hexdigest()
            if self._set.get(name) != digest or name not in wanted[SECRETS_KEY]:
                self.set_secret(name, value)
                self._set[name] = digest
        for key, value in secret_keys.items():
            digest = hashlib.sha256(value.encode()).hexdigest()
            if self._set.get(f"key:{key}") != digest or key not in wanted:
                self.run(["config", "set", "--secret", key], stdin=value)
                self._set[f"key:{key}"] = digest

    def set_secret(self, name: str, value: str) -> None:
        self.run(["config", "set", "--secret", "--path", f"{SECRETS_KEY}.{name}"], stdin=value)

    def has_secret(self, name: str) -> bool:
        return name in ((self.laid().get("config") or {}).get(SECRETS_KEY) or {})

    def get(self, key: str, path: bool = True) -> str:
        return self.run(["config", "get", *(["--path"] if path else []), key]).stdout.rstrip("\n")

    # -- engine operations --------------------------------------------------------------------------
    def _operation(self, args: list[str], timeout: float | None, stream: bool) -> Update:
        """An update: its events read from `--json` (the engine's event stream, one JSON object a
        line); with STREAM, the CLI's own display goes to the terminal and the summary is read from
        the stack's history afterwards."""
        if stream:
            result = self.run(args, capture=False, check=False, timeout=timeout)
            update = Update()
            history = self.run(["stack", "history", "--json", "--page-size", "1"], check=False)
            if history.returncode == 0 and history.stdout.strip().startswith("["):
                last = (json.loads(history.stdout) or [{}])[0]
                update.changes = dict(last.get("resourceChanges") or {})
        else:
            result = self.run([*args, "--json"], check=False, timeout=timeout)
            update = read_events(result.stdout.splitlines())
        update.output = (result.stdout or "") + (result.stderr or "")
        if result.returncode != 0:
            raise CliFailed(args, result, update.errors)
        return update

    def up(self, timeout: float | None = None, stream: bool = False, outputs: bool = True,
           refresh: bool = False) -> Update:
        """`pulumi up --yes --skip-preview` (with `--refresh`); with OUTPUTS, each changed Command's
        stdout and stderr (secret outputs) read back from the state."""
        update = self._operation(["up", "--yes", "--skip-preview", *(["--refresh"] if refresh else [])],
                                 timeout, stream)
        if outputs and update.steps:
            self.fill_outputs(update.steps)
        return update

    def destroy(self, timeout: float | None = None, stream: bool = False) -> Update:
        return self._operation(["destroy", "--yes", "--skip-preview"], timeout, stream)

    def preview(self, diff: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
        return self.run(["preview", *(["--diff"] if diff else [])], check=False, timeout=timeout)

    def export(self, show_secrets: bool = False) -> dict[str, Any]:
        args = ["stack", "export", *(["--show-secrets"] if show_secrets else [])]
        return json.loads(self.run(args).stdout)

    def resources(self, show_secrets: bool = False) -> list[dict[str, Any]]:
        """The state's resources; with SHOW_SECRETS, secret values as plain values."""
        found = (self.export(show_secrets).get("deployment") or {}).get("resources") or []
        return [unwrap_secrets(r) for r in found] if show_secrets else found

    def fill_outputs(self, steps: list[Step]) -> None:
        by_urn_name = {r["urn"].rsplit("::", 1)[-1]: r for r in self.resources(show_secrets=True)}
        for s in steps:
            outputs = (by_urn_name.get(s.name) or {}).get("outputs") or {}
            s.stdout, s.stderr = str(outputs.get("stdout") or ""), str(outputs.get("stderr") or "")
