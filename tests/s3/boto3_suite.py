#!/usr/bin/env python3
"""boto3 against cairn's S3 API, for real (driven by tests/s3_clients.rs).

    boto3_suite.py ENDPOINT --workdir DIR [--read-endpoint URL] [--big-mib N]

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (SigV4, region
us-east-1, path-style). An https:// ENDPOINT is verified against AWS_CA_BUNDLE
when it is set (boto3 reads it; so do the presigned-URL requests made by hand).
With --read-endpoint (a second API server) every read goes there while every write goes to ENDPOINT. --big-mib N (0: skipped) uploads an
N MiB random file with upload_file in 8 MiB parts and downloads it back.

Prints "ok <check>" or "FAIL <check>: <why>" per check, keeps going after a
failure, and exits 1 if any check failed. Uses only boto3 and the standard library.
"""

import argparse
import base64
import datetime
import gzip
import hashlib
import http.client
import os
import ssl
import sys
import time
import traceback
import urllib.parse

import boto3
import botocore
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

MIB = 1024 * 1024


class CheckFailed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


def eq(actual, expected, what):
    if actual != expected:
        raise CheckFailed(f"{what}: got {actual!r}, want {expected!r}")


def error_of(fn, *args, **kwargs):
    """Runs a call that must fail; returns (code, HTTP status)."""
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        return e.response["Error"].get("Code"), e.response["ResponseMetadata"]["HTTPStatusCode"]
    raise CheckFailed(f"{getattr(fn, '__name__', fn)} succeeded, want an error")


def fails_with(code, status, fn, *args, **kwargs):
    got = error_of(fn, *args, **kwargs)
    eq(got, (code, status), f"{getattr(fn, '__name__', fn)} error")


SLOW_REQUEST = 2.0  # seconds: a request slower than this is reported (not failed)


def report_slow_requests(c):
    """Prints every request of `c` slower than SLOW_REQUEST, to tell a stall apart."""
    started = {}

    def before(model, context, **_):
        started[id(context)] = time.monotonic()

    def after(model, context, http_response, **_):
        took = time.monotonic() - started.pop(id(context), time.monotonic())
        if took > SLOW_REQUEST:
            print(f"   slow: {model.name} answered {http_response.status_code} in {took:.1f}s", flush=True)

    c.meta.events.register("before-call.s3", before)
    c.meta.events.register("after-call.s3", after)
    return c


def client(endpoint):
    return report_slow_requests(boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=120,
        ),
    ))


def http_request(method, url, body=None, headers=None):
    """A plain HTTP request (for presigned URLs): (status, body bytes)."""
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https":
        context = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE"))
        conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=60, context=context)
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    path = u.path + ("?" + u.query if u.query else "")
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def md5_hex(data):
    return hashlib.md5(data).hexdigest()


class Suite:
    def __init__(self, args):
        self.w = client(args.endpoint)
        self.r = client(args.read_endpoint or args.endpoint)
        self.endpoint = args.endpoint
        self.workdir = args.workdir
        self.big_mib = args.big_mib
        self.bucket = "suite"
        self.failed = []

    def run(self, name, fn):
        start = time.monotonic()
        try:
            fn()
        except Exception as e:  # a check's failure, whatever it is, is reported
            self.failed.append(name)
            detail = str(e) if isinstance(e, CheckFailed) else traceback.format_exc()
            print(f"FAIL {name}: {detail}", flush=True)
            return
        print(f"ok {name} ({time.monotonic() - start:.1f}s)", flush=True)

    # -- buckets ---------------------------------------------------------------

    def buckets(self):
        w, r, b = self.w, self.r, self.bucket
        w.create_bucket(Bucket=b)
        r.head_bucket(Bucket=b)
        names = [x["Name"] for x in r.list_buckets()["Buckets"]]
        expect(b in names and "default" in names, f"list_buckets: {names}")
        loc = r.get_bucket_location(Bucket=b).get("LocationConstraint")
        expect(loc in (None, "", "us-east-1"), f"location {loc!r}")
        eq(r.get_bucket_versioning(Bucket=b).get("Status"), "Enabled", "versioning")
        fails_with(
            "NotImplemented",
            501,
            w.put_bucket_versioning,
            Bucket=b,
            VersioningConfiguration={"Status": "Suspended"},
        )
        w.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
        fails_with("BucketAlreadyOwnedByYou", 409, w.create_bucket, Bucket=b)
        fails_with("404", 404, r.head_bucket, Bucket="no-such-bucket")

    def reserved_bucket_names(self):
        # The native API's first path segments: a bucket of that name would be
        # shadowed by the native routes, so CreateBucket refuses it, S3-style.
        names = ["objects", "versions", "locate", "uploads", "admin", "healthz", "metrics"]
        answers = {name: error_of(self.w.create_bucket, Bucket=name) for name in names}
        wrong = {name: got for name, got in answers.items() if got != ("InvalidBucketName", 400)}
        eq(wrong, {}, "CreateBucket of reserved names answered other than (InvalidBucketName, 400)")

    # -- objects -----------------------------------------------------------------

    def put_get_metadata(self):
        w, r, b = self.w, self.r, self.bucket
        body = gzip.compress(b"hello from boto3\n" * 100)
        expires = datetime.datetime(2031, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
        put = w.put_object(
            Bucket=b,
            Key="docs/readme.md",
            Body=body,
            ContentType="text/markdown; charset=utf-8",
            ContentEncoding="gzip",
            CacheControl="max-age=60",
            ContentDisposition='attachment; filename="readme.md"',
            ContentLanguage="en-GB",
            Expires=expires,
            Metadata={"colour": "blue", "multi-word": "two words"},
        )
        eq(put["ETag"], f'"{md5_hex(body)}"', "PUT ETag")
        expect(put.get("VersionId"), "PUT answers a VersionId")
        for what, got in [
            ("GET", r.get_object(Bucket=b, Key="docs/readme.md")),
            ("HEAD", r.head_object(Bucket=b, Key="docs/readme.md")),
        ]:
            if what == "GET":
                eq(got["Body"].read(), body, "GET body")
            eq(got["ETag"], put["ETag"], f"{what} ETag")
            eq(got["ContentLength"], len(body), f"{what} Content-Length")
            eq(got["ContentType"], "text/markdown; charset=utf-8", f"{what} Content-Type")
            eq(got.get("ContentEncoding"), "gzip", f"{what} Content-Encoding")
            eq(got.get("CacheControl"), "max-age=60", f"{what} Cache-Control")
            eq(got.get("ContentDisposition"), 'attachment; filename="readme.md"', f"{what} Content-Disposition")
            eq(got.get("ContentLanguage"), "en-GB", f"{what} Content-Language")
            eq(got.get("Expires"), expires, f"{what} Expires")
            eq(got["Metadata"], {"colour": "blue", "multi-word": "two words"}, f"{what} metadata")
            eq(got.get("VersionId"), put["VersionId"], f"{what} VersionId")
        # Content-MD5: the right one is accepted, a wrong one refused, and the
        # refused body stores nothing.
        good = base64.b64encode(hashlib.md5(b"checked").digest()).decode()
        w.put_object(Bucket=b, Key="md5", Body=b"checked", ContentMD5=good)
        fails_with("BadDigest", 400, w.put_object, Bucket=b, Key="md5", Body=b"tampered", ContentMD5=good)
        eq(r.get_object(Bucket=b, Key="md5")["Body"].read(), b"checked", "body after a BadDigest PUT")
        eq(len(r.list_object_versions(Bucket=b, Prefix="md5").get("Versions", [])), 1, "versions after BadDigest")

    def empty_object(self):
        w, r, b = self.w, self.r, self.bucket
        put = w.put_object(Bucket=b, Key="empty", Body=b"")
        eq(put["ETag"], f'"{md5_hex(b"")}"', "empty object's ETag")
        # botocore sends `Expect: 100-continue` even with no body; answered at once
        # without a 100, it parses the next response on that pooled connection
        # against the stale status line and reads until the server closes it
        # (boto/botocore#3755). The next request must not stall.
        start = time.monotonic()
        w.put_object(Bucket=b, Key="after-empty", Body=b"next")
        took = time.monotonic() - start
        expect(took < SLOW_REQUEST, f"the PUT after an empty PUT took {took:.1f}s (a poisoned keep-alive connection)")
        got = r.get_object(Bucket=b, Key="empty")
        eq((got["ContentLength"], got["Body"].read()), (0, b""), "empty object")
        eq(got["ETag"], put["ETag"], "empty object's ETag read back")

    def ranges(self):
        w, r, b = self.w, self.r, self.bucket
        data = os.urandom(200_003)  # past the small-object threshold: striped
        w.put_object(Bucket=b, Key="ranged", Body=data)
        for header, lo, hi in [
            ("bytes=0-9", 0, 9),
            ("bytes=65530-131080", 65530, 131080),
            ("bytes=-50", len(data) - 50, len(data) - 1),
            ("bytes=199990-", 199990, len(data) - 1),
            ("bytes=199990-999999", 199990, len(data) - 1),
        ]:
            got = r.get_object(Bucket=b, Key="ranged", Range=header)
            eq(got["ResponseMetadata"]["HTTPStatusCode"], 206, f"{header} status")
            eq(got["ContentRange"], f"bytes {lo}-{hi}/{len(data)}", f"{header} Content-Range")
            eq(got["Body"].read(), data[lo : hi + 1], f"{header} body")
        fails_with("InvalidRange", 416, r.get_object, Bucket=b, Key="ranged", Range=f"bytes={len(data)}-")

    def conditional_get(self):
        w, r, b = self.w, self.r, self.bucket
        etag = w.put_object(Bucket=b, Key="cond", Body=b"conditional")["ETag"]
        past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
        future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
        eq(r.get_object(Bucket=b, Key="cond", IfMatch=etag)["Body"].read(), b"conditional", "If-Match hit")
        fails_with("PreconditionFailed", 412, r.get_object, Bucket=b, Key="cond", IfMatch='"0000"')
        fails_with("304", 304, r.get_object, Bucket=b, Key="cond", IfNoneMatch=etag)
        fails_with("304", 304, r.head_object, Bucket=b, Key="cond", IfNoneMatch=etag)
        eq(r.get_object(Bucket=b, Key="cond", IfNoneMatch='"0000"')["Body"].read(), b"conditional", "If-None-Match miss")
        fails_with("304", 304, r.get_object, Bucket=b, Key="cond", IfModifiedSince=future)
        eq(r.get_object(Bucket=b, Key="cond", IfModifiedSince=past)["Body"].read(), b"conditional", "modified since")
        fails_with("PreconditionFailed", 412, r.get_object, Bucket=b, Key="cond", IfUnmodifiedSince=past)
        eq(r.get_object(Bucket=b, Key="cond", IfUnmodifiedSince=future)["Body"].read(), b"conditional", "unmodified")
        # Conditional PUT: If-None-Match: * refuses to overwrite.
        fails_with("PreconditionFailed", 412, w.put_object, Bucket=b, Key="cond", Body=b"x", IfNoneMatch="*")
        eq(r.get_object(Bucket=b, Key="cond")["Body"].read(), b"conditional", "after a refused conditional PUT")

    # -- listings ----------------------------------------------------------------

    def listings(self):
        w, r = self.w, self.r
        b = "listing"
        w.create_bucket(Bucket=b)
        keys = ["list/a/1", "list/a/2", "list/b/1", "list/c", "list/d", "list/e/f/g", "other"]
        for k in keys:
            w.put_object(Bucket=b, Key=k, Body=k.encode())
        under = [k for k in keys if k.startswith("list/")]

        got = r.list_objects_v2(Bucket=b, Prefix="list/", Delimiter="/")
        eq([c["Prefix"] for c in got.get("CommonPrefixes", [])], ["list/a/", "list/b/", "list/e/"], "v2 prefixes")
        eq([o["Key"] for o in got.get("Contents", [])], ["list/c", "list/d"], "v2 keys under the delimiter")
        eq(got["KeyCount"], 5, "v2 KeyCount")
        eq(got["IsTruncated"], False, "v2 IsTruncated")
        entry = got["Contents"][0]
        eq(entry["ETag"], f'"{md5_hex(b"list/c")}"', "listed ETag")
        eq(entry["Size"], len("list/c"), "listed Size")

        # Pagination, two at a time, by continuation token.
        seen, pages, token = [], 0, None
        while True:
            kwargs = {"ContinuationToken": token} if token else {}
            page = r.list_objects_v2(Bucket=b, Prefix="list/", MaxKeys=2, **kwargs)
            pages += 1
            seen += [o["Key"] for o in page.get("Contents", [])]
            expect(len(page.get("Contents", [])) <= 2, f"page of {len(page.get('Contents', []))} with MaxKeys=2")
            if not page["IsTruncated"]:
                break
            token = page["NextContinuationToken"]
            expect(pages < 10, "pagination does not end")
        eq(seen, under, "v2 keys over pages")
        eq(pages, 3, "v2 pages of two")

        # Pagination with a delimiter: prefixes count towards MaxKeys, none twice.
        seen, token = [], None
        for _ in range(10):
            kwargs = {"ContinuationToken": token} if token else {}
            page = r.list_objects_v2(Bucket=b, Prefix="list/", Delimiter="/", MaxKeys=2, **kwargs)
            seen += [c["Prefix"] for c in page.get("CommonPrefixes", [])]
            seen += [o["Key"] for o in page.get("Contents", [])]
            if not page["IsTruncated"]:
                break
            token = page["NextContinuationToken"]
        eq(sorted(seen), ["list/a/", "list/b/", "list/c", "list/d", "list/e/"], "v2 delimited over pages")
        eq(len(seen), 5, "v2 delimited entries, none twice")

        got = r.list_objects_v2(Bucket=b, Prefix="list/", StartAfter="list/b/1")
        eq([o["Key"] for o in got.get("Contents", [])], ["list/c", "list/d", "list/e/f/g"], "StartAfter")

        paginated = [
            o["Key"]
            for page in r.get_paginator("list_objects_v2").paginate(Bucket=b, PaginationConfig={"PageSize": 3})
            for o in page.get("Contents", [])
        ]
        eq(paginated, keys, "boto3 paginator")

        # v1, by marker.
        seen, marker = [], ""
        for _ in range(10):
            page = r.list_objects(Bucket=b, Prefix="list/", MaxKeys=2, Marker=marker)
            contents = [o["Key"] for o in page.get("Contents", [])]
            seen += contents
            if not page["IsTruncated"]:
                break
            marker = page.get("NextMarker") or contents[-1]
        eq(seen, under, "v1 keys over pages")
        got = r.list_objects(Bucket=b, Prefix="list/", Delimiter="/", Marker="list/a/2")
        eq([c["Prefix"] for c in got.get("CommonPrefixes", [])], ["list/b/", "list/e/"], "v1 prefixes after a marker")
        eq([o["Key"] for o in got.get("Contents", [])], ["list/c", "list/d"], "v1 keys after a marker")
        fails_with("NoSuchBucket", 404, r.list_objects_v2, Bucket="no-such-bucket")

    # -- versions ----------------------------------------------------------------

    def versions(self):
        w, r, b = self.w, self.r, self.bucket
        v1 = w.put_object(Bucket=b, Key="ver", Body=b"one")["VersionId"]
        v2 = w.put_object(Bucket=b, Key="ver", Body=b"two")["VersionId"]
        expect(v1 != v2, f"two PUTs, two version ids ({v1}, {v2})")
        listed = r.list_object_versions(Bucket=b, Prefix="ver")
        vs = listed.get("Versions", [])
        eq(sorted(v["VersionId"] for v in vs), sorted([v1, v2]), "listed versions")
        eq([v["VersionId"] for v in vs if v["IsLatest"]], [v2], "the latest version")
        eq(r.get_object(Bucket=b, Key="ver", VersionId=v1)["Body"].read(), b"one", "GET by VersionId")
        eq(r.head_object(Bucket=b, Key="ver", VersionId=v1)["ContentLength"], 3, "HEAD by VersionId")
        eq(r.get_object(Bucket=b, Key="ver")["Body"].read(), b"two", "GET latest")

        deleted = w.delete_object(Bucket=b, Key="ver")
        eq(deleted.get("DeleteMarker"), True, "DELETE makes a delete marker")
        marker = deleted["VersionId"]
        fails_with("NoSuchKey", 404, r.get_object, Bucket=b, Key="ver")
        listed = r.list_object_versions(Bucket=b, Prefix="ver")
        markers = listed.get("DeleteMarkers", [])
        eq([(m["VersionId"], m["IsLatest"]) for m in markers], [(marker, True)], "listed delete marker")
        eq(len(listed.get("Versions", [])), 2, "versions kept under the marker")
        expect(not r.list_objects_v2(Bucket=b, Prefix="ver").get("Contents"), "a deleted key is not listed")
        eq(r.get_object(Bucket=b, Key="ver", VersionId=v1)["Body"].read(), b"one", "old version after delete")

        w.delete_object(Bucket=b, Key="ver", VersionId=marker)
        eq(r.get_object(Bucket=b, Key="ver")["Body"].read(), b"two", "the marker removed: latest back")
        w.delete_object(Bucket=b, Key="ver", VersionId=v2)
        eq(r.get_object(Bucket=b, Key="ver")["Body"].read(), b"one", "v2 removed for good: v1 is latest")
        fails_with("NoSuchVersion", 404, r.get_object, Bucket=b, Key="ver", VersionId=v2)
        fails_with("NoSuchVersion", 404, r.get_object, Bucket=b, Key="ver", VersionId="999999")
        eq([v["VersionId"] for v in r.list_object_versions(Bucket=b, Prefix="ver").get("Versions", [])], [v1], "left")

    # -- copy and batch delete ------------------------------------------------------

    def copy(self):
        w, r, b = self.w, self.r, self.bucket
        src = w.put_object(
            Bucket=b, Key="copy/src", Body=b"copy me", ContentType="text/x-src", Metadata={"origin": "src"}
        )
        w.put_object(Bucket=b, Key="copy/src", Body=b"second version")
        copied = w.copy_object(Bucket=b, Key="copy/same", CopySource={"Bucket": b, "Key": "copy/src"})
        eq(r.get_object(Bucket=b, Key="copy/same")["Body"].read(), b"second version", "copy of the latest")
        eq(copied["CopyObjectResult"]["ETag"], f'"{md5_hex(b"second version")}"', "copy's ETag")

        w.copy_object(
            Bucket=b, Key="copy/old", CopySource={"Bucket": b, "Key": "copy/src", "VersionId": src["VersionId"]}
        )
        got = r.get_object(Bucket=b, Key="copy/old")
        eq(got["Body"].read(), b"copy me", "copy of a version")
        eq(got["ContentType"], "text/x-src", "COPY keeps Content-Type")
        eq(got["Metadata"], {"origin": "src"}, "COPY keeps metadata")

        w.copy_object(
            Bucket=b,
            Key="copy/replaced",
            CopySource={"Bucket": b, "Key": "copy/src", "VersionId": src["VersionId"]},
            MetadataDirective="REPLACE",
            ContentType="application/x-new",
            Metadata={"fresh": "yes"},
        )
        got = r.head_object(Bucket=b, Key="copy/replaced")
        eq((got["ContentType"], got["Metadata"]), ("application/x-new", {"fresh": "yes"}), "REPLACE")

        # Across buckets, into the native API's bucket.
        w.copy_object(Bucket="default", Key="from-s3/copied", CopySource={"Bucket": b, "Key": "copy/old"})
        eq(r.get_object(Bucket="default", Key="from-s3/copied")["Body"].read(), b"copy me", "copy into default")
        fails_with("NoSuchKey", 404, w.copy_object, Bucket=b, Key="x", CopySource={"Bucket": b, "Key": "copy/none"})

    def delete_objects(self):
        w, r, b = self.w, self.r, self.bucket
        for i in range(5):
            w.put_object(Bucket=b, Key=f"batch/{i}", Body=b"x")
        out = w.delete_objects(
            Bucket=b,
            Delete={"Objects": [{"Key": "batch/0"}, {"Key": "batch/1"}, {"Key": "batch/2"}, {"Key": "batch/none"}]},
        )
        eq(sorted(d["Key"] for d in out.get("Deleted", [])), ["batch/0", "batch/1", "batch/2", "batch/none"], "Deleted")
        eq(out.get("Errors", []), [], "batch errors")
        eq([o["Key"] for o in r.list_objects_v2(Bucket=b, Prefix="batch/").get("Contents", [])], ["batch/3", "batch/4"], "left")
        # By version: the version goes for good.
        v = r.head_object(Bucket=b, Key="batch/3")["VersionId"]
        out = w.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "batch/3", "VersionId": v}], "Quiet": True})
        eq(out.get("Deleted", []), [], "Quiet answers no Deleted")
        versions = r.list_object_versions(Bucket=b, Prefix="batch/3")
        eq((versions.get("Versions", []), versions.get("DeleteMarkers", [])), ([], []), "batch/3 gone for good")

    # -- multipart -----------------------------------------------------------------

    def multipart_big(self):
        if not self.big_mib:
            print("   multipart_big: nothing to do (--big-mib 0)")
            return
        w, r, b = self.w, self.r, self.bucket
        path = os.path.join(self.workdir, "big.bin")
        size = self.big_mib * MIB + 12345  # a short last part
        part = 8 * MIB
        sha, md5s = hashlib.sha256(), []
        with open(path, "wb") as f:
            left = size
            while left:
                chunk = os.urandom(min(part, left))
                f.write(chunk)
                sha.update(chunk)
                md5s.append(hashlib.md5(chunk).digest())
                left -= len(chunk)
        config = TransferConfig(multipart_threshold=part, multipart_chunksize=part, max_concurrency=4)
        t0 = time.monotonic()
        w.upload_file(path, b, "big/file.bin", Config=config, ExtraArgs={"ContentType": "application/x-big"})
        up = time.monotonic() - t0
        head = r.head_object(Bucket=b, Key="big/file.bin")
        want_etag = f'"{hashlib.md5(b"".join(md5s)).hexdigest()}-{len(md5s)}"'
        eq(head["ETag"], want_etag, "multipart ETag (md5 of part md5s, -N)")
        eq(head["ContentLength"], size, "multipart size")
        eq(head["ContentType"], "application/x-big", "multipart Content-Type")
        # A range across the first part boundary.
        got = r.get_object(Bucket=b, Key="big/file.bin", Range=f"bytes={part - 10}-{part + 9}")["Body"].read()
        with open(path, "rb") as f:
            f.seek(part - 10)
            eq(got, f.read(20), "range across a part boundary")
        back = os.path.join(self.workdir, "big.back")
        t0 = time.monotonic()
        self.r.download_file(b, "big/file.bin", back, Config=config)
        down = time.monotonic() - t0
        h = hashlib.sha256()
        with open(back, "rb") as f:
            for chunk in iter(lambda: f.read(MIB), b""):
                h.update(chunk)
        eq(h.hexdigest(), sha.hexdigest(), "SHA-256 of the download")
        os.remove(path)
        os.remove(back)
        print(f"   {size / MIB:.0f} MiB: upload {up:.1f}s ({size / MIB / up:.0f} MiB/s), download {down:.1f}s")

    def multipart_parts(self):
        w, r, b = self.w, self.r, self.bucket
        p1, p2 = os.urandom(5 * MIB), os.urandom(MIB + 7)
        mp = w.create_multipart_upload(Bucket=b, Key="mp/two", ContentType="text/x-mp", Metadata={"m": "1"})
        uid = mp["UploadId"]
        e1 = w.upload_part(Bucket=b, Key="mp/two", UploadId=uid, PartNumber=1, Body=p1)["ETag"]
        e2 = w.upload_part(Bucket=b, Key="mp/two", UploadId=uid, PartNumber=2, Body=p2)["ETag"]
        eq((e1, e2), (f'"{md5_hex(p1)}"', f'"{md5_hex(p2)}"', ), "part ETags")
        parts = r.list_parts(Bucket=b, Key="mp/two", UploadId=uid)["Parts"]
        eq([(p["PartNumber"], p["ETag"], p["Size"]) for p in parts], [(1, e1, len(p1)), (2, e2, len(p2))], "ListParts")
        fails_with(
            "InvalidPart",
            400,
            w.complete_multipart_upload,
            Bucket=b,
            Key="mp/two",
            UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e1}]},
        )
        done = w.complete_multipart_upload(
            Bucket=b,
            Key="mp/two",
            UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]},
        )
        want = f'"{hashlib.md5(hashlib.md5(p1).digest() + hashlib.md5(p2).digest()).hexdigest()}-2"'
        eq(done["ETag"], want, "completed ETag")
        got = r.get_object(Bucket=b, Key="mp/two")
        eq(got["Body"].read(), p1 + p2, "completed body")
        eq((got["ContentType"], got["Metadata"]), ("text/x-mp", {"m": "1"}), "attributes given at create")

        # A first part under 5 MiB: EntityTooSmall, and no object.
        uid = w.create_multipart_upload(Bucket=b, Key="mp/small")["UploadId"]
        s1 = w.upload_part(Bucket=b, Key="mp/small", UploadId=uid, PartNumber=1, Body=b"a" * MIB)["ETag"]
        s2 = w.upload_part(Bucket=b, Key="mp/small", UploadId=uid, PartNumber=2, Body=b"b" * MIB)["ETag"]
        fails_with(
            "EntityTooSmall",
            400,
            w.complete_multipart_upload,
            Bucket=b,
            Key="mp/small",
            UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": s1}, {"PartNumber": 2, "ETag": s2}]},
        )
        fails_with("NoSuchKey", 404, r.get_object, Bucket=b, Key="mp/small")
        w.abort_multipart_upload(Bucket=b, Key="mp/small", UploadId=uid)

        # UploadPartCopy: a 5 MiB range of mp/two, then all of a small object.
        w.put_object(Bucket=b, Key="mp/tail", Body=b"tail bytes")
        uid = w.create_multipart_upload(Bucket=b, Key="mp/copied")["UploadId"]
        c1 = w.upload_part_copy(
            Bucket=b,
            Key="mp/copied",
            UploadId=uid,
            PartNumber=1,
            CopySource={"Bucket": b, "Key": "mp/two"},
            CopySourceRange=f"bytes=1-{5 * MIB}",
        )["CopyPartResult"]["ETag"]
        c2 = w.upload_part_copy(
            Bucket=b, Key="mp/copied", UploadId=uid, PartNumber=2, CopySource={"Bucket": b, "Key": "mp/tail"}
        )["CopyPartResult"]["ETag"]
        eq(c1, f'"{md5_hex((p1 + p2)[1 : 5 * MIB + 1])}"', "copied part's ETag")
        w.complete_multipart_upload(
            Bucket=b,
            Key="mp/copied",
            UploadId=uid,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": c1}, {"PartNumber": 2, "ETag": c2}]},
        )
        eq(r.get_object(Bucket=b, Key="mp/copied")["Body"].read(), (p1 + p2)[1 : 5 * MIB + 1] + b"tail bytes", "copy")

    def multipart_abort(self):
        w, r, b = self.w, self.r, self.bucket
        uid = w.create_multipart_upload(Bucket=b, Key="mp/aborted")["UploadId"]
        w.upload_part(Bucket=b, Key="mp/aborted", UploadId=uid, PartNumber=1, Body=b"part")
        listed = r.list_multipart_uploads(Bucket=b, Prefix="mp/")
        eq([(u["Key"], u["UploadId"]) for u in listed.get("Uploads", [])], [("mp/aborted", uid)], "in-flight uploads")
        eq(len(r.list_parts(Bucket=b, Key="mp/aborted", UploadId=uid)["Parts"]), 1, "its part")
        w.abort_multipart_upload(Bucket=b, Key="mp/aborted", UploadId=uid)
        eq(r.list_multipart_uploads(Bucket=b, Prefix="mp/").get("Uploads", []), [], "uploads after the abort")
        fails_with("NoSuchUpload", 404, r.list_parts, Bucket=b, Key="mp/aborted", UploadId=uid)
        fails_with(
            "NoSuchUpload", 404, w.upload_part, Bucket=b, Key="mp/aborted", UploadId=uid, PartNumber=2, Body=b"late"
        )
        fails_with("NoSuchKey", 404, r.get_object, Bucket=b, Key="mp/aborted")

    # -- presigned URLs --------------------------------------------------------------

    def presigned(self):
        w, r, b = self.w, self.r, self.bucket
        w.put_object(Bucket=b, Key="presigned/get", Body=b"fetched by URL")
        url = r.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "presigned/get"}, ExpiresIn=60)
        eq(http_request("GET", url), (200, b"fetched by URL"), "presigned GET")
        # The same URL for another key: the signature no longer matches.
        status, body = http_request("GET", url.replace("presigned/get", "presigned/gex"))
        eq(status, 403, "tampered presigned GET")
        expect(b"SignatureDoesNotMatch" in body, f"tampered presigned GET says why: {body[:200]!r}")

        url = w.generate_presigned_url("put_object", Params={"Bucket": b, "Key": "presigned/put"}, ExpiresIn=60)
        status, body = http_request("PUT", url, body=b"stored by URL")
        eq(status, 200, f"presigned PUT ({body[:200]!r})")
        eq(r.get_object(Bucket=b, Key="presigned/put")["Body"].read(), b"stored by URL", "presigned PUT's object")

        get = r.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "presigned/get"}, ExpiresIn=1)
        put = w.generate_presigned_url("put_object", Params={"Bucket": b, "Key": "presigned/late"}, ExpiresIn=1)
        time.sleep(2.5)
        status, body = http_request("GET", get)
        eq(status, 403, f"expired presigned GET ({body[:200]!r})")
        status, body = http_request("PUT", put, body=b"too late")
        eq(status, 403, f"expired presigned PUT ({body[:200]!r})")
        fails_with("404", 404, r.head_object, Bucket=b, Key="presigned/late")

    # -- errors ------------------------------------------------------------------------

    def errors(self):
        w, r, b = self.w, self.r, self.bucket
        fails_with("NoSuchKey", 404, r.get_object, Bucket=b, Key="no/such/key")
        fails_with("404", 404, r.head_object, Bucket=b, Key="no/such/key")
        fails_with("NoSuchBucket", 404, r.get_object, Bucket="no-such-bucket", Key="k")
        fails_with("NoSuchBucket", 404, w.put_object, Bucket="no-such-bucket", Key="k", Body=b"x")
        fails_with("BucketNotEmpty", 409, w.delete_bucket, Bucket=b)

        # A bucket whose only key is deleted still holds versions (and its delete
        # marker): not empty until every version is removed for good.
        e = "emptied"
        w.create_bucket(Bucket=e)
        v = w.put_object(Bucket=e, Key="k", Body=b"x")["VersionId"]
        marker = w.delete_object(Bucket=e, Key="k")["VersionId"]
        fails_with("BucketNotEmpty", 409, w.delete_bucket, Bucket=e)
        w.delete_object(Bucket=e, Key="k", VersionId=v)
        fails_with("BucketNotEmpty", 409, w.delete_bucket, Bucket=e)
        w.delete_object(Bucket=e, Key="k", VersionId=marker)
        w.delete_bucket(Bucket=e)
        fails_with("404", 404, r.head_bucket, Bucket=e)
        fails_with("NoSuchBucket", 404, w.delete_bucket, Bucket=e)
        names = [x["Name"] for x in r.list_buckets()["Buckets"]]
        expect(e not in names, f"deleted bucket still listed: {names}")


CHECKS = [
    "buckets",
    "reserved_bucket_names",
    "put_get_metadata",
    "empty_object",
    "ranges",
    "conditional_get",
    "listings",
    "versions",
    "copy",
    "delete_objects",
    "multipart_parts",
    "multipart_abort",
    "multipart_big",
    "presigned",
    "errors",
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("endpoint")
    p.add_argument("--read-endpoint")
    p.add_argument("--workdir", required=True)
    p.add_argument("--big-mib", type=int, default=0)
    p.add_argument("--checks", default=",".join(CHECKS))
    args = p.parse_args()
    print(f"boto3 {boto3.__version__}, botocore {botocore.__version__}", flush=True)
    suite = Suite(args)
    for name in args.checks.split(","):
        suite.run(name, getattr(suite, name))
    if suite.failed:
        print(f"FAILED: {', '.join(suite.failed)}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
