// Wrapper module for the Pulumi CLI (tools/engine/build.py builds it; nothing here is upstream code).
// `go install ...@version` refuses pkg/v3 because its go.mod has replace directives: this module
// requires it, repeats the replace the CLI's release build uses, and names the main package with a
// tool directive. build.py copies this file into the build directory and runs `go mod tidy` there:
// minimal version selection from pkg/v3's own requirements gives the same graph every time, and
// the checksum database verifies every module, so no generated go.sum is kept here. The version
// is PULUMI_VERSION in ../versions.env (tests/engine checks the two agree).
module outpost/engine/cli

go 1.26

require github.com/pulumi/pulumi/pkg/v3 v3.274.1

replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e

tool github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
