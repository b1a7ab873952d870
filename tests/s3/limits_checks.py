#!/usr/bin/env python3
"""What a real S3 SDK (boto3, retries off) hears when cairn refuses a request by a
limit (driven by tests/limits.rs).

    limits_checks.py ENDPOINT

The cluster runs with --max-object-size 6MiB, --max-name-length 100 and
--rate-limit 2 --rate-burst 4. Keys come from the environment as "<id>:<secret>":
KEY_A and KEY_B, both unrestricted.

Prints "ok <check>" or "FAIL <check>: <why>" per check and exits 1 if any failed.
"""

import os
import sys
import traceback

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

BUCKET = "default"
LIMIT = 6 << 20


class CheckFailed(Exception):
    pass


def client(endpoint, key):
    ident, secret = key.split(":", 1)
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=10, read_timeout=60)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ident,
        aws_secret_access_key=secret,
        config=config,
    )


def refused(call, code, status):
    """Runs `call`, which must fail with S3 error `code` and HTTP `status`; returns
    the error's response."""
    try:
        call()
    except ClientError as e:
        got = (e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"])
        if got != (code, status):
            raise CheckFailed(f"got {got}, want {(code, status)}")
        return e.response
    raise CheckFailed(f"succeeded, want {code}")


def absent(s3, key):
    try:
        s3.head_object(Bucket=BUCKET, Key=key)
    except ClientError as e:
        if e.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return
        raise
    raise CheckFailed(f"{key} was stored")


def main():
    endpoint = sys.argv[1]
    a = client(endpoint, os.environ["KEY_A"])
    b = client(endpoint, os.environ["KEY_B"])
    failed = False

    def check(name, fn):
        nonlocal failed
        try:
            fn()
            print(f"ok {name}")
        except Exception as e:  # noqa: BLE001 - every failure is reported
            failed = True
            print(f"FAIL {name}: {e}")
            traceback.print_exc(file=sys.stderr)

    def long_key():
        refused(lambda: b.put_object(Bucket=BUCKET, Key="k" * 101, Body=b"x"), "KeyTooLongError", 400)

    def large_object():
        # botocore sends Expect: 100-continue with a body this large: the refusal
        # comes before the body.
        refused(lambda: b.put_object(Bucket=BUCKET, Key="large", Body=b"\0" * (LIMIT + 1)), "EntityTooLarge", 400)
        absent(b, "large")

    def rate():
        # At 2 per second after a burst of 4, 40 requests in a row are refused
        # unless they take 18 s: a loaded CI machine made 12 (4 s) pass unrefused.
        for _ in range(40):
            try:
                a.list_objects_v2(Bucket=BUCKET, MaxKeys=1)
            except ClientError as e:
                meta = e.response["ResponseMetadata"]
                got = (e.response["Error"]["Code"], meta["HTTPStatusCode"])
                if got != ("SlowDown", 503):
                    raise CheckFailed(f"got {got}, want SlowDown 503")
                retry = int(meta["HTTPHeaders"].get("retry-after", "0"))
                if retry < 1:
                    raise CheckFailed(f"Retry-After {retry}")
                break
        else:
            raise CheckFailed("forty requests in a row were never refused")
        # Another key has its own allowance.
        b.list_objects_v2(Bucket=BUCKET, MaxKeys=1)

    check("a_long_key_is_key_too_long", long_key)
    check("a_large_object_is_entity_too_large", large_object)
    check("a_key_over_its_rate_hears_slow_down", rate)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
