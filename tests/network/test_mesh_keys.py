"""WireGuard public keys derived by the program equal what WireGuard's own `wg pubkey` derives."""

import base64
import os
import subprocess

from components.mesh import public_key


def test_public_key_matches_wg_pubkey():
    for _ in range(5):
        private = base64.b64encode(os.urandom(32)).decode()
        wg = subprocess.run(["wg", "pubkey"], input=private + "\n", capture_output=True, text=True, check=True)
        assert public_key(private) == wg.stdout.strip()
