#!/bin/sh
# Installs everything outpost's tests and local VM need: Debian packages (validators, qemu,
# debootstrap, pebble) and the Python virtualenv with the pinned dependencies from pyproject.toml
# (the test extra, and the bench extra: Ansible, which make bench measures outpost against).
# Then, when no `pulumi` is on PATH, the pinned Pulumi toolchain (make engine: each piece built once
# from the Go module proxy or the upstream source archives, or fetched by Pulumi's installer, cached
# by version; tools/engine/build.py).
# Idempotent: re-running it when nothing changed installs nothing.
set -eu
cd "$(dirname "$0")/.."

DEBS="python3-venv openssh-client qemu-system-x86 qemu-utils debootstrap e2fsprogs util-linux debian-archive-keyring systemd
      caddy haproxy nginx pebble openssl git wireguard-tools socat restic nftables openssh-server"

missing=""
for pkg in $DEBS; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing Debian packages:$missing"
    $SUDO apt-get update -q >/dev/null
    # The proxies are only validators here: keep their services from starting on this machine.
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 0755 /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null
    $SUDO rm -f /usr/sbin/policy-rc.d
fi

stamp=.venv/.outpost-deps
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing Python dependencies into .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test,bench]'
    echo "$want" > "$stamp"
fi
if ! command -v pulumi >/dev/null 2>&1; then
    # Says what it builds (minutes, once) and, when incomplete, what is missing and how to get it;
    # make test-fast, plan, check and diff don't need the toolchain.
    python3 tools/engine/build.py --quiet || echo "setup: the Pulumi toolchain is incomplete (see above)"
fi
echo "setup: ok"
