#!/usr/bin/env python3
"""Requests cairn's S3 API must refuse, and what they must not leave behind
(driven by tests/s3_auth.rs).

    auth_checks.py ENDPOINT SCENARIO

Keys come from the environment as "<id>:<secret>": ADMIN_KEY (unrestricted),
BUCKET_KEY (limited to the bucket "granted"), READ_KEY (read-only). Scenarios:

    keyed        keys exist: unsigned, wrongly signed, expired, out-of-bucket and
                 read-only writes are refused and store nothing; allowed ones work
    deleted-key  READ_KEY was just deleted: it no longer works
    open         no key exists: unsigned requests work, an unknown key does not

Prints "ok <check>" or "FAIL <check>: <why>" per check and exits 1 if any failed.
"""

import http.client
import os
import sys
import time
import traceback
import urllib.parse

import boto3
import botocore
from botocore.config import Config
from botocore.exceptions import ClientError


class CheckFailed(Exception):
    pass


def eq(actual, expected, what):
    if actual != expected:
        raise CheckFailed(f"{what}: got {actual!r}, want {expected!r}")


def client(endpoint, key=None):
    """A client signing with `key` ("id:secret"), or an unsigned one."""
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=10, read_timeout=60)
    if key is None:
        return boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            config=config.merge(Config(signature_version=botocore.UNSIGNED)),
        )
    ident, secret = key.split(":", 1)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ident,
        aws_secret_access_key=secret,
        config=config,
    )


def refused(code, status, fn, **kwargs):
    try:
        fn(**kwargs)
    except ClientError as e:
        got = (e.response["Error"].get("Code"), e.response["ResponseMetadata"]["HTTPStatusCode"])
        eq(got, (code, status), f"{fn.__name__} refusal")
        return
    raise CheckFailed(f"{fn.__name__} {kwargs.get('Bucket')}/{kwargs.get('Key', '')} succeeded, want {code}")


def http_request(method, url, body=None):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request(method, u.path + ("?" + u.query if u.query else ""), body=body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


class Checks:
    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.failed = []

    def run(self, name, fn):
        try:
            fn()
        except Exception as e:  # every failure is reported, then the next check runs
            self.failed.append(name)
            print(f"FAIL {name}: {e if isinstance(e, CheckFailed) else traceback.format_exc()}", flush=True)
            return
        print(f"ok {name}", flush=True)

    def absent(self, admin, bucket, key, what):
        """The object was not stored: no version of it at all."""
        refused("404", 404, admin.head_object, Bucket=bucket, Key=key)
        listed = admin.list_object_versions(Bucket=bucket, Prefix=key)
        eq(listed.get("Versions", []) + listed.get("DeleteMarkers", []), [], f"{what}: versions of {bucket}/{key}")


def keyed(endpoint):
    checks = Checks(endpoint)
    admin = client(endpoint, os.environ["ADMIN_KEY"])
    granted = client(endpoint, os.environ["BUCKET_KEY"])
    reader = client(endpoint, os.environ["READ_KEY"])
    unsigned = client(endpoint)
    ident, secret = os.environ["ADMIN_KEY"].split(":", 1)
    wrong = client(endpoint, f"{ident}:{secret[:-1]}{'A' if secret[-1] != 'A' else 'B'}")
    unknown = client(endpoint, "CKNOSUCHKEYNOSUCHKE:" + secret)

    def setup():
        admin.create_bucket(Bucket="granted")
        admin.create_bucket(Bucket="other")
        admin.put_object(Bucket="granted", Key="readable", Body=b"for everyone with a key")
        admin.put_object(Bucket="other", Key="readable", Body=b"not for the bucket key")

    def unsigned_requests():
        refused("AccessDenied", 403, unsigned.put_object, Bucket="granted", Key="unsigned", Body=b"x")
        checks.absent(admin, "granted", "unsigned", "unsigned PUT")
        refused("AccessDenied", 403, unsigned.get_object, Bucket="granted", Key="readable")
        refused("AccessDenied", 403, unsigned.list_objects_v2, Bucket="granted")
        refused("AccessDenied", 403, unsigned.create_bucket, Bucket="unsigned-bucket")
        refused("AccessDenied", 403, unsigned.list_buckets)
        refused("404", 404, admin.head_bucket, Bucket="unsigned-bucket")
        uid = admin.create_multipart_upload(Bucket="granted", Key="unsigned-mp")["UploadId"]
        refused(
            "AccessDenied", 403, unsigned.upload_part, Bucket="granted", Key="unsigned-mp", UploadId=uid,
            PartNumber=1, Body=b"x",
        )
        eq(admin.list_parts(Bucket="granted", Key="unsigned-mp", UploadId=uid).get("Parts", []), [], "unsigned part")
        admin.abort_multipart_upload(Bucket="granted", Key="unsigned-mp", UploadId=uid)
        refused("AccessDenied", 403, unsigned.delete_object, Bucket="granted", Key="readable")
        eq(admin.get_object(Bucket="granted", Key="readable")["Body"].read(), b"for everyone with a key", "kept")

    def wrong_secret():
        refused("SignatureDoesNotMatch", 403, wrong.put_object, Bucket="granted", Key="forged", Body=b"x")
        checks.absent(admin, "granted", "forged", "wrongly signed PUT")
        refused("SignatureDoesNotMatch", 403, wrong.get_object, Bucket="granted", Key="readable")
        refused("InvalidAccessKeyId", 403, unknown.put_object, Bucket="granted", Key="stranger", Body=b"x")
        checks.absent(admin, "granted", "stranger", "PUT with an unknown key")
        refused("InvalidAccessKeyId", 403, unknown.list_buckets)

    def presigned_urls():
        good = admin.generate_presigned_url("get_object", Params={"Bucket": "granted", "Key": "readable"}, ExpiresIn=60)
        eq(http_request("GET", good), (200, b"for everyone with a key"), "a fresh presigned GET")
        get = admin.generate_presigned_url("get_object", Params={"Bucket": "granted", "Key": "readable"}, ExpiresIn=1)
        put = admin.generate_presigned_url("put_object", Params={"Bucket": "granted", "Key": "late"}, ExpiresIn=1)
        forged = admin.generate_presigned_url("put_object", Params={"Bucket": "granted", "Key": "forged-url"})
        forged = forged.replace("X-Amz-Signature=", "X-Amz-Signature=0")[:-1]
        time.sleep(2.5)
        status, body = http_request("GET", get)
        eq(status, 403, f"expired presigned GET ({body[:300]!r})")
        status, body = http_request("PUT", put, b"too late")
        eq(status, 403, f"expired presigned PUT ({body[:300]!r})")
        checks.absent(admin, "granted", "late", "expired presigned PUT")
        status, body = http_request("PUT", forged, b"forged")
        eq(status, 403, f"presigned PUT with a forged signature ({body[:300]!r})")
        checks.absent(admin, "granted", "forged-url", "forged presigned PUT")

    def bucket_key():
        granted.put_object(Bucket="granted", Key="by-bucket-key", Body=b"mine")
        eq(admin.get_object(Bucket="granted", Key="by-bucket-key")["Body"].read(), b"mine", "write to its bucket")
        eq(granted.get_object(Bucket="granted", Key="readable")["Body"].read(), b"for everyone with a key", "read")
        refused("AccessDenied", 403, granted.put_object, Bucket="other", Key="intruder", Body=b"x")
        checks.absent(admin, "other", "intruder", "PUT outside the key's bucket")
        refused("AccessDenied", 403, granted.get_object, Bucket="other", Key="readable")
        refused("AccessDenied", 403, granted.list_objects_v2, Bucket="other")
        refused("AccessDenied", 403, granted.delete_object, Bucket="other", Key="readable")
        eq(admin.get_object(Bucket="other", Key="readable")["Body"].read(), b"not for the bucket key", "kept")
        # Copying out of a bucket it may not read is reading it.
        refused(
            "AccessDenied", 403, granted.copy_object, Bucket="granted", Key="smuggled",
            CopySource={"Bucket": "other", "Key": "readable"},
        )
        checks.absent(admin, "granted", "smuggled", "copy from a forbidden bucket")
        refused("AccessDenied", 403, granted.create_bucket, Bucket="granted-too")
        refused("404", 404, admin.head_bucket, Bucket="granted-too")
        refused("AccessDenied", 403, granted.delete_bucket, Bucket="other")
        admin.head_bucket(Bucket="other")
        names = [b["Name"] for b in granted.list_buckets()["Buckets"]]
        eq(names, ["granted"], "the buckets a bucket key sees")
        refused("AccessDenied", 403, granted.put_object, Bucket="default", Key="native", Body=b"x")

    def read_only_key():
        eq(reader.get_object(Bucket="granted", Key="readable")["Body"].read(), b"for everyone with a key", "read")
        eq(reader.get_object(Bucket="other", Key="readable")["Body"].read(), b"not for the bucket key", "read other")
        keys = [o["Key"] for o in reader.list_objects_v2(Bucket="granted").get("Contents", [])]
        eq("readable" in keys, True, f"a read-only key lists ({keys})")
        refused("AccessDenied", 403, reader.put_object, Bucket="granted", Key="by-reader", Body=b"x")
        checks.absent(admin, "granted", "by-reader", "read-only PUT")
        refused("AccessDenied", 403, reader.delete_object, Bucket="granted", Key="readable")
        refused(
            "AccessDenied", 403, reader.copy_object, Bucket="granted", Key="reader-copy",
            CopySource={"Bucket": "granted", "Key": "readable"},
        )
        checks.absent(admin, "granted", "reader-copy", "read-only copy")
        refused("AccessDenied", 403, reader.create_multipart_upload, Bucket="granted", Key="reader-mp")
        eq(admin.list_multipart_uploads(Bucket="granted").get("Uploads", []), [], "uploads after a read-only create")
        refused("AccessDenied", 403, reader.create_bucket, Bucket="reader-bucket")
        refused("404", 404, admin.head_bucket, Bucket="reader-bucket")
        url = reader.generate_presigned_url("put_object", Params={"Bucket": "granted", "Key": "reader-url"})
        status, body = http_request("PUT", url, b"x")
        eq(status, 403, f"read-only presigned PUT ({body[:300]!r})")
        checks.absent(admin, "granted", "reader-url", "read-only presigned PUT")
        eq(admin.get_object(Bucket="granted", Key="readable")["Body"].read(), b"for everyone with a key", "kept")

    for name, fn in [
        ("setup", setup),
        ("unsigned_requests_are_refused", unsigned_requests),
        ("a_wrong_secret_or_unknown_key_is_refused", wrong_secret),
        ("expired_and_forged_presigned_urls_are_refused", presigned_urls),
        ("a_bucket_key_stays_in_its_bucket", bucket_key),
        ("a_read_only_key_only_reads", read_only_key),
    ]:
        checks.run(name, fn)
    return checks


def deleted_key(endpoint):
    checks = Checks(endpoint)
    reader = client(endpoint, os.environ["READ_KEY"])
    admin = client(endpoint, os.environ["ADMIN_KEY"])

    def refused_once_deleted():
        refused("InvalidAccessKeyId", 403, reader.get_object, Bucket="granted", Key="readable")
        admin.get_object(Bucket="granted", Key="readable")

    checks.run("a_deleted_key_is_refused", refused_once_deleted)
    return checks


def open_cluster(endpoint):
    checks = Checks(endpoint)
    anyone = client(endpoint)
    stranger = client(endpoint, "CKNOSUCHKEYNOSUCHKE:" + "s" * 40)

    def unsigned_works():
        anyone.create_bucket(Bucket="open")
        anyone.put_object(Bucket="open", Key="k", Body=b"open data")
        eq(anyone.get_object(Bucket="open", Key="k")["Body"].read(), b"open data", "unsigned GET")
        eq([o["Key"] for o in anyone.list_objects_v2(Bucket="open")["Contents"]], ["k"], "unsigned listing")
        anyone.put_object(Bucket="default", Key="from-s3", Body=b"s3 in the native bucket")

    def unknown_key_refused():
        refused("InvalidAccessKeyId", 403, stranger.put_object, Bucket="open", Key="stranger", Body=b"x")
        refused("404", 404, anyone.head_object, Bucket="open", Key="stranger")

    checks.run("unsigned_requests_work_without_keys", unsigned_works)
    checks.run("a_signed_request_with_an_unknown_key_is_refused", unknown_key_refused)
    return checks


def main():
    endpoint, scenario = sys.argv[1], sys.argv[2]
    checks = {"keyed": keyed, "deleted-key": deleted_key, "open": open_cluster}[scenario](endpoint)
    if checks.failed:
        print(f"FAILED: {', '.join(checks.failed)}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
