#!/usr/bin/env python3
"""`make engine`: the pinned Pulumi toolchain in `.engine/bin`: the CLI, the Python language host
(with `pulumi-language-python-exec` and `pulumi-resource-pulumi-python`, what dynamic providers
run), and the command, tls, random, hcloud and acme resource plugins, installed into PULUMI_HOME
with `pulumi plugin install resource NAME VERSION --file BINARY`.

Each piece (tools/engine/recipes.py) comes from the first route that gives it, in this order
(ENGINE_ROUTE=proxy|archive|installer forces one; on GitHub Actions the installer goes first):
- `proxy`: `go build` from the Go module proxy: the CLI through our own wrapper module
  (tools/engine/cli), every other piece from its module's source as the proxy serves it;
- `archive`: the same module from its upstream source archive in ENGINE_SOURCES (default
  ../shared/engine-src beside the checkout or a directory above it), extracted into the build directory under the cache, with the modules the
  proxy refuses replaced by their archives' copies, upstream's generate.go run, the version stamped;
- `installer`: Pulumi's official installer and `pulumi plugin install` (needs internet).

Every piece is cached by name, version and recipe (`~/.cache/outpost/engine/pieces/`), the Go module
and build caches beside it; `.engine/bin` links to a directory assembled from the pieces, so a
second run builds nothing. What can't be had is said piece by piece: the route, the archive, the
step and the tool's last lines; the exit status is 1 unless the toolchain is complete. `--check`
only reports. Standard library only: it runs before the project's virtualenv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __package__:
    from . import recipes
else:  # run as a script, before the project's virtualenv exists: the recipes beside it
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import recipes  # type: ignore[no-redef]
CLI, DYNAMIC_SCRIPT, LANGUAGE_HOST, SDK, Piece = (recipes.CLI, recipes.DYNAMIC_SCRIPT, recipes.LANGUAGE_HOST,
                                                  recipes.SDK, recipes.Piece)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VERSIONS = HERE / "versions.env"
LINK = ROOT / ".engine" / "bin"
INSTALLER_URL = "https://get.pulumi.com/install.sh"
ROUTES = ("proxy", "archive", "installer")


class StepFailed(Exception):
    """A build step that failed: the step's name and the tool's last lines."""

    def __init__(self, step: str, detail: str):
        super().__init__(f"{step}: {detail}")
        self.step = step


@dataclass
class Outcome:
    piece: Piece
    directory: Path | None = None     # the cached piece, when had
    route: str = ""
    seconds: float = 0.0
    built: bool = False               # built by this run (not from the cache)
    why: str = ""                     # when missing: what each route said


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


def pulumi_home() -> Path:
    return Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")


def sources_dir() -> Path:
    """ENGINE_SOURCES, else ../shared/engine-src beside the checkout (or beside a directory above
    it: a git worktree one level further down finds the same archives)."""
    if os.environ.get("ENGINE_SOURCES"):
        return Path(os.environ["ENGINE_SOURCES"]).resolve()
    found = next((d / "shared" / "engine-src" for d in ROOT.parents if (d / "shared" / "engine-src").is_dir()), None)
    return (found or ROOT.parent / "shared" / "engine-src").resolve()


def route_order() -> list[str]:
    route = os.environ.get("ENGINE_ROUTE", "auto")
    route = "proxy" if route == "go" else route
    if route in ROUTES:
        return [route]
    if route != "auto":
        raise ValueError(f"ENGINE_ROUTE={route!r}: use proxy, archive, installer or auto")
    if os.environ.get("GITHUB_ACTIONS") == "true":
        return ["installer", "proxy", "archive"]
    return list(ROUTES)


def piece_key(piece: Piece) -> str:
    """The cache directory of PIECE: its name, version and a digest of its recipe."""
    digest = hashlib.sha256(f"{recipes.RECIPE_VERSION}\0{piece!r}".encode())
    if piece.name == CLI:
        digest.update((HERE / "cli" / "go.mod").read_bytes())
    return f"{piece.name}-{piece.version}-{digest.hexdigest()[:12]}"


def run(argv: list[str], cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def last_lines(text: str, count: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-count:])


def step(name: str, argv: list[str], cwd: Path, env: dict) -> str:
    result = run(argv, cwd=cwd, env=env)
    if result.returncode != 0:
        raise StepFailed(name, last_lines(result.stderr or result.stdout))
    return result.stdout


# -- the Go toolchain's environment and the proxy ---------------------------------------------------

def go_env(**extra: str) -> dict:
    cache = cache_home()
    return {**os.environ, "GOMODCACHE": str(cache / "go-mod"), "GOCACHE": str(cache / "go-build"),
            "GOFLAGS": "-mod=mod -buildvcs=false", "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN", "local"),
            **extra}


def module_dir(module: str, version: str) -> tuple[Path | None, str]:
    """The module's source as the proxy serves it (a directory in the module cache), or None and
    the proxy's answer in one line."""
    with tempfile.TemporaryDirectory(prefix="outpost-engine-") as tmp:
        Path(tmp, "go.mod").write_text("module probe\n\ngo 1.24\n")
        result = run(["go", "mod", "download", "-json", f"{module}@{version}"], cwd=Path(tmp), env=go_env())
    try:
        answer = json.loads(result.stdout or "{}")
    except json.JSONDecodeError:
        answer = {"Error": result.stderr}
    if result.returncode == 0 and not answer.get("Error") and answer.get("Dir"):
        return Path(answer["Dir"]), ""
    return None, " ".join(str(answer.get("Error") or result.stderr).split())


# -- building one piece from its module's source ----------------------------------------------------

def writable_copy(source: Path, target: Path) -> Path:
    """A writable copy of a module from the (read-only) module cache."""
    shutil.copytree(source, target, symlinks=True)
    for path in [target, *target.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o200)
    return target


def extract(archive: str, into: Path) -> Path:
    path = sources_dir() / archive
    if not path.is_file():
        raise StepFailed("extract", f"archive {archive} not found in ENGINE_SOURCES={sources_dir()}")
    into.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(path) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as error:
        raise StepFailed("extract", f"{archive}: {error}") from None
    return into


def compile_module(piece: Piece, root: Path, out: Path, replaces: dict[str, Path]) -> None:
    """Upstream's build of PIECE in the module at ROOT: go.mod edits, generate.go, go build."""
    edits = [f"-dropreplace={m}" for m in piece.drop_replaces]
    edits += [f"-replace={m}={d}" for m, d in sorted(replaces.items())]
    edits += [f"-require={m}@{v}" for m, v in piece.requires]
    env = go_env()
    if edits:
        step("go mod edit", ["go", "mod", "edit", *edits], root, env)
    if piece.generate:
        step("generate.go", ["go", "run", "./generate.go"], root / piece.package, go_env(VERSION=piece.version))
    version = f"v{piece.version}" if piece.stamp_v else piece.version
    ldflags = f"-s -w -X {piece.stamp}={version}" if piece.stamp else "-s -w"
    step("go build", ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", str(out / piece.name), piece.package],
         root, env)


def copy_extras(piece: Piece, sdk_root: Path, out: Path) -> None:
    for inner, installed in piece.extras:
        source = sdk_root / inner
        if not source.is_file():
            raise StepFailed("extras", f"{inner} is not in {sdk_root}")
        shutil.copyfile(source, out / installed)
        (out / installed).chmod(0o755)


def from_proxy(piece: Piece, work: Path, out: Path, versions: dict) -> None:
    if piece.name == CLI:
        return build_cli(piece, work, out)
    source, answer = module_dir(piece.module, piece.asked)
    if source is None:
        raise StepFailed("go mod download", answer)
    compile_module(piece, writable_copy(source, work / "src"), out, {})
    if piece.extras:
        sdk, answer = module_dir(SDK, versions["LANGUAGE_PYTHON_SDK_GO_VERSION"])
        if sdk is None:
            raise StepFailed("go mod download", answer)
        copy_extras(piece, sdk, out)


def from_archive(piece: Piece, work: Path, out: Path, versions: dict) -> None:
    if not piece.archive:
        raise StepFailed("extract", "no source archive holds it")
    tree = extract(piece.archive, work / "src")
    replaces = {dep.module: extract(dep.archive, work / "deps" / dep.archive) / dep.subdir for dep in piece.deps}
    compile_module(piece, tree / piece.subdir, out, replaces)
    copy_extras(piece, tree / "pulumi" / "sdk", out)


def build_cli(piece: Piece, work: Path, out: Path) -> None:
    """The CLI through our own wrapper module (tools/engine/cli/go.mod), resolved in the build dir."""
    module = work / "cli"
    module.mkdir(parents=True)
    shutil.copyfile(HERE / "cli" / "go.mod", module / "go.mod")
    env = go_env()
    step("go mod tidy", ["go", "mod", "tidy"], module, env)
    stamp = f"-X {SDK}/go/common/version.Version=v{piece.version}"
    step("go build", ["go", "build", "-trimpath", "-tags", "osusergo,grpcnotrace", "-ldflags", f"-s -w {stamp}",
                      "-o", str(out / CLI), "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"], module, env)


def from_installer(piece: Piece, work: Path, out: Path, versions: dict) -> None:
    if not shutil.which("curl"):
        raise StepFailed("installer", "needs curl")
    root = cache_home() / f"installer-{versions['PULUMI_VERSION']}"
    if not (root / "bin" / CLI).exists():
        script = work / "install.sh"
        step("fetch installer", ["curl", "-fsSL", "--retry", "3", "-o", str(script), INSTALLER_URL], work, os.environ)
        step("install.sh", ["sh", str(script), "--version", versions["PULUMI_VERSION"], "--install-root", str(root),
                            "--no-edit-path"], work, os.environ)
    if not piece.plugin:
        for name in piece.files:
            shutil.copyfile(root / "bin" / name, out / name)
            (out / name).chmod(0o755)
        return
    home = work / "home"
    argv = [str(root / "bin" / CLI), "plugin", "install", "resource", piece.plugin, piece.version]
    step("pulumi plugin install", argv + (["--server", piece.server] if piece.server else []), work,
         {**os.environ, "PULUMI_HOME": str(home)})
    shutil.copyfile(next((home / "plugins").glob(f"resource-{piece.plugin}-v*/{piece.name}")), out / piece.name)
    (out / piece.name).chmod(0o755)


BUILDERS = {"proxy": from_proxy, "archive": from_archive, "installer": from_installer}


def obtain(piece: Piece, versions: dict, order: list[str], log) -> Outcome:
    """PIECE from the cache, or built by the first route that gives it."""
    target = cache_home() / "pieces" / piece_key(piece)
    if (target / "piece.json").exists():
        meta = json.loads((target / "piece.json").read_text())
        return Outcome(piece, target, meta["route"], meta["seconds"])
    reasons = []
    for route in order:
        if route in ("proxy", "archive") and not shutil.which("go"):
            reasons.append(f"{route}: no Go toolchain on PATH")
            continue
        cache_home().mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{piece.name}-", dir=cache_home()))
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        started = time.monotonic()
        log(f"engine: {piece.name} {piece.version}: building ({route}) ...")
        try:
            BUILDERS[route](piece, work, staging, versions)
        except StepFailed as error:
            archive = f" (archive {piece.archive})" if route == "archive" and piece.archive else ""
            reasons.append(f"{route}{archive}: {error}")
            log(f"engine: {piece.name}: {route}: {error}")
            shutil.rmtree(staging, ignore_errors=True)
            continue
        finally:
            shutil.rmtree(work, ignore_errors=True)
        seconds = round(time.monotonic() - started, 1)
        (staging / "piece.json").write_text(json.dumps({"route": route, "seconds": seconds}) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        log(f"engine: {piece.name} {piece.version}: built ({route}) in {seconds:.0f} s")
        return Outcome(piece, target, route, seconds, built=True)
    return Outcome(piece, why="; ".join(reasons))


# -- assembling .engine/bin and installing the plugins ----------------------------------------------

def assemble(had: list[Outcome]) -> Path:
    """One directory holding the CLI and the language host's files (hard links into the cache), so
    the CLI finds the language host beside itself; .engine/bin links to it, replaced atomically.
    The resource plugins stay out of it: on PATH the engine would use them with a warning
    ("using pulumi-resource-X from $PATH") instead of the installed ones."""
    had = [o for o in had if not o.piece.plugin]
    digest = hashlib.sha256("\0".join(sorted(o.directory.name for o in had)).encode()).hexdigest()[:12]
    bin_dir = cache_home() / f"toolchain-{digest}" / "bin"
    if not bin_dir.is_dir():
        staging = bin_dir.parent.with_name(bin_dir.parent.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "bin").mkdir(parents=True)
        for outcome in had:
            for name in outcome.piece.files:
                try:
                    os.link(outcome.directory / name, staging / "bin" / name)
                except OSError:
                    shutil.copy2(outcome.directory / name, staging / "bin" / name)
        staging.rename(bin_dir.parent)
    LINK.parent.mkdir(exist_ok=True)
    fresh = LINK.with_name("bin.new")
    if fresh.is_symlink() or fresh.exists():
        fresh.unlink()
    fresh.symlink_to(bin_dir)
    fresh.replace(LINK)
    return bin_dir


def plugin_path(piece: Piece) -> Path:
    return pulumi_home() / "plugins" / f"resource-{piece.plugin}-v{piece.version}" / piece.name


def digest_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def install_plugin(outcome: Outcome, cli: Path) -> str:
    """`pulumi plugin install resource NAME VERSION --file BINARY`, unless that exact binary is in."""
    piece = outcome.piece
    binary = outcome.directory / piece.name
    installed = plugin_path(piece)
    if installed.is_file() and digest_of(installed) == digest_of(binary):
        return ""
    result = run([str(cli), "plugin", "install", "resource", piece.plugin, piece.version, "--file", str(binary),
                  "--reinstall"], env={**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"})
    if result.returncode != 0 or not installed.is_file():
        return f"pulumi plugin install failed: {last_lines(result.stderr or result.stdout)}"
    return ""


def present(pieces: list[Piece]) -> dict[str, str]:
    """Each file of the toolchain → where it is ('' when it is not)."""
    found = {}
    for piece in pieces:
        if piece.plugin:
            found[piece.name] = str(plugin_path(piece)) if plugin_path(piece).is_file() else ""
            continue
        for name in piece.files:
            found[name] = str(LINK / name) if (LINK / name).exists() else ""
    return found


def explain(missing: dict[str, str]) -> str:
    pieces = "; ".join(f"{name} ({why})" for name, why in missing.items())
    return (f"make engine: the Pulumi toolchain is incomplete. Missing: {pieces}. pulumi up, preview and "
            "destroy need every piece. To get them: put the upstream source archives listed in "
            "tools/engine/versions.env in ENGINE_SOURCES (default ../shared/engine-src) for the Go module "
            "proxy to build from; or, with internet, `make engine ENGINE_ROUTE=installer` (Pulumi's "
            "installer and `pulumi plugin install` at the pinned versions). make test-fast needs none of them.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report what is there and what is missing")
    parser.add_argument("--quiet", action="store_true",
                        help="say only what is built or missing, not the table of what is there")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)
    versions = read_versions()
    pieces = recipes.pieces(versions)
    reasons: dict[str, str] = {}
    if not args.check:
        try:
            order = route_order()
        except ValueError as error:
            print(f"make engine: {error}", file=sys.stderr)
            return 1
        cache_home().mkdir(parents=True, exist_ok=True)
        outcomes = [obtain(piece, versions, order, log) for piece in pieces]
        had = [o for o in outcomes if o.directory]
        reasons = {o.piece.name: o.why for o in outcomes if not o.directory}
        cli = None
        if had:
            cli = assemble(had) / CLI
        for outcome in had:
            if outcome.piece.plugin and cli and cli.exists():
                trouble = install_plugin(outcome, cli)
                if trouble:
                    reasons[outcome.piece.name] = trouble
        for outcome in outcomes if not args.quiet else []:
            where = f"{outcome.route}, {'built' if outcome.built else 'cached'}, {outcome.seconds:.0f} s build"
            log(f"  {outcome.piece.name:34} {outcome.piece.version:9} {where if outcome.directory else 'missing'}")
    found = present(pieces)
    missing = {name: reasons.get(name, "not found") for name, where in found.items() if not where}
    if args.check and not args.quiet:
        for name, where in found.items():
            print(f"  {name:34} {where or 'missing'}", file=sys.stderr)
    if missing:
        print(explain(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
