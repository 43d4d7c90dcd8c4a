"""What `make engine` builds, piece by piece: for each binary of the Pulumi toolchain, the Go module
that holds it, the upstream source archive that holds the same module, and the steps upstream's own
build takes (go.mod edits, `generate.go`, the version stamp).

Data only, read by tools/engine/build.py; every version comes from tools/engine/versions.env.
Bump RECIPE_VERSION whenever a change here or in build.py's steps changes what a build produces:
it is part of every piece's cache key.
"""

from __future__ import annotations

from dataclasses import dataclass

RECIPE_VERSION = 1


@dataclass(frozen=True)
class Dependency:
    """A module a piece links that the Go module proxy refuses: replaced by the archive's copy."""
    module: str
    archive: str          # file name in ENGINE_SOURCES
    subdir: str           # the directory inside the archive that holds the module's go.mod


@dataclass(frozen=True)
class Piece:
    """One binary (plus the files that ship beside it) and how to build it from its Go module."""
    name: str                                  # the binary
    version: str                               # its release version, without a leading v
    module: str = ""                           # the Go module holding the binary ('' for the CLI)
    go_version: str = ""                       # the version asked of the proxy (default v<version>)
    archive: str = ""                          # the upstream source archive holding the module
    subdir: str = ""                           # the module's directory inside that archive
    package: str = "."                         # the main package, relative to the module root
    stamp: str = ""                            # the -X variable that carries the version
    stamp_v: bool = False                      # stamp "v1.2.3" rather than "1.2.3"
    generate: bool = False                     # run upstream's generate.go in the package first
    drop_replaces: tuple[str, ...] = ()        # go.mod replaces that point into upstream's tree
    requires: tuple[tuple[str, str], ...] = () # (module, version) raised in go.mod
    deps: tuple[Dependency, ...] = ()
    # Files that ship beside the binary: (path under the pulumi/sdk tree, installed name).
    extras: tuple[tuple[str, str], ...] = ()
    plugin: str = ""                           # `pulumi plugin install resource <plugin>`
    server: str = ""                           # `--server` for plugins not published by Pulumi

    @property
    def asked(self) -> str:
        return self.go_version or f"v{self.version}"

    @property
    def files(self) -> tuple[str, ...]:
        return (self.name, *(installed for _, installed in self.extras))


CLI = "pulumi"
LANGUAGE_HOST = "pulumi-language-python"
DYNAMIC_SCRIPT = "pulumi-resource-pulumi-python"
SDK = "github.com/pulumi/pulumi/sdk/v3"
PKG = "github.com/pulumi/pulumi/pkg/v3"


def pieces(v: dict[str, str]) -> list[Piece]:
    """Every piece, in the order `make up` needs them: CLI, language host, command, tls; then the
    cloud stacks' random, hcloud and acme."""
    yaml = Dependency("github.com/pulumi/pulumi-yaml", v["YAML_ARCHIVE"], "pulumi-yaml")
    dotnet = Dependency("github.com/pulumi/pulumi-dotnet/pulumi-language-dotnet/v3", v["DOTNET_ARCHIVE"],
                        "pulumi-dotnet/pulumi-language-dotnet")
    bridge = (("github.com/pulumi/pulumi-terraform-bridge/v3", v["BRIDGE_GO_VERSION"]),)

    def bridged(key: str, name: str, repo: str, *deps: Dependency,
                requires: tuple = (), server: str = "") -> Piece:
        module = v[f"{key}_MODULE"]
        return Piece(f"pulumi-resource-{name}", v[f"{key}_VERSION"], module, v.get(f"{key}_GO_VERSION", ""),
                     v[f"{key}_ARCHIVE"], f"{repo}/provider", f"./cmd/pulumi-resource-{name}",
                     f"{module}/pkg/version.Version", generate=True, requires=requires,
                     deps=(*deps, yaml, dotnet), plugin=name, server=server)

    return [
        Piece(CLI, v["PULUMI_VERSION"]),
        Piece(LANGUAGE_HOST, v["LANGUAGE_PYTHON_VERSION"], v["LANGUAGE_PYTHON_MODULE"],
              archive=v["LANGUAGE_PYTHON_ARCHIVE"], subdir="pulumi/sdk/python/cmd/pulumi-language-python",
              stamp=f"{SDK}/go/common/version.Version", stamp_v=True, drop_replaces=(PKG, SDK),
              requires=((PKG, v["LANGUAGE_PYTHON_SDK_GO_VERSION"]), (SDK, v["LANGUAGE_PYTHON_SDK_GO_VERSION"])),
              extras=(("python/cmd/pulumi-language-python-exec", "pulumi-language-python-exec"),
                      (f"python/dist/{DYNAMIC_SCRIPT}", DYNAMIC_SCRIPT))),
        Piece("pulumi-resource-command", v["COMMAND_VERSION"], v["COMMAND_MODULE"], v["COMMAND_GO_VERSION"],
              v["COMMAND_ARCHIVE"], "pulumi-command/provider", "./cmd/pulumi-resource-command",
              f"{v['COMMAND_MODULE']}/pkg/version.Version", stamp_v=True, plugin="command"),
        bridged("TLS", "tls", "pulumi-tls",
                Dependency("github.com/hashicorp/terraform-provider-tls", v["TF_TLS_ARCHIVE"], "terraform-provider-tls")),
        bridged("RANDOM", "random", "pulumi-random"),
        bridged("HCLOUD", "hcloud", "pulumi-hcloud",
                Dependency("github.com/hetznercloud/terraform-provider-hcloud", v["TF_HCLOUD_ARCHIVE"],
                           "terraform-provider-hcloud"), requires=bridge),
        bridged("ACME", "acme", "pulumi-acme",
                Dependency("github.com/vancluever/terraform-provider-acme/v2", v["TF_ACME_ARCHIVE"],
                           "terraform-provider-acme"), requires=bridge,
                server="github://api.github.com/pulumiverse"),
    ]
