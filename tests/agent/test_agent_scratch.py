"""A manifest's `scratch`: what its own programs create on the host (litestream's fetched binary,
restic's cache) goes with the last manifest that lists it, never through a symlink inside it
(the roots themselves are root-only directories), and only under the two roots the agent allows."""

import json
import os

import pytest

from test_agent_unit import TOKEN, host, manifest, text_file  # noqa: F401 - host is a fixture

from outpost_agent.base import AgentError
from outpost_agent.manifest import load_manifest

BINARY_DIR = "/usr/local/lib/outpost/litestream-0.5.17"


def scratch_manifest(name):
    return manifest(name, files=[text_file(f"/usr/local/lib/outpost/{name}-run", "#!/bin/sh\n", "0755")],
                    scratch=[BINARY_DIR])


def fetched(root):
    """What the manifest's installer would leave: a binary, and a link a hostile hand put there."""
    d = root / BINARY_DIR.lstrip("/")
    d.mkdir(parents=True)
    (d / "litestream").write_bytes(b"\x7fELF...")
    outside = root / "srv" / "precious"
    outside.write_text("keep me")
    (d / "link").symlink_to(outside)
    (d / "dirlink").symlink_to(root / "srv")
    return d, outside


def test_scratch_goes_with_the_last_manifest_listing_it_and_no_link_is_followed(host):
    agent, _, root = host
    for name in ("backup-a", "backup-b"):
        agent.apply(name, TOKEN, json.dumps(scratch_manifest(name)))
    d, outside = fetched(root)
    agent.remove("backup-a", TOKEN)
    assert (d / "litestream").exists()                   # backup-b still lists it
    agent.remove("backup-b", TOKEN)
    assert not d.exists()
    assert outside.read_text() == "keep me" and (root / "srv").is_dir()


@pytest.mark.parametrize("path", ["/etc", "/usr/local/lib/outpost", "/usr/local/lib/outpost/../../../etc",
                                  "/var/cache/other", "relative/outpost"])
def test_scratch_outside_the_allowed_roots_is_refused(path):
    doc = manifest("backup-a", scratch=[path])
    with pytest.raises(AgentError, match="scratch"):
        load_manifest(json.dumps(doc), "backup-a")
