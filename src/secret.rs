//! The cluster secret: what lets the data tier and the bus trust only members.
//!
//! Every process of a closed cluster reads the same secret file
//! (`--cluster-secret-file`). With it, every request an API server sends a data
//! server ([`crate::data::client`]) and every message put on the bus
//! ([`crate::bus`]) carries an HMAC-SHA256 over what it asks for, a timestamp and
//! a fresh nonce; the receiver ([`Verifier`]) refuses what does not verify, what was
//! signed more than [`CLOCK_WINDOW`] away from its own clock, and a nonce it has
//! seen already (a replay of a captured request or message).
//!
//! What a signature covers:
//! - an HTTP request: its method, its path and query, and its `x-cairn-*` and
//!   `Range` headers (everything a data server acts on besides the body); the body
//!   is not covered: a shard's bytes are checked by its content hash on every read,
//!   and on a network where someone can alter traffic in flight `--internal-tls`
//!   is what protects it;
//! - a bus message: its kind (heartbeat, locate request, locate reply), its
//!   `reply_to` and `correlation_id`, and its whole JSON body.
//!
//! The file holds one secret per line (blank lines and `#` comments ignored), each
//! at least [`MIN_SECRET_LEN`] bytes. The first line signs; every line verifies.
//! Each secret has a short id (a hash of it, never the secret) carried in the
//! signature, so the receiver picks the right one at once. Rotation without
//! downtime: add the new secret as a second line everywhere, then move it first
//! everywhere, then remove the old one. A process re-reads the file when it changes
//! ([`ClusterSecret::watch`], every [`RELOAD_EVERY`]), so none of it needs a
//! restart; a file that no longer parses keeps the secrets in use and is reported.
//!
//! Uses the RustCrypto `hmac` and `sha2` crates (already in the tree through s3s and
//! tokio-postgres) and compares MACs in constant time through `Mac::verify_slice`.
//!
//! The file runs past 600 lines only by its unit tests (the code is about 510 lines),
//! which test signing and verifying together, so it stays one file.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderValue};
use sha2_011::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::filestamp::FileStamp;

type HmacSha256 = Hmac<Sha256>;

/// The HTTP header carrying a request's signature.
pub const SIGNATURE_HEADER: &str = "x-cairn-signature";
/// How far a signature's timestamp may lie from the receiver's clock, either way.
/// Hosts of a cluster keep their clocks within milliseconds of each other (NTP); 15 s
/// leaves room for a slow start or a stepped clock, and a captured request can only
/// be replayed inside it, where the nonce check refuses it.
pub const CLOCK_WINDOW: Duration = Duration::from_secs(15);
/// The shortest secret accepted: 32 bytes, as `openssl rand -hex 32` makes 64.
pub const MIN_SECRET_LEN: usize = 32;
/// How often [`ClusterSecret::watch`] looks at the file for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// Nonces one [`Verifier`] remembers per generation at most (two generations of
/// `2 × CLOCK_WINDOW` each): about 40 MiB each when full, which takes over 65,000
/// signed requests a second to one receiver. Past it, requests are refused
/// ([`Refusal::Busy`]) rather than remembered by nobody.
pub const MAX_NONCES: usize = 1 << 21;

/// What the bus prefixes to a signed message's JSON body, before the signature and a
/// newline.
pub const BUS_PREFIX: &[u8] = b"CAIRN-SIG ";

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The file cannot be read or written.
    #[error("cluster secret file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no secret.
    #[error("cluster secret file {0} holds no secret (one per line, at least {MIN_SECRET_LEN} bytes)")]
    Empty(PathBuf),
    /// A secret is too short to be one.
    #[error(
        "cluster secret {line} of {path} is {len} bytes; at least {MIN_SECRET_LEN} are needed (`openssl rand -hex 32`)"
    )]
    TooShort {
        /// The file (or `<text>`).
        path: PathBuf,
        /// Which secret (1 = the first).
        line: usize,
        /// Its length.
        len: usize,
    },
}

/// Why a signed request or message was refused; also the `reason` label of the
/// refusal metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// It carries no signature.
    #[error("no cluster signature")]
    Missing,
    /// The signature is not `<key id>.<ms>.<nonce>.<mac>`.
    #[error("malformed cluster signature")]
    Malformed,
    /// Signed with a secret this process does not hold.
    #[error("signed with an unknown cluster secret")]
    UnknownKey,
    /// The MAC does not match what was received.
    #[error("cluster signature does not match")]
    BadSignature,
    /// Signed too long ago (or too far ahead): outside [`CLOCK_WINDOW`].
    #[error("cluster signature outside the clock window")]
    Stale,
    /// Its nonce was seen already: a replay.
    #[error("cluster signature replayed")]
    Replay,
    /// The receiver remembers [`MAX_NONCES`] already and cannot check for a replay.
    #[error("too many signed requests to check for replays; retry")]
    Busy,
}

impl Refusal {
    /// The metric label of this refusal.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "unsigned",
            Refusal::Malformed => "malformed_signature",
            Refusal::UnknownKey => "unknown_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::Stale => "stale",
            Refusal::Replay => "replay",
            Refusal::Busy => "busy",
        }
    }
}

/// One secret and its public id.
struct Key {
    id: String,
    mac: HmacSha256,
}

impl Key {
    fn new(secret: &[u8]) -> Key {
        let digest = Sha256::new().chain_update(b"cairn cluster key id\0").chain_update(secret).finalize();
        let id = hex::encode(&digest[..4]);
        Key { id, mac: HmacSha256::new_from_slice(secret).expect("HMAC takes a key of any length") }
    }

    /// The MAC of `parts`, each length-prefixed so no two lists share an encoding.
    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(b"cairn-v1\0");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }
}

/// The secrets in use: the first signs, all verify.
struct Keys {
    keys: Vec<Key>,
}

impl Keys {
    fn parse(text: &str, path: &Path) -> Result<Keys, SecretError> {
        let mut keys = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            if line.len() < MIN_SECRET_LEN {
                return Err(SecretError::TooShort { path: path.into(), line: keys.len() + 1, len: line.len() });
            }
            keys.push(Key::new(line.as_bytes()));
        }
        if keys.is_empty() {
            return Err(SecretError::Empty(path.into()));
        }
        Ok(Keys { keys })
    }
}

/// The cluster secret of this process, shared by its data client, data server and
/// bus. Cheap to clone.
#[derive(Clone)]
pub struct ClusterSecret {
    inner: Arc<Inner>,
}

struct Inner {
    path: Option<PathBuf>,
    keys: RwLock<Arc<Keys>>,
    stamp: Mutex<Option<FileStamp>>,
    /// Owns the file watch ([`ClusterSecret::watch`]).
    tasks: TaskTracker,
}

impl std::fmt::Debug for ClusterSecret {
    /// Names the key ids and the file, never a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSecret").field("path", &self.inner.path).field("keys", &self.key_ids()).finish()
    }
}

impl ClusterSecret {
    /// Secrets from `text` (the file's format), not tied to a file.
    pub fn from_text(text: &str) -> Result<ClusterSecret, SecretError> {
        let keys = Keys::parse(text, Path::new("<text>"))?;
        Ok(ClusterSecret::with(None, keys, None))
    }

    /// Reads the secret file at `path`.
    pub fn load(path: &Path) -> Result<ClusterSecret, SecretError> {
        let io = |source| SecretError::Io { path: path.into(), source };
        let before = FileStamp::of(path).map_err(io)?;
        let keys = Keys::parse(&std::fs::read_to_string(path).map_err(io)?, path)?;
        warn_if_readable_by_others(path);
        Ok(ClusterSecret::with(Some(path.into()), keys, Some(before)))
    }

    /// Reads the secret file at `path`, first writing one with a fresh secret if
    /// there is none (mode 0600, made visible by an atomic rename): `cairn dev`'s own.
    pub fn load_or_create(path: &Path) -> Result<ClusterSecret, SecretError> {
        if !path.exists() {
            let io = |source| SecretError::Io { path: path.into(), source };
            let tmp = path.with_extension("tmp");
            let mut file = std::fs::OpenOptions::new();
            file.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
            let mut file = file.open(&tmp).map_err(io)?;
            writeln!(file, "# cairn cluster secret (one per line; the first signs). Keep it private.").map_err(io)?;
            writeln!(file, "{}", generate()).map_err(io)?;
            file.sync_all().map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)?;
        }
        ClusterSecret::load(path)
    }

    fn with(path: Option<PathBuf>, keys: Keys, stamp: Option<FileStamp>) -> ClusterSecret {
        let tasks = TaskTracker::new();
        ClusterSecret {
            inner: Arc::new(Inner { path, keys: RwLock::new(Arc::new(keys)), stamp: Mutex::new(stamp), tasks }),
        }
    }

    fn keys(&self) -> Arc<Keys> {
        self.inner.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The ids of the secrets in use, the signing one first (for logs and status).
    pub fn key_ids(&self) -> Vec<String> {
        self.keys().keys.iter().map(|k| k.id.clone()).collect()
    }

    /// The file the secrets came from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Re-reads the file if it changed since it was last read. Returns whether the
    /// secrets changed; on an error the secrets in use stay.
    pub fn reload_if_changed(&self) -> Result<bool, SecretError> {
        let Some(path) = &self.inner.path else { return Ok(false) };
        let io = |source| SecretError::Io { path: path.clone(), source };
        let now = FileStamp::of(path).map_err(io)?;
        let mut last = self.inner.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if *last == Some(now) {
            return Ok(false);
        }
        // Remembered before parsing: a broken file is reported once, not every poll.
        *last = Some(now);
        let keys = Keys::parse(&std::fs::read_to_string(path).map_err(io)?, path)?;
        *self.inner.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(true)
    }

    /// Re-reads the file whenever it changes until `shutdown`, on a task of its own
    /// that [`stopped`](ClusterSecret::stopped) waits for.
    pub fn watch(&self, shutdown: CancellationToken) {
        if self.inner.path.is_none() {
            return;
        }
        let secret = self.clone();
        self.inner.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RELOAD_EVERY) => {}
                }
                let s = secret.clone();
                match tokio::task::spawn_blocking(move || s.reload_if_changed()).await {
                    Ok(Ok(true)) => tracing::info!(keys = ?secret.key_ids(), "cluster secret file reloaded"),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cluster secret file not reloaded; the secrets in use stay")
                    }
                    Err(e) => tracing::error!(error = %e, "cluster secret reload task failed"),
                }
            }
        });
    }

    /// Waits until the file watch has ended (at once when there is none): after its
    /// `shutdown` token is cancelled, once a reload under way has finished.
    pub async fn stopped(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// A signature over `parts`, made now with the first secret:
    /// `<key id>.<unix ms>.<nonce hex>.<mac hex>`.
    pub fn sign(&self, parts: &[&[u8]]) -> String {
        self.sign_at(unix_ms(SystemTime::now()), rand::random::<u128>(), parts)
    }

    fn sign_at(&self, ms: u64, nonce: u128, parts: &[&[u8]]) -> String {
        let keys = self.keys();
        let key = &keys.keys[0];
        let (ms, nonce) = (ms.to_string(), format!("{nonce:032x}"));
        let mut all: Vec<&[u8]> = vec![ms.as_bytes(), nonce.as_bytes()];
        all.extend_from_slice(parts);
        let mac = hex::encode(key.mac(&all).finalize().into_bytes());
        format!("{}.{ms}.{nonce}.{mac}", key.id)
    }

    /// Checks `signature` over `parts` and returns its timestamp and nonce; the
    /// clock and the replay check are the [`Verifier`]'s.
    fn check(&self, signature: &str, parts: &[&[u8]]) -> Result<(u64, u128), Refusal> {
        let mut fields = signature.split('.');
        let (Some(id), Some(ms), Some(nonce), Some(mac), None) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(Refusal::Malformed);
        };
        let ms_value: u64 = ms.parse().map_err(|_| Refusal::Malformed)?;
        if nonce.len() != 32 {
            return Err(Refusal::Malformed);
        }
        let nonce_value = u128::from_str_radix(nonce, 16).map_err(|_| Refusal::Malformed)?;
        let mac = hex::decode(mac).map_err(|_| Refusal::Malformed)?;
        let keys = self.keys();
        let key = keys.keys.iter().find(|k| k.id == id).ok_or(Refusal::UnknownKey)?;
        let mut all: Vec<&[u8]> = vec![ms.as_bytes(), nonce.as_bytes()];
        all.extend_from_slice(parts);
        key.mac(&all).verify_slice(&mac).map_err(|_| Refusal::BadSignature)?;
        Ok((ms_value, nonce_value))
    }

    /// Adds a [`SIGNATURE_HEADER`] to an HTTP request about to be sent to a data
    /// server, over what the [module doc](self) says a request signature covers.
    pub fn sign_headers(&self, method: &http::Method, path_and_query: &str, headers: &mut HeaderMap) {
        let covered = covered_headers(headers);
        let signature = self.sign(&http_parts(method, path_and_query, &covered));
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(&signature).expect("hex and digits are a header value"));
    }
}

/// Warns when the secret file can be read by others than its owner.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the cluster secret file is readable by others; chmod 600 it");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// A fresh secret: 32 random bytes as 64 hex digits.
pub fn generate() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What a request signature covers, the same for the signer and the verifier: the
/// method, the path and query, and the [`covered_headers`].
fn http_parts<'a>(method: &'a http::Method, path_and_query: &'a str, covered: &'a [u8]) -> [&'a [u8]; 4] {
    [b"http", method.as_str().as_bytes(), path_and_query.as_bytes(), covered]
}

/// The headers a request signature covers, in one canonical byte string:
/// `name:value\n` for every `x-cairn-*` header but the signature itself and for
/// `Range`, sorted by name, values in the order sent.
fn covered_headers(headers: &HeaderMap) -> Vec<u8> {
    let mut names: Vec<&str> = headers
        .keys()
        .map(|n| n.as_str())
        .filter(|n| (n.starts_with("x-cairn-") && *n != SIGNATURE_HEADER) || *n == "range")
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        for value in headers.get_all(name) {
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
    }
    out
}

/// The seen nonces of one receiver, in two generations of `2 × CLOCK_WINDOW`: a
/// nonce is remembered at least that long, and a signature older than
/// [`CLOCK_WINDOW`] is refused by its timestamp anyway.
struct Nonces {
    current: HashSet<u128>,
    previous: HashSet<u128>,
    started: Instant,
}

impl Nonces {
    fn first_use(&mut self, nonce: u128, now: Instant) -> Result<(), Refusal> {
        let generation = 2 * CLOCK_WINDOW;
        let age = now.saturating_duration_since(self.started);
        if age >= 2 * generation {
            self.current.clear();
            self.previous.clear();
            self.started = now;
        } else if age >= generation {
            self.previous = std::mem::take(&mut self.current);
            self.started = now;
        }
        if self.current.contains(&nonce) || self.previous.contains(&nonce) {
            return Err(Refusal::Replay);
        }
        if self.current.len() >= MAX_NONCES {
            return Err(Refusal::Busy);
        }
        self.current.insert(nonce);
        Ok(())
    }
}

/// Checks signatures for one receiver (a data server, one bus subscription): the
/// MAC, the clock window, and that no nonce is used twice. Each receiver keeps its
/// own nonces: a fanout message reaches every subscriber once, legitimately.
pub struct Verifier {
    secret: ClusterSecret,
    nonces: Mutex<Nonces>,
}

impl Verifier {
    /// A verifier of signatures made with `secret`'s secrets.
    pub fn new(secret: ClusterSecret) -> Verifier {
        let nonces = Nonces { current: HashSet::new(), previous: HashSet::new(), started: Instant::now() };
        Verifier { secret, nonces: Mutex::new(nonces) }
    }

    /// Checks `signature` over `parts`: a valid MAC by a secret in use, made within
    /// [`CLOCK_WINDOW`] of now, with a nonce not seen before (remembered only once
    /// the MAC is valid, so forgeries cannot fill the memory).
    pub fn verify(&self, signature: &str, parts: &[&[u8]]) -> Result<(), Refusal> {
        self.verify_at(signature, parts, SystemTime::now())
    }

    fn verify_at(&self, signature: &str, parts: &[&[u8]], now: SystemTime) -> Result<(), Refusal> {
        let (ms, nonce) = self.secret.check(signature, parts)?;
        if unix_ms(now).abs_diff(ms) > CLOCK_WINDOW.as_millis() as u64 {
            return Err(Refusal::Stale);
        }
        self.nonces.lock().unwrap_or_else(|e| e.into_inner()).first_use(nonce, Instant::now())
    }

    /// Checks the signature of an HTTP request as a data server received it.
    pub fn verify_request(&self, method: &http::Method, uri: &http::Uri, headers: &HeaderMap) -> Result<(), Refusal> {
        let signature = headers.get(SIGNATURE_HEADER).ok_or(Refusal::Missing)?;
        let signature = signature.to_str().map_err(|_| Refusal::Malformed)?;
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let covered = covered_headers(headers);
        self.verify(signature, &http_parts(method, path, &covered))
    }
}

/// Splits a bus message body into its signature (if it has one) and its JSON:
/// `CAIRN-SIG <signature>\n<json>`. A body without the prefix is all JSON; one with
/// the prefix but no newline, or a signature that is not text, is malformed.
pub fn open_envelope(body: &[u8]) -> Result<(Option<&str>, &[u8]), Refusal> {
    let Some(rest) = body.strip_prefix(BUS_PREFIX) else { return Ok((None, body)) };
    let end = rest.iter().take(256).position(|&b| b == b'\n').ok_or(Refusal::Malformed)?;
    let signature = std::str::from_utf8(&rest[..end]).map_err(|_| Refusal::Malformed)?;
    Ok((Some(signature), &rest[end + 1..]))
}

/// A bus message body signed over `parts` and the JSON: `CAIRN-SIG <signature>\n<json>`.
pub fn seal_envelope(secret: &ClusterSecret, parts: &[&[u8]], json: &[u8]) -> Vec<u8> {
    let mut all = parts.to_vec();
    all.push(json);
    let signature = secret.sign(&all);
    let mut body = Vec::with_capacity(BUS_PREFIX.len() + signature.len() + 1 + json.len());
    body.extend_from_slice(BUS_PREFIX);
    body.extend_from_slice(signature.as_bytes());
    body.push(b'\n');
    body.extend_from_slice(json);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0123456789abcdef0123456789abcdef-first";
    const B: &str = "fedcba9876543210fedcba9876543210-second";

    fn parts() -> Vec<&'static [u8]> {
        vec![b"http", b"PUT", b"/objects/x.0"]
    }

    #[test]
    fn a_signature_verifies_once_and_only_over_what_was_signed() {
        let secret = ClusterSecret::from_text(A).unwrap();
        let verifier = Verifier::new(secret.clone());
        let sig = secret.sign(&parts());
        assert_eq!(verifier.verify(&sig, &[b"http", b"PUT", b"/objects/y.0"]), Err(Refusal::BadSignature));
        assert_eq!(verifier.verify(&sig, &parts()), Ok(()));
        assert_eq!(verifier.verify(&sig, &parts()), Err(Refusal::Replay));
        // Moving bytes between parts changes the MAC (length prefixes).
        let sig = secret.sign(&[b"ab", b"c"]);
        assert_eq!(verifier.verify(&sig, &[b"a", b"bc"]), Err(Refusal::BadSignature));
    }

    #[test]
    fn another_secret_or_a_garbled_signature_is_refused() {
        let ours = Verifier::new(ClusterSecret::from_text(A).unwrap());
        let theirs = ClusterSecret::from_text(B).unwrap();
        assert_eq!(ours.verify(&theirs.sign(&parts()), &parts()), Err(Refusal::UnknownKey));
        let sig = ClusterSecret::from_text(A).unwrap().sign(&parts());
        let (head, mac) = sig.rsplit_once('.').unwrap();
        let flipped = format!("{head}.{}{}", if mac.starts_with('0') { '1' } else { '0' }, &mac[1..]);
        assert_eq!(ours.verify(&flipped, &parts()), Err(Refusal::BadSignature));
        for bad in ["", "a.b.c", "a.b.c.d.e", "x.1.zz.00", &format!("{head}.nothex")] {
            assert_eq!(ours.verify(bad, &parts()), Err(Refusal::Malformed), "{bad}");
        }
    }

    #[test]
    fn old_and_future_signatures_are_stale() {
        let secret = ClusterSecret::from_text(A).unwrap();
        let verifier = Verifier::new(secret.clone());
        let now = SystemTime::now();
        let window = CLOCK_WINDOW.as_millis() as u64;
        let old = secret.sign_at(unix_ms(now) - window - 1000, 1, &parts());
        let ahead = secret.sign_at(unix_ms(now) + window + 1000, 2, &parts());
        let edge = secret.sign_at(unix_ms(now) - window + 1000, 3, &parts());
        assert_eq!(verifier.verify_at(&old, &parts(), now), Err(Refusal::Stale));
        assert_eq!(verifier.verify_at(&ahead, &parts(), now), Err(Refusal::Stale));
        assert_eq!(verifier.verify_at(&edge, &parts(), now), Ok(()));
    }

    #[test]
    fn rotation_accepts_every_listed_secret_and_signs_with_the_first() {
        let old = ClusterSecret::from_text(A).unwrap();
        let both = ClusterSecret::from_text(&format!("# rotating\n{B}\n\n{A}\n")).unwrap();
        let new = ClusterSecret::from_text(B).unwrap();
        assert_eq!(both.key_ids(), vec![new.key_ids()[0].clone(), old.key_ids()[0].clone()]);
        let verifier = Verifier::new(both.clone());
        assert_eq!(verifier.verify(&old.sign(&parts()), &parts()), Ok(()));
        assert_eq!(verifier.verify(&new.sign(&parts()), &parts()), Ok(()));
        assert_eq!(Verifier::new(new).verify(&both.sign(&parts()), &parts()), Ok(()));
        assert_eq!(Verifier::new(old).verify(&both.sign(&parts()), &parts()), Err(Refusal::UnknownKey));
    }

    #[test]
    fn short_or_missing_secrets_are_refused_with_the_line() {
        assert!(matches!(ClusterSecret::from_text("# nothing\n\n"), Err(SecretError::Empty(_))));
        assert!(matches!(
            ClusterSecret::from_text(&format!("{A}\nshort\n")),
            Err(SecretError::TooShort { line: 2, len: 5, .. })
        ));
    }

    #[tokio::test]
    async fn the_file_watch_is_owned_and_ends_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let secret = ClusterSecret::load_or_create(&dir.path().join("secret")).unwrap();
        let shutdown = CancellationToken::new();
        secret.watch(shutdown.clone());
        assert_eq!(secret.inner.tasks.len(), 1, "the watch runs on the secret's tracker");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), secret.stopped()).await.expect("the watch ends on shutdown");
        assert!(secret.inner.tasks.is_empty());
    }

    #[test]
    fn the_file_is_reloaded_when_it_changes_and_kept_when_it_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let made = ClusterSecret::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(ClusterSecret::load_or_create(&path).unwrap().key_ids(), made.key_ids(), "kept, not remade");
        assert!(!made.reload_if_changed().unwrap());
        std::fs::write(&path, format!("{B}\n{A}\n")).unwrap();
        assert!(made.reload_if_changed().unwrap());
        assert_eq!(made.key_ids().len(), 2);
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(made.reload_if_changed(), Err(SecretError::TooShort { .. })));
        assert_eq!(made.key_ids().len(), 2, "a broken file keeps the secrets in use");
    }

    #[test]
    fn covered_headers_include_cairn_headers_and_range_only() {
        let secret = ClusterSecret::from_text(A).unwrap();
        let verifier = Verifier::new(secret.clone());
        let uri: http::Uri = "/objects/h.1?x=1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-cairn-policy", HeaderValue::from_static("4+2"));
        headers.insert("range", HeaderValue::from_static("bytes=0-9"));
        secret.sign_headers(&http::Method::GET, "/objects/h.1?x=1", &mut headers);
        let mut other = headers.clone();
        other.insert("user-agent", HeaderValue::from_static("anything"));
        assert_eq!(verifier.verify_request(&http::Method::GET, &uri, &other), Ok(()));
        for (name, value) in [("x-cairn-policy", "1+2"), ("range", "bytes=0-99"), ("x-cairn-length", "5")] {
            let mut tampered = headers.clone();
            tampered.insert(name, HeaderValue::from_static(value));
            assert_eq!(verifier.verify_request(&http::Method::GET, &uri, &tampered), Err(Refusal::BadSignature));
        }
        assert_eq!(verifier.verify_request(&http::Method::GET, &uri, &HeaderMap::new()), Err(Refusal::Missing));
    }

    #[test]
    fn nonces_are_forgotten_only_after_two_windows_and_bounded() {
        let mut n = Nonces { current: HashSet::new(), previous: HashSet::new(), started: Instant::now() };
        let t0 = n.started;
        assert_eq!(n.first_use(7, t0), Ok(()));
        assert_eq!(n.first_use(7, t0 + 2 * CLOCK_WINDOW), Err(Refusal::Replay), "in the previous generation");
        assert_eq!(n.first_use(7, t0 + 4 * CLOCK_WINDOW + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn envelopes_round_trip_and_plain_json_passes_through() {
        let secret = ClusterSecret::from_text(A).unwrap();
        let sealed = seal_envelope(&secret, &[b"heartbeat"], br#"{"a":1}"#);
        let (sig, json) = open_envelope(&sealed).unwrap();
        assert_eq!(json, br#"{"a":1}"#);
        assert_eq!(Verifier::new(secret).verify(sig.unwrap(), &[b"heartbeat", json]), Ok(()));
        assert_eq!(open_envelope(b"{}").unwrap(), (None, &b"{}"[..]));
        assert_eq!(open_envelope(b"CAIRN-SIG no newline"), Err(Refusal::Malformed));
        assert_eq!(open_envelope(b"CAIRN-SIG \xff\n{}"), Err(Refusal::Malformed));
    }
}
