"""tuspy, the reference Python tus client, against a cairn API server
(driven by tests/tus_clients.rs): a whole upload, an interrupted and resumed
one, one with Upload-Checksum, and a checksum mismatch that must surface as 460.

usage: tuspy_check.py BASE_URL FILE
Prints one line per step; exits non-zero on any failure."""

import base64
import sys

from tusclient import client
from tusclient.exceptions import TusCommunicationError
from tusclient.request import TusRequest

base, path = sys.argv[1], sys.argv[2]
tus = client.TusClient(base + "/uploads")

# 1. A whole upload in 256 KiB chunks.
up = tus.uploader(path, chunk_size=256 * 1024, metadata={"filename": "py-full"})
up.upload()
print("full", up.url, flush=True)

# 2. Interrupted after three chunks; a new uploader resumes from the server's offset.
first = tus.uploader(path, chunk_size=100 * 1024, metadata={"filename": "py-resumed"})
for _ in range(3):
    first.upload_chunk()
url = first.url
del first
second = tus.uploader(path, url=url, chunk_size=300 * 1024)
assert second.offset == 3 * 100 * 1024, second.offset
second.upload()
print("resumed", url, second.offset, flush=True)

# 3. Upload-Checksum on every chunk (sha1, tuspy's default).
checked = tus.uploader(path, chunk_size=200 * 1024, metadata={"filename": "py-checked"}, upload_checksum=True)
checked.upload()
print("checksum", checked.url, flush=True)

# 4. A wrong checksum: the server answers 460 and keeps the offset.
bad = tus.uploader(path, chunk_size=200 * 1024, metadata={"filename": "py-bad"}, upload_checksum=True)
real = TusRequest.add_checksum


def wrong_checksum(self, chunk):
    real(self, chunk)
    self._request_headers["upload-checksum"] = "sha1 " + base64.b64encode(b"\0" * 20).decode("ascii")


TusRequest.add_checksum = wrong_checksum
try:
    bad.upload_chunk()
    print("mismatch accepted", flush=True)
    sys.exit(1)
except TusCommunicationError as e:
    if e.status_code != 460:
        print("mismatch answered", e.status_code, flush=True)
        sys.exit(1)
finally:
    TusRequest.add_checksum = real
after = tus.uploader(path, url=bad.url, chunk_size=200 * 1024)
assert after.offset == 0, after.offset
print("mismatch 460", flush=True)
