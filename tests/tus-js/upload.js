// tus-js-client, the reference JavaScript tus client, against a cairn API server
// (driven by tests/tus_clients.rs): a whole upload, and one aborted after some
// progress and started again (it resumes with HEAD on its upload URL).
//
// usage: node upload.js BASE_URL FILE
// Prints one line per step; exits non-zero on any failure.
const fs = require("fs");
const tus = require("tus-js-client");

const [base, path] = process.argv.slice(2);
const data = fs.readFileSync(path);

function upload(name, chunkSize, abortAt) {
  return new Promise((resolve, reject) => {
    let aborted = false;
    let resumedFrom = null;
    const u = new tus.Upload(data, {
      endpoint: base + "/uploads",
      chunkSize,
      metadata: { filename: name },
      retryDelays: null,
      onError: reject,
      onProgress: (sent) => {
        if (abortAt !== undefined && !aborted && sent >= abortAt) {
          aborted = true;
          u.abort().then(() => {
            resumedFrom = u.url;
            u.start();
          }, reject);
        }
      },
      onSuccess: () => resolve({ url: u.url, resumedFrom }),
    });
    u.start();
  });
}

(async () => {
  const full = await upload("js-full", 256 * 1024);
  console.log("full", full.url);
  const resumed = await upload("js-resumed", 64 * 1024, 200 * 1024);
  if (!resumed.resumedFrom || resumed.resumedFrom !== resumed.url) {
    throw new Error("the upload was not resumed on its URL: " + JSON.stringify(resumed));
  }
  console.log("resumed", resumed.url);
})().catch((e) => {
  console.error("failed:", e && e.message ? e.message : e);
  process.exit(1);
});
