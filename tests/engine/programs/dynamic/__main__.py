"""A small program of outpost's dynamic-provider components, for tests/engine/test_dynamic_providers.py:
one `Bucket` (components/buckets.py) on an S3 endpoint and one `GeoRecord` (components/geodns.py) at
each of Gcore and Bunny, all from the stack config `outpost:dynamic`; their credentials come from
`outpost:secrets`, as the real program's do (components/secrets.py). The engine runs the providers in
its dynamic-provider process (pulumi-resource-pulumi-python), which imports `components` from
PYTHONPATH (the repository root) like this program does."""

import pulumi

from components.buckets import Bucket, BucketArgs
from components.geodns import GeoRecord, GeoRecordArgs

config = pulumi.Config("outpost")
spec = config.require_object("dynamic")
values = config.require_secret_object("secrets")


def secret(name: str) -> pulumi.Output[str]:
    return values.apply(lambda v: str(v[name]))


bucket = Bucket("bucket", BucketArgs(
    bucket=spec["bucket"], endpoint=spec["s3_endpoint"], region=spec["region"],
    access_key=secret("s3_key_id"), secret_key=secret("s3_secret"),
    versioning=spec["versioning"], expire_days=spec.get("expire_days"),
    noncurrent_expire_days=spec.get("noncurrent_expire_days"), force_destroy=True))

records = {}
for provider in ("gcore", "bunny"):
    record = spec[provider]
    records[provider] = GeoRecord(f"geo-{provider}", GeoRecordArgs(
        provider=provider, api_url=record["api_url"], token=secret(f"{provider}_token"),
        zone=record["zone"], name=record["name"], ttl=record.get("ttl", 300),
        pools=record["pools"], rules=record["rules"], default_pool=record["default_pool"],
        health=record.get("health")))

pulumi.export("bucket", bucket.bucket)
pulumi.export("fqdns", {p: r.fqdn for p, r in records.items()})
