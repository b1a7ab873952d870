//! Who is calling and what they may do, for the S3 door: SigV4's secret lookup
//! in the key ring ([`KeyAuth`]) and the check every request passes, signed or
//! not ([`KeyAccess`]: [`policy`]'s rule, then the key's request rate). The
//! operations read the caller it let through with [`caller_of`].

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{s3_error, S3Request, S3Result};

use super::error::{meta_error, refusal, slow_down};
use crate::api::keys::KeyRing;
use crate::api::policy::{self, Action, Caller, Refusal};

/// SigV4's secret lookup: the key's secret from the key ring.
pub(super) struct KeyAuth(pub(super) KeyRing);

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.lookup(access_key).await {
            Ok(Some(key)) => Ok(SecretKey::from(key.secret)),
            Ok(None) => Err(s3_error!(InvalidAccessKeyId, "no such access key")),
            Err(e) => Err(meta_error(e)),
        }
    }
}

/// Who may do what: every request, signed or not, is checked here (s3s has
/// verified the signature of a signed one already), as the action its operation
/// is in [`policy`]'s vocabulary, on the bucket it names.
pub(super) struct KeyAccess(pub(super) KeyRing);

#[async_trait::async_trait]
impl S3Access for KeyAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let caller = match cx.credentials() {
            None => match self.0.is_open().await {
                Ok(true) => Caller::Open,
                Ok(false) => return Err(refusal(Refusal::Unsigned)),
                Err(e) => return Err(meta_error(e)),
            },
            Some(credentials) => match self.0.lookup(&credentials.access_key).await {
                Ok(Some(key)) => Caller::Key(key),
                Ok(None) => return Err(s3_error!(InvalidAccessKeyId, "no such access key")),
                Err(e) => return Err(meta_error(e)),
            },
        };
        let action = Action::of_s3(cx.s3_op().name());
        let bucket = match cx.s3_path() {
            S3Path::Root => None,
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => Some(&**bucket),
        };
        policy::authorize(&caller, action, bucket).map_err(refusal)?;
        self.0.admit(&caller).map_err(slow_down)?;
        cx.extensions_mut().insert(caller);
        Ok(())
    }
}
/// The caller [`KeyAccess`] let through (open when auth did not run).
pub(super) fn caller_of<T>(req: &S3Request<T>) -> Caller {
    req.extensions.get::<Caller>().cloned().unwrap_or(Caller::Open)
}
