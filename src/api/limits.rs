//! What an API server refuses at its door, and how each refusal is answered so
//! that a client understands it: how large an object may be (native 413, S3
//! `EntityTooLarge`), how long a name (native 400, S3 `KeyTooLongError`), how often
//! one access key may call (native 429, S3 `SlowDown`), and the S3 answer for a
//! request shed by the in-flight limits ([`super::RequestLimits`]; native 503).
//!
//! This room belongs to the API tier: the handlers of [`super`], [`super::s3`],
//! [`super::tus`] and the key check ([`super::keys`]) use it; it uses only the
//! metrics ([`crate::telemetry`]). Every refusal is counted by the limit it hit
//! (`cairn_api_refused_total{limit}`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use metrics::Counter;

use super::names::{self, BadName};
use crate::telemetry::{self, Scope};

/// The largest object by default: S3's.
pub const DEFAULT_MAX_OBJECT_SIZE: u64 = 5 << 40;

/// The largest part of an S3 multipart upload (S3's limit, whatever the largest
/// object).
pub const MAX_PART_SIZE: u64 = 5 << 30;

/// Access keys whose request rate is remembered at most. Only keys that signed a
/// valid request get a bucket (ids are checked first), so forged ids cannot grow
/// the table; past this many (a cluster with more keys than that, all busy) the
/// longest-idle bucket is forgotten.
pub const MAX_TRACKED_KEYS: usize = 65_536;

/// A limit a request can be refused by: the `limit` label of
/// [`telemetry::API_REFUSED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// `--max-object-size` (and an S3 part's 5 GiB).
    ObjectSize,
    /// `--max-name-length`.
    NameLength,
    /// `--max-requests`: requests in flight.
    Requests,
    /// `--max-uploads` / `--small-upload-memory`: uploads in flight.
    Uploads,
    /// `--rate-limit`: requests per second of one access key.
    Rate,
}

impl Limit {
    const ALL: [Limit; 5] = [Limit::ObjectSize, Limit::NameLength, Limit::Requests, Limit::Uploads, Limit::Rate];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::ObjectSize => "object_size",
            Limit::NameLength => "name_length",
            Limit::Requests => "requests",
            Limit::Uploads => "uploads",
            Limit::Rate => "rate",
        }
    }
}

/// The refusal counters of one API server, made at its start (so every series
/// shows, at 0, before the first refusal). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Refusals {
    counters: Arc<[Counter; 5]>,
}

impl Refusals {
    /// The counters of the server `scope` names.
    pub fn new(scope: &Scope) -> Refusals {
        let counters = Limit::ALL.map(|limit| {
            let counter = scope.counter_with(telemetry::API_REFUSED, "limit", limit.as_str());
            counter.increment(0);
            counter
        });
        Refusals { counters: Arc::new(counters) }
    }

    /// Counts one request refused by `limit`.
    pub fn count(&self, limit: Limit) {
        self.counters[limit as usize].increment(1);
    }
}

/// The limits each front door (native, S3, tus) applies to what a request asks
/// for, with the counters of its refusals. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Door {
    /// The largest object, in bytes.
    pub max_object_size: u64,
    /// The longest new name, in bytes.
    pub max_name_len: usize,
    /// Where refusals are counted.
    pub refusals: Refusals,
}

impl Door {
    /// Checks a name an object is about to get ([`names::validate_new`]).
    pub fn new_name(&self, name: &str) -> Result<(), BadName> {
        names::validate_new(name, self.max_name_len).inspect_err(|e| {
            if matches!(e, BadName::TooLong { .. }) {
                self.refusals.count(Limit::NameLength);
            }
        })
    }

    /// Whether `size` bytes fit under `limit`; counts a refusal when not.
    pub fn fits(&self, size: u64, limit: u64) -> bool {
        let fits = size <= limit;
        if !fits {
            self.count_too_large();
        }
        fits
    }

    /// Counts a request refused for a body past the largest object.
    pub fn count_too_large(&self) {
        self.refusals.count(Limit::ObjectSize);
    }
}

/// A request body cut at a size: past `limit` bytes the stream yields an error
/// instead of the chunk that crossed it, so the write path stops and stores
/// nothing, and [`SizeCap::exceeded`] tells the caller why the body broke.
#[derive(Clone, Debug)]
pub struct SizeCap {
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

impl SizeCap {
    /// A cap of `limit` bytes.
    pub fn new(limit: u64) -> SizeCap {
        SizeCap { limit, exceeded: Arc::new(AtomicBool::new(false)) }
    }

    /// `body`, failing with `too_large()` once more than the limit has passed.
    pub fn wrap<S, E>(&self, body: S, too_large: impl Fn() -> E + Send) -> impl Stream<Item = Result<Bytes, E>> + Send
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
    {
        let (limit, exceeded) = (self.limit, Arc::clone(&self.exceeded));
        let mut seen = 0u64;
        body.map(move |chunk| {
            let bytes = chunk?;
            seen = seen.saturating_add(bytes.len() as u64);
            if seen > limit {
                exceeded.store(true, Ordering::Relaxed);
                return Err(too_large());
            }
            Ok(bytes)
        })
    }

    /// Whether the body ran past the limit.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }
}

/// A request rate: `per_second` on average, up to `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests per second a key may make in the long run (at least 1).
    pub per_second: u32,
    /// Requests a key that has been quiet may make at once (at least 1).
    pub burst: u32,
}

/// One token bucket per access key (and one shared by every unsigned caller of an
/// open cluster): a request takes a token, tokens come back at the rate, at most
/// `burst` of them wait. Hand-written: the `governor` crate would bring a keyed
/// limiter but also `dashmap`, `quanta` and a dozen more crates for what is a map
/// and two numbers per key here.
#[derive(Debug)]
pub struct RateLimiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, Bucket>>,
    refusals: Refusals,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The bucket of callers without a key (an open cluster): no access key id is empty.
const ANONYMOUS: &str = "";

impl RateLimiter {
    /// A limiter at `rate`, counting its refusals in `refusals`.
    pub fn new(rate: Rate, refusals: Refusals) -> RateLimiter {
        let rate = Rate { per_second: rate.per_second.max(1), burst: rate.burst.max(1) };
        RateLimiter { rate, buckets: Mutex::new(HashMap::new()), refusals }
    }

    /// Takes a token for the key `access_key` (`None`: an unsigned caller of an
    /// open cluster), or says how long until one is back.
    pub fn admit(&self, access_key: Option<&str>) -> Result<(), Duration> {
        let admitted = self.admit_at(access_key.unwrap_or(ANONYMOUS), Instant::now());
        if admitted.is_err() {
            self.refusals.count(Limit::Rate);
        }
        admitted
    }

    fn admit_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let (per_second, burst) = (f64::from(self.rate.per_second), f64::from(self.rate.burst));
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(key) {
            if buckets.len() >= MAX_TRACKED_KEYS {
                forget_idle(&mut buckets, per_second, burst, now);
            }
            buckets.insert(key.to_string(), Bucket { tokens: burst, at: now });
        }
        let bucket = buckets.get_mut(key).expect("inserted above when missing");
        let refilled = now.saturating_duration_since(bucket.at).as_secs_f64() * per_second;
        bucket.tokens = (bucket.tokens + refilled).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }

    /// How many keys have a bucket.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Makes room in a full table: buckets that have refilled are the same as no
/// bucket and go; when every key is busy, the longest-idle one goes.
fn forget_idle(buckets: &mut HashMap<String, Bucket>, per_second: f64, burst: f64, now: Instant) {
    buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second < burst);
    if buckets.len() >= MAX_TRACKED_KEYS {
        if let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.at).map(|(k, _)| k.clone()) {
            buckets.remove(&oldest);
        }
    }
}

/// Whole seconds a client is told to wait (at least one: `Retry-After` has no
/// fractions, and zero invites an immediate retry).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The native answer to a key over its rate: 429 with `Retry-After`.
pub fn too_many_requests(wait: Duration) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, retry_after_secs(wait).to_string())],
        "this access key is over its request rate (--rate-limit); retry after the Retry-After seconds\n",
    )
        .into_response()
}

/// S3's answer to a client it wants to back off: 503 `SlowDown` with its XML error
/// body and `Retry-After` (SDKs retry it with backoff). Written out here because
/// a request shed before it reaches `s3s` never becomes an S3 request.
pub fn slow_down(wait: Duration, message: &str) -> Response {
    let mut response = s3_error(StatusCode::SERVICE_UNAVAILABLE, "SlowDown", message);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
    response
}

/// An S3 error answer made outside `s3s` (before a request reaches it): `status`
/// with S3's XML `<Error>` of `code` and `message`.
pub fn s3_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message></Error>",
        xml_escape(code),
        xml_escape(message)
    );
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"))], body).into_response()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(Rate { per_second, burst }, Refusals::new(&Scope::new(telemetry::Role::Api, "limits-test")))
    }

    #[test]
    fn a_key_gets_its_burst_then_the_rate() {
        let l = limiter(2, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.admit_at("CKA", t0), Ok(()));
        }
        let wait = l.admit_at("CKA", t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500), "{wait:?}");
        // Another key has its own bucket; so does the anonymous caller.
        assert_eq!(l.admit_at("CKB", t0), Ok(()));
        assert_eq!(l.admit_at(ANONYMOUS, t0), Ok(()));
        // Half a second later one token is back, not two.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(l.admit_at("CKA", t1), Ok(()));
        assert!(l.admit_at("CKA", t1).is_err());
        // A long pause refills to the burst, never past it.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(l.admit_at("CKA", t2), Ok(()));
        }
        assert!(l.admit_at("CKA", t2).is_err());
    }

    #[test]
    fn the_table_stays_bounded_however_many_keys_call() {
        let l = limiter(1, 1);
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED_KEYS + 100 {
            let _ = l.admit_at(&format!("CK{i}"), t0);
        }
        assert!(l.tracked() <= MAX_TRACKED_KEYS, "{} buckets", l.tracked());
        // Once they have refilled, the idle ones make room all at once.
        let _ = l.admit_at("CKlate", t0 + Duration::from_secs(5));
        assert!(l.tracked() < 10, "{} buckets", l.tracked());
    }

    #[test]
    fn retry_after_is_whole_seconds_and_never_zero() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[tokio::test]
    async fn a_capped_body_breaks_past_its_limit_and_says_so() {
        let chunks = |n: usize| futures_util::stream::iter((0..n).map(|_| Ok::<_, String>(Bytes::from(vec![0u8; 10]))));
        let cap = SizeCap::new(30);
        let got: Vec<_> = cap.wrap(chunks(3), || "too large".to_string()).collect().await;
        assert!(got.iter().all(Result::is_ok) && !cap.exceeded());
        let cap = SizeCap::new(25);
        let got: Vec<_> = cap.wrap(chunks(3), || "too large".to_string()).collect().await;
        assert_eq!(got.last(), Some(&Err("too large".to_string())));
        assert!(cap.exceeded());
    }
}
