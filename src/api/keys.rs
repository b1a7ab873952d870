//! Access keys: who a request comes from, for the S3 front door ([`super::s3`],
//! signatures checked by `s3s`) and the native API, tus and `/admin` (a bearer
//! token, [`native_auth`]). What that principal may then do is
//! [`super::policy`]'s one rule.
//!
//! Keys live in the metadata store ([`crate::meta::AccessKey`]), so every API
//! server sees the same ones. A server keeps a snapshot of them ([`KeyRing`]),
//! reloaded at most once a second on the request path: a new key works at once (an
//! id missing from the snapshot is looked up in the store), a deleted one stops
//! working within a second (at once on the server that deleted it). The first key
//! closes the cluster at once on the server it was created through and within a
//! second on the others. With no key at all the cluster is open: unsigned
//! requests are served (the seed's curl session, `cairn dev`), and the server warns
//! at start that anyone can write. Once one key exists, every request except
//! `/healthz` and `/metrics` must carry a valid one.
//!
//! The native API's scheme: `Authorization: Bearer <access key id>:<secret key>`.
//! It sends the secret itself, so it belongs on a trusted network or behind TLS;
//! S3 clients sign (SigV4) and never send the secret.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::limits::{self, RateLimiter};
use super::policy::{Caller, Refusal};
use crate::meta::{AccessKey, MetaError, MetaStore};

/// How long a snapshot of the keys is used before the store is asked again.
pub const KEY_REFRESH: Duration = Duration::from_secs(1);

/// The keys an API server checks requests against (a snapshot of the store's).
#[derive(Clone)]
pub struct KeyRing {
    meta: Arc<dyn MetaStore>,
    snapshot: Arc<RwLock<Snapshot>>,
    /// Held by the one request that reloads the snapshot; the others use the old one.
    reloading: Arc<tokio::sync::Mutex<()>>,
    /// Requests per second of each key (`--rate-limit`), when limited.
    rate: Option<Arc<RateLimiter>>,
}

struct Snapshot {
    keys: Arc<HashMap<String, AccessKey>>,
    loaded: Option<Instant>,
}

impl KeyRing {
    /// A key ring over the store's keys (loaded on first use).
    pub fn new(meta: Arc<dyn MetaStore>) -> KeyRing {
        KeyRing {
            meta,
            snapshot: Arc::new(RwLock::new(Snapshot { keys: Arc::new(HashMap::new()), loaded: None })),
            reloading: Arc::new(tokio::sync::Mutex::new(())),
            rate: None,
        }
    }

    /// This key ring, holding each caller to `limiter`'s request rate.
    pub fn with_rate(mut self, limiter: Arc<RateLimiter>) -> KeyRing {
        self.rate = Some(limiter);
        self
    }

    /// Takes one request from `caller`'s rate (every unsigned caller of an open
    /// cluster shares one), or says how long until the next one is allowed.
    /// Called once the caller is proven, so only real keys get a bucket.
    pub fn admit(&self, caller: &Caller) -> Result<(), Duration> {
        let Some(rate) = &self.rate else { return Ok(()) };
        rate.admit(match caller {
            Caller::Open => None,
            Caller::Key(key) => Some(key.access_key.as_str()),
        })
    }

    /// The keys, reloaded from the store when the snapshot is older than
    /// [`KEY_REFRESH`]. Only the first load waits for the store; later reloads are
    /// done by one request while the others use the previous snapshot.
    async fn current(&self) -> Result<Arc<HashMap<String, AccessKey>>, MetaError> {
        let (keys, loaded) = {
            let s = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
            (Arc::clone(&s.keys), s.loaded)
        };
        if loaded.is_some_and(|at| at.elapsed() < KEY_REFRESH) {
            return Ok(keys);
        }
        let guard = match loaded {
            None => self.reloading.lock().await,
            Some(_) => match self.reloading.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok(keys),
            },
        };
        // Another request may have reloaded while this one waited.
        {
            let s = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
            if s.loaded.is_some_and(|at| at.elapsed() < KEY_REFRESH) {
                return Ok(Arc::clone(&s.keys));
            }
        }
        let fresh: HashMap<String, AccessKey> =
            self.meta.keys().await?.into_iter().map(|k| (k.access_key.clone(), k)).collect();
        let fresh = Arc::new(fresh);
        {
            let mut s = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
            s.keys = Arc::clone(&fresh);
            s.loaded = Some(Instant::now());
        }
        drop(guard);
        Ok(fresh)
    }

    /// Forgets the snapshot: the next request reloads the keys from the store. The
    /// admin routes call it after they change a key, so a change made through
    /// this server holds at once on it (other servers see it within
    /// [`KEY_REFRESH`]; a new key works on them at once).
    pub fn invalidate(&self) {
        self.snapshot.write().unwrap_or_else(|e| e.into_inner()).loaded = None;
    }

    /// Whether the cluster has no key at all (anyone may do anything).
    pub async fn is_open(&self) -> Result<bool, MetaError> {
        Ok(self.current().await?.is_empty())
    }

    /// The key with this id: from the snapshot, else from the store (a key created
    /// a moment ago on another server).
    pub async fn lookup(&self, access_key: &str) -> Result<Option<AccessKey>, MetaError> {
        if let Some(key) = self.current().await?.get(access_key) {
            return Ok(Some(key.clone()));
        }
        self.meta.key(access_key).await
    }

    /// Who the caller is, from an `Authorization: Bearer <id>:<secret>` value (or
    /// none).
    pub async fn bearer(&self, authorization: Option<&str>) -> Result<Caller, BearerError> {
        let Some(value) = authorization else {
            return if self.is_open().await? { Ok(Caller::Open) } else { Err(Refusal::Unsigned.into()) };
        };
        let token = value.strip_prefix("Bearer ").ok_or(Refusal::BadCredentials)?;
        let (id, secret) = token.trim().split_once(':').ok_or(Refusal::BadCredentials)?;
        let key = self.lookup(id).await?.ok_or(Refusal::BadCredentials)?;
        if !constant_time_eq(key.secret.as_bytes(), secret.as_bytes()) {
            return Err(Refusal::BadCredentials.into());
        }
        Ok(Caller::Key(key))
    }
}

/// Why a bearer check did not name a caller.
#[derive(Debug, thiserror::Error)]
pub enum BearerError {
    /// The request is refused.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The keys could not be read.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A fresh key pair: a 20-character id (`CK` and 18 characters of A–Z, 2–7) and a
/// 40-character secret (30 bytes from the operating system's CSPRNG, base64url).
pub fn generate_key() -> (String, String) {
    use base64::Engine;
    use rand::rngs::OsRng;
    use rand::TryRngCore;
    let mut bytes = [0u8; 48];
    if OsRng.try_fill_bytes(&mut bytes).is_err() {
        rand::fill(&mut bytes);
    }
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let id: String = std::iter::once("CK".to_string())
        .chain(bytes[..18].iter().map(|b| (ALPHABET[(b & 31) as usize] as char).to_string()))
        .collect();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[18..]);
    (id, secret)
}

/// Credentials a client of the native API sends: `--access-key` and
/// `--secret-key` (or `CAIRN_ACCESS_KEY` / `CAIRN_SECRET_KEY`), both or neither.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Credentials {
    /// Access key id to sign requests with (needed once the cluster has keys).
    #[arg(long, env = "CAIRN_ACCESS_KEY", requires = "secret_key", global = true)]
    pub access_key: Option<String>,
    /// Secret key of `--access-key`.
    #[arg(long, env = "CAIRN_SECRET_KEY", requires = "access_key", hide_env_values = true, global = true)]
    pub secret_key: Option<String>,
}

impl Credentials {
    /// The default headers of a client with these credentials: the bearer token
    /// (none without credentials). A value no header can carry is refused.
    pub fn headers(&self) -> Result<http::HeaderMap, String> {
        let mut headers = http::HeaderMap::new();
        if let (Some(id), Some(secret)) = (&self.access_key, &self.secret_key) {
            let mut value = http::HeaderValue::from_str(&format!("Bearer {id}:{secret}"))
                .map_err(|_| "the access key or secret holds a character no header can carry".to_string())?;
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
        Ok(headers)
    }
}

/// Routes that stay open whatever the keys: liveness and metrics, for monitors.
fn is_public(path: &str) -> bool {
    path == "/healthz" || path == "/metrics"
}

/// The middleware of the native API (`/objects/…`, `/versions/…`, `/locate/…`, tus,
/// `/admin/…`): proves who the request comes from and hands the [`Caller`] to the
/// handlers (a request extension), which ask [`super::policy::authorize`] for
/// their own action. Once the cluster has a key, a request without a valid bearer
/// token is refused here: 403 with the reason (503 when the keys cannot be read);
/// 429 when the caller is over its request rate.
pub async fn native_auth(State(keys): State<KeyRing>, mut request: Request, next: Next) -> Response {
    if is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let caller = match keys.bearer(authorization).await {
        Ok(caller) => caller,
        Err(BearerError::Refused(r)) => return refused(r),
        Err(BearerError::Meta(e)) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("cannot check the access key: {e}\n")).into_response()
        }
    };
    if let Err(wait) = keys.admit(&caller) {
        return limits::too_many_requests(wait);
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The native answer to a refused request: 403 with the reason.
pub fn refused(reason: Refusal) -> Response {
    tracing::debug!(%reason, "request refused");
    (StatusCode::FORBIDDEN, format!("{reason}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_their_shape_and_differ() {
        let (id, secret) = generate_key();
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("CK") && id.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
        assert_eq!(secret.len(), 40);
        assert_ne!(generate_key(), (id, secret));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
