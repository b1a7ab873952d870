"""A tuspy client that can be killed at any moment and started again: it creates
the upload (or, when URL_FILE exists, resumes the upload named there through
BASE_URL, whichever API server that is) and sends FILE chunk by chunk, printing
the offset after each. Driven by tests/tus_interrupted.rs, which kills it with
SIGKILL mid-upload.

usage: tuspy_resume.py BASE_URL FILE URL_FILE NAME"""

import os
import sys
from urllib.parse import urlparse

from tusclient import client

base, path, url_file, name = sys.argv[1:5]
tus = client.TusClient(base + "/uploads")
chunk = 8 * 1024 * 1024
if os.path.exists(url_file):
    with open(url_file) as f:
        stored = f.read().strip()
    # The upload's URL through this API server: the id is all that matters.
    uploader = tus.uploader(path, url=base + urlparse(stored).path, chunk_size=chunk)
    print("resumed at", uploader.offset, flush=True)
else:
    uploader = tus.uploader(path, chunk_size=chunk, metadata={"filename": name})
    uploader.set_url(uploader.create_url())
    with open(url_file + ".tmp", "w") as f:
        f.write(uploader.url)
    os.rename(url_file + ".tmp", url_file)
    print("created", uploader.url, flush=True)
size = uploader.get_file_size()
while uploader.offset < size:
    uploader.upload_chunk()
    print("offset", uploader.offset, flush=True)
print("done", flush=True)
