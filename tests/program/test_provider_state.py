"""Pulumi states keep the dynamic providers as they were serialized: `__provider` holds a dill
pickle of the provider object, which names its class by module path and name. These are the
strings states written before components/geodns.py and components/buckets.py became packages
hold: they must still load (delete and update run the provider from the state), and today's
serialization must be the same string, so no stack sees its provider input change.
"""

import base64

import dill
import pytest
from pulumi.dynamic.dynamic import serialize_provider

from components.buckets import BucketProvider
from components.geodns import GeoRecordProvider

RECORDED = {
    GeoRecordProvider: "gASVLgAAAAAAAACMEWNvbXBvbmVudHMuZ2VvZG5zlIwRR2VvUmVjb3JkUHJvdmlkZXKUk5QpgZQu",
    BucketProvider: "gASVLAAAAAAAAACMEmNvbXBvbmVudHMuYnVja2V0c5SMDkJ1Y2tldFByb3ZpZGVylJOUKYGULg==",
}


@pytest.mark.parametrize("provider", RECORDED, ids=lambda p: p.__name__)
def test_a_recorded_provider_loads_and_serializes_the_same(provider):
    assert type(dill.loads(base64.b64decode(RECORDED[provider]))) is provider
    assert serialize_provider(provider()) == RECORDED[provider]
