#!/bin/sh
# `make up`: boot the local throwaway VM and deploy the demo environment (Pulumi.local.yaml) to it.
# State stays on this machine: a file backend under .vm/pulumi-state, an empty passphrase.
set -eu
cd "$(dirname "$0")/.."
if ! command -v pulumi >/dev/null 2>&1; then
    echo "make up needs the Pulumi CLI: install it with 'curl -fsSL https://get.pulumi.com | sh' (see https://www.pulumi.com/docs/install/), then run make up again." >&2
    exit 1
fi
.venv/bin/python tools/vm.py start --state-dir .vm --ssh-port 2222 --http-port 8080 --https-port 8443
mkdir -p .vm/pulumi-state
export PULUMI_BACKEND_URL="file://$PWD/.vm/pulumi-state" PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-}"
pulumi stack select --create local >/dev/null
vm() { .venv/bin/python -c "import json,sys; print(json.load(open('.vm/vm.json'))[sys.argv[1]])" "$1"; }
# Pin the VM's host key and let outpost log in with the VM's key: local values, never committed.
pulumi config set --path 'outpost:hosts.vm.host_key' "$(vm host_key)"
pulumi config set --path 'outpost:admin.ssh_keys[0]' "$(vm public_key)"
pulumi config set --secret --path 'outpost:secrets.deploy_key' < "$(vm private_key_path)"
for name in demo_token s3_key_id s3_secret restic_password; do
    pulumi config get --path "outpost:secrets.$name" >/dev/null 2>&1 ||
        head -c 24 /dev/urandom | base64 | pulumi config set --secret --path "outpost:secrets.$name"
done
pulumi up --stack local --yes
echo "outpost: the demo answers on https://hello.outpost.localhost:8443 (curl -k --resolve hello.outpost.localhost:8443:127.0.0.1 ...)"
