#!/usr/bin/env python3
"""`make engine`: the pinned Pulumi toolchain in `.engine/bin` — the CLI, the Python language host,
`pulumi-resource-pulumi-python` (what dynamic providers run) and the command, tls, random, hcloud
and acme resource plugins, at the versions in tools/engine/versions.env.

Two routes, chosen by ENGINE_ROUTE (default `auto`: `go` where a Go toolchain is on PATH, outside
GitHub Actions; `installer` otherwise):
- `installer` (a machine with internet): Pulumi's official installer pinned with `--version` and
  `--install-root`, then `pulumi plugin install` of each pinned provider;
- `go` (no internet, but the Go module proxy): each binary built with `go build` from our own
  wrapper module under tools/engine/ (no upstream file is committed; what a build needs from a
  module, such as the dynamic-provider script, is copied out of the module cache at build time).

Builds land in the user's cache directory, keyed by the versions and the recipe
(`~/.cache/outpost/engine/<key>/bin`, with the Go module and build caches beside it), and
`.engine/bin` links there: a second run builds nothing. Whatever can't be had is reported in one
paragraph (the piece, the exact module and version asked for, the proxy's answer, and how to get it),
and the exit status is 1; 0 means the toolchain is complete. `--check` only reports.
Standard library only: it runs before the project's virtualenv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VERSIONS = HERE / "versions.env"
LINK = ROOT / ".engine" / "bin"
INSTALLER_URL = "https://get.pulumi.com/install.sh"


@dataclass(frozen=True)
class Plugin:
    """A resource provider plugin: `pulumi-resource-<name>`, pinned in versions.env as <KEY>_VERSION."""
    name: str
    key: str
    server: str = ""      # `pulumi plugin install --server`, for plugins not published by Pulumi

    @property
    def binary(self) -> str:
        return f"pulumi-resource-{self.name}"


PLUGINS = (Plugin("command", "COMMAND"), Plugin("tls", "TLS"), Plugin("random", "RANDOM"),
           Plugin("hcloud", "HCLOUD"), Plugin("acme", "ACME", server="github://api.github.com/pulumiverse"))
LANGUAGE_HOST = "pulumi-language-python"
DYNAMIC_SCRIPT = "pulumi-resource-pulumi-python"


class EngineError(Exception):
    """A step that failed, in one paragraph for the user."""


def read_versions(path: Path = VERSIONS) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "outpost" / "engine"


def recipe_key(route: str) -> str:
    """The build directory's name: the CLI version, the route and a digest of every recipe file."""
    digest = hashlib.sha256(route.encode())
    for path in sorted(p for p in HERE.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(HERE).as_posix().encode() + b"\0" + path.read_bytes())
    return f"pulumi-{read_versions()['PULUMI_VERSION']}-{route}-{digest.hexdigest()[:12]}"


def choose_route() -> str:
    route = os.environ.get("ENGINE_ROUTE", "auto")
    if route not in ("auto", "go", "installer"):
        raise EngineError(f"ENGINE_ROUTE={route!r}: use go, installer or auto")
    if route == "auto":
        route = "go" if shutil.which("go") and os.environ.get("GITHUB_ACTIONS") != "true" else "installer"
    return route


def run(argv: list[str], cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def last_lines(text: str, count: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-count:])


# -- the Go route --------------------------------------------------------------------------------

def go_env() -> dict:
    cache = cache_home()
    return {**os.environ, "GOMODCACHE": str(cache / "go-mod"), "GOCACHE": str(cache / "go-build"),
            "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "local")}


def wrapper_module(build_dir: Path) -> Path:
    """The CLI's wrapper module, laid in the build directory and resolved there (`go mod tidy`)."""
    module = build_dir / "cli"
    module.mkdir()
    shutil.copyfile(HERE / "cli" / "go.mod", module / "go.mod")
    result = run(["go", "mod", "tidy"], cwd=module, env=go_env())
    if result.returncode != 0:
        raise EngineError(f"go mod tidy of the CLI's wrapper module failed: {last_lines(result.stderr)}")
    return module


def build_cli(versions: dict, module: Path, bin_dir: Path) -> None:
    version = versions["PULUMI_VERSION"]
    stamp = f"-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v{version}"
    result = run(["go", "build", "-trimpath", "-tags", "osusergo,grpcnotrace", "-ldflags", f"-s -w {stamp}",
                  "-o", str(bin_dir / "pulumi"), "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"],
                 cwd=module, env=go_env())
    if result.returncode != 0:
        raise EngineError(f"go build of the Pulumi CLI v{version} failed: {last_lines(result.stderr)}")


def copy_dynamic_script(module: Path, bin_dir: Path) -> None:
    """The script dynamic providers run ships in the sdk/v3 module (the PyPI wheel lacks it)."""
    result = run(["go", "list", "-m", "-f", "{{.Dir}}", "github.com/pulumi/pulumi/sdk/v3"], cwd=module,
                 env=go_env())
    source = Path(result.stdout.strip()) / "python" / "dist" / DYNAMIC_SCRIPT
    if result.returncode != 0 or not source.is_file():
        raise EngineError(f"{DYNAMIC_SCRIPT} not found in the sdk/v3 module: {last_lines(result.stderr)}")
    shutil.copyfile(source, bin_dir / DYNAMIC_SCRIPT)
    (bin_dir / DYNAMIC_SCRIPT).chmod(0o755)


def probe_module(module: str, version: str) -> str:
    """The proxy's answer for MODULE@VERSION: '' when it serves it, else its error in one line."""
    with tempfile.TemporaryDirectory(prefix="outpost-engine-") as tmp:
        Path(tmp, "go.mod").write_text("module probe\n\ngo 1.24\n")
        result = run(["go", "mod", "download", "-json", f"{module}@{version}"], cwd=Path(tmp), env=go_env())
    try:
        answer = json.loads(result.stdout or "{}")
    except json.JSONDecodeError:
        answer = {"Error": result.stderr}
    if result.returncode == 0 and not answer.get("Error"):
        return ""
    return " ".join(str(answer.get("Error") or result.stderr).split())


def go_route(versions: dict, bin_dir: Path, missing: dict[str, str], log) -> None:
    if not shutil.which("go"):
        raise EngineError("the go route needs a Go toolchain (go 1.26 or newer) on PATH")
    started = time.monotonic()
    module = wrapper_module(bin_dir.parent)
    build_cli(versions, module, bin_dir)
    copy_dynamic_script(module, bin_dir)
    log(f"engine: built pulumi v{versions['PULUMI_VERSION']} and {DYNAMIC_SCRIPT} in "
        f"{time.monotonic() - started:.0f} s")
    wanted = [(LANGUAGE_HOST, "LANGUAGE_PYTHON", versions["PULUMI_VERSION"])]
    wanted += [(p.binary, p.key, versions[f"{p.key}_VERSION"]) for p in PLUGINS]
    for binary, key, version in wanted:
        module = versions[f"{key}_MODULE"]
        asked = versions.get(f"{key}_GO_VERSION") or f"v{version}"
        answer = probe_module(module, asked)
        if answer:
            missing[binary] = answer if f"{module}@{asked}" in answer else f"{module}@{asked}: {answer}"
        else:
            # Served: building it takes a wrapper module (replaces, own main.go) that could not be
            # written against a module this machine never saw. Say so rather than pretend.
            missing[binary] = f"{module}@{asked} is served, but tools/engine has no wrapper module for it yet"


# -- the installer route -------------------------------------------------------------------------

def installer_route(versions: dict, build_dir: Path, bin_dir: Path, missing: dict[str, str], log) -> None:
    if not shutil.which("curl"):
        raise EngineError("the installer route needs curl")
    script = build_dir / "install.sh"
    fetched = run(["curl", "-fsSL", "--retry", "3", "-o", str(script), INSTALLER_URL])
    if fetched.returncode != 0:
        raise EngineError(f"could not fetch Pulumi's installer ({INSTALLER_URL}): {last_lines(fetched.stderr)}")
    root = build_dir / "installer"
    result = run(["sh", str(script), "--version", versions["PULUMI_VERSION"], "--install-root", str(root),
                  "--no-edit-path"])
    if result.returncode != 0:
        raise EngineError(f"Pulumi's installer failed: {last_lines(result.stderr or result.stdout)}")
    for path in (root / "bin").iterdir():
        (bin_dir / path.name).symlink_to(path)
    for plugin in PLUGINS:
        argv = [str(bin_dir / "pulumi"), "plugin", "install", "resource", plugin.name,
                versions[f"{plugin.key}_VERSION"]]
        argv += ["--server", plugin.server] if plugin.server else []
        installed = run(argv)
        if installed.returncode != 0:
            missing[plugin.binary] = f"pulumi plugin install failed: {last_lines(installed.stderr)}"
    log(f"engine: installed pulumi v{versions['PULUMI_VERSION']} and its plugins")


# -- what is there -------------------------------------------------------------------------------

def plugin_dirs(plugin: Plugin, version: str) -> list[Path]:
    home = Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
    return [home / "plugins" / f"resource-{plugin.name}-v{version}"]


def present(versions: dict) -> dict[str, str]:
    """Each piece → where it was found ('' when it was not)."""
    found = {}
    for name in ("pulumi", LANGUAGE_HOST, DYNAMIC_SCRIPT):
        path = LINK / name
        found[name] = str(path) if path.exists() else (shutil.which(name) or "")
    for plugin in PLUGINS:
        version = versions[f"{plugin.key}_VERSION"]
        candidates = [LINK / plugin.binary, *(d / plugin.binary for d in plugin_dirs(plugin, version))]
        hit = next((str(c) for c in candidates if c.exists()), "") or shutil.which(plugin.binary) or ""
        found[plugin.binary] = hit
    return found


def explain(missing: dict[str, str], route: str) -> str:
    pieces = "; ".join(f"{name} ({why})" for name, why in missing.items())
    return (f"make engine: the Pulumi toolchain is incomplete ({route}). Missing: {pieces}. "
            "pulumi up, preview and destroy need every one of them. To get them: on a machine with "
            "internet, `make engine ENGINE_ROUTE=installer` runs Pulumi's official installer and "
            "`pulumi plugin install` at the pinned versions (tools/engine/versions.env); or install the "
            "Pulumi CLI yourself (https://www.pulumi.com/docs/install/) and put each missing "
            "pulumi-resource-<name> on PATH or install it with `pulumi plugin install resource NAME "
            "VERSION --file BINARY`. make test-fast needs none of them.")


def build(route: str, versions: dict, log) -> Path:
    """Build (or reuse) the toolchain for ROUTE in the cache; returns its bin directory."""
    build_dir = cache_home() / recipe_key(route)
    if not (build_dir / "bin" / "pulumi").exists():
        staging = build_dir.with_name(build_dir.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "bin").mkdir(parents=True)
        missing: dict[str, str] = {}
        started = time.monotonic()
        if route == "go":
            go_route(versions, staging / "bin", missing, log)
        else:
            installer_route(versions, staging, staging / "bin", missing, log)
        (staging / "missing.json").write_text(json.dumps(missing, indent=1, sort_keys=True))
        (staging / "seconds").write_text(f"{time.monotonic() - started:.0f}\n")
        shutil.rmtree(build_dir, ignore_errors=True)
        staging.rename(build_dir)
        for other in cache_home().glob("pulumi-*"):   # builds of older pins or recipes
            if other != build_dir and not other.name.endswith(".partial"):
                shutil.rmtree(other, ignore_errors=True)
    return build_dir / "bin"


def link(bin_dir: Path) -> None:
    """.engine/bin → BIN_DIR, replaced atomically."""
    LINK.parent.mkdir(exist_ok=True)
    fresh = LINK.with_name("bin.new")
    if fresh.is_symlink() or fresh.exists():
        fresh.unlink()
    fresh.symlink_to(bin_dir)
    fresh.replace(LINK)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report what is there and what is missing")
    parser.add_argument("--quiet", action="store_true", help="print nothing when the toolchain is complete")
    args = parser.parse_args(argv)
    log = (lambda message: None) if args.quiet else (lambda message: print(message, file=sys.stderr))
    versions = read_versions()
    how = "as built"
    try:
        if not args.check:
            route = choose_route()
            how = f"route: {route}"
            link(build(route, versions, log))
    except EngineError as error:
        print(f"make engine: {error}", file=sys.stderr)
        print(explain({"pulumi": str(error)}, how), file=sys.stderr)
        return 1
    notes = LINK.resolve().parent / "missing.json"
    reasons = json.loads(notes.read_text()) if LINK.exists() and notes.is_file() else {}
    found = present(versions)
    missing = {name: reasons.get(name, "not found") for name, where in found.items() if not where}
    if not args.quiet or missing:
        for name, where in found.items():
            print(f"  {name:32} {where or 'missing'}", file=sys.stderr)
    if missing:
        print(explain(missing, how), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
