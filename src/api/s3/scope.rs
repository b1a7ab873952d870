//! What a SigV4 signature says beside the signature itself, checked on the S3
//! door before `s3s` verifies it: the credential scope must name this server's
//! service (`s3`) and region ([`super::REGION`]), and a presigned URL may
//! live at most as long as S3 lets one live ([`MAX_PRESIGNED_EXPIRY`], 7 days),
//! never a negative time. `s3s` accepts any region and the `sts` service, and any
//! expiry that fits in 32 bits (136 years), so a leaked URL would otherwise live
//! as long as its key. The same week bounds a legacy SigV2 presigned URL (what
//! boto3's `generate_presigned_url` makes by default), whose `Expires` is an
//! instant rather than a lifetime: it may lie at most a week ahead of the
//! server's clock.
//!
//! Refusals carry S3's own codes and words: `AuthorizationQueryParametersError`
//! for a presigned URL's parameters, `AuthorizationHeaderMalformed` for a header
//! signature's scope, both 400. A scope that cannot be parsed at all is left to
//! `s3s`, which refuses it as malformed.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

/// The longest a presigned URL may be valid, in seconds (S3's 604,800: a week).
pub const MAX_PRESIGNED_EXPIRY: i64 = 604_800;

/// The only service a credential scope may name.
pub const SERVICE: &str = "s3";

/// Why a request's signature parameters are refused before its signature is
/// checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// `X-Amz-Expires` is not an integer.
    #[error("X-Amz-Expires should be a number")]
    ExpiresNotANumber,
    /// `X-Amz-Expires` is negative.
    #[error("X-Amz-Expires must be non-negative")]
    ExpiresNegative,
    /// `X-Amz-Expires` is past [`MAX_PRESIGNED_EXPIRY`].
    #[error("X-Amz-Expires must be less than a week (in seconds) that is; {MAX_PRESIGNED_EXPIRY}")]
    ExpiresTooLong,
    /// A SigV2 presigned URL's `Expires` lies more than [`MAX_PRESIGNED_EXPIRY`]
    /// seconds ahead.
    #[error("Expires must be at most a week ({MAX_PRESIGNED_EXPIRY} seconds) from now")]
    V2ExpiresTooLate,
    /// The scope names another region.
    #[error("the region '{found}' is wrong; expecting '{expected}'")]
    WrongRegion {
        /// The region in the scope.
        found: String,
        /// This server's.
        expected: &'static str,
    },
    /// The scope names another service.
    #[error("incorrect service '{found}'. This endpoint belongs to '{SERVICE}'.")]
    WrongService {
        /// The service in the scope.
        found: String,
    },
}

/// Where the signature came from, which decides the error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    /// A presigned URL (`X-Amz-Credential` and friends in the query).
    Query,
    /// An `Authorization: AWS4-HMAC-SHA256 Credential=…` header.
    Header,
}

/// Checks the request's signature parameters (from its query and
/// `Authorization` header) against `region`, at `now_secs` (Unix seconds) for a
/// SigV2 presigned URL. A request not signed, or whose parameters cannot be
/// parsed, passes: `s3s` refuses what it cannot verify.
pub fn check(
    query: Option<&str>,
    headers: &HeaderMap,
    region: &'static str,
    now_secs: i64,
) -> Result<(), (Signed, ScopeError)> {
    if let Some(query) = query {
        let mut credential = None;
        let mut expires = None;
        let mut v2_expires = None;
        let mut v2_key = false;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "X-Amz-Credential" => credential = Some(value.into_owned()),
                "X-Amz-Expires" => expires = Some(value.into_owned()),
                "Expires" => v2_expires = Some(value.into_owned()),
                "AWSAccessKeyId" => v2_key = true,
                _ => {}
            }
        }
        let presigned = |e| (Signed::Query, e);
        if let Some(credential) = credential {
            if let Some(expires) = expires {
                check_expires(&expires).map_err(presigned)?;
            }
            return check_scope(&credential, region).map_err(presigned);
        }
        if let (true, Some(at)) = (v2_key, v2_expires.and_then(|v| v.trim().parse::<i64>().ok())) {
            if at.saturating_sub(now_secs) > MAX_PRESIGNED_EXPIRY {
                return Err(presigned(ScopeError::V2ExpiresTooLate));
            }
            return Ok(());
        }
    }
    let authorization = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(credential) = authorization.and_then(header_credential) else { return Ok(()) };
    check_scope(credential, region).map_err(|e| (Signed::Header, e))
}

/// `X-Amz-Expires`: whole seconds, 0 to [`MAX_PRESIGNED_EXPIRY`].
fn check_expires(value: &str) -> Result<(), ScopeError> {
    let seconds: i64 = value.trim().parse().map_err(|_| ScopeError::ExpiresNotANumber)?;
    match seconds {
        s if s < 0 => Err(ScopeError::ExpiresNegative),
        s if s > MAX_PRESIGNED_EXPIRY => Err(ScopeError::ExpiresTooLong),
        _ => Ok(()),
    }
}

/// The `Credential=` of a SigV4 `Authorization` header.
fn header_credential(authorization: &str) -> Option<&str> {
    let rest = authorization.trim_start().strip_prefix("AWS4-HMAC-SHA256")?;
    rest.split(',').find_map(|part| part.trim().strip_prefix("Credential="))
}

/// `<key id>/<date>/<region>/<service>/aws4_request`: the region and service
/// must be this server's. Another shape is left to `s3s`.
fn check_scope(credential: &str, region: &'static str) -> Result<(), ScopeError> {
    let parts: Vec<&str> = credential.trim().split('/').collect();
    let [_, _, found_region, found_service, "aws4_request"] = parts[..] else { return Ok(()) };
    if found_region != region {
        return Err(ScopeError::WrongRegion { found: found_region.to_string(), expected: region });
    }
    if found_service != SERVICE {
        return Err(ScopeError::WrongService { found: found_service.to_string() });
    }
    Ok(())
}

/// S3's answer to a refused scope or expiry: 400 with S3's code and message.
pub fn refused(signed: Signed, error: &ScopeError) -> Response {
    let (code, message) = match signed {
        Signed::Query => match error {
            ScopeError::WrongRegion { .. } | ScopeError::WrongService { .. } => {
                ("AuthorizationQueryParametersError", format!("Error parsing the X-Amz-Credential parameter; {error}"))
            }
            _ => ("AuthorizationQueryParametersError", error.to_string()),
        },
        Signed::Header => ("AuthorizationHeaderMalformed", format!("The authorization header is malformed; {error}")),
    };
    crate::api::limits::s3_error(StatusCode::BAD_REQUEST, code, &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    fn presigned(expires: &str, scope: &str) -> String {
        format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Date=20261206T000000Z&X-Amz-Expires={expires}",
            scope.replace('/', "%2F")
        )
    }

    const GOOD: &str = "CKEXAMPLE/20261206/us-east-1/s3/aws4_request";
    const NOW: i64 = 1_796_515_200;

    #[test]
    fn a_sigv2_presigned_url_expires_within_a_week() {
        let none = HeaderMap::new();
        let v2 = |expires: i64| format!("AWSAccessKeyId=CKEXAMPLE&Signature=c2ln&Expires={expires}");
        assert_eq!(check(Some(&v2(NOW + 300)), &none, "us-east-1", NOW), Ok(()));
        assert_eq!(check(Some(&v2(NOW + MAX_PRESIGNED_EXPIRY)), &none, "us-east-1", NOW), Ok(()));
        assert_eq!(check(Some(&v2(NOW - 10)), &none, "us-east-1", NOW), Ok(()), "expired: s3s says so");
        assert_eq!(
            check(Some(&v2(NOW + MAX_PRESIGNED_EXPIRY + 1)), &none, "us-east-1", NOW),
            Err((Signed::Query, ScopeError::V2ExpiresTooLate))
        );
        assert_eq!(
            check(Some(&v2(NOW + 100 * 365 * 86_400)), &none, "us-east-1", NOW),
            Err((Signed::Query, ScopeError::V2ExpiresTooLate))
        );
    }

    #[test]
    fn a_presigned_url_lives_at_most_a_week() {
        let none = HeaderMap::new();
        assert_eq!(check(Some(&presigned("604800", GOOD)), &none, "us-east-1", NOW), Ok(()));
        assert_eq!(check(Some(&presigned("0", GOOD)), &none, "us-east-1", NOW), Ok(()));
        let refused = |q: String| check(Some(&q), &none, "us-east-1", NOW).unwrap_err();
        assert_eq!(refused(presigned("604801", GOOD)), (Signed::Query, ScopeError::ExpiresTooLong));
        assert_eq!(refused(presigned("3153600000", GOOD)), (Signed::Query, ScopeError::ExpiresTooLong));
        assert_eq!(refused(presigned("-1", GOOD)), (Signed::Query, ScopeError::ExpiresNegative));
        assert_eq!(refused(presigned("soon", GOOD)), (Signed::Query, ScopeError::ExpiresNotANumber));
    }

    #[test]
    fn the_scope_names_this_region_and_s3() {
        let none = HeaderMap::new();
        let sts = "CKEXAMPLE/20261206/us-east-1/sts/aws4_request";
        let eu = "CKEXAMPLE/20261206/eu-west-1/s3/aws4_request";
        assert!(matches!(
            check(Some(&presigned("60", sts)), &none, "us-east-1", NOW),
            Err((Signed::Query, ScopeError::WrongService { .. }))
        ));
        assert!(matches!(
            check(Some(&presigned("60", eu)), &none, "us-east-1", NOW),
            Err((Signed::Query, ScopeError::WrongRegion { .. }))
        ));
        let signed = |scope: &str| {
            header(&format!(
                "AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host;x-amz-date, Signature={}",
                "0".repeat(64)
            ))
        };
        assert_eq!(check(None, &signed(GOOD), "us-east-1", NOW), Ok(()));
        assert!(matches!(
            check(None, &signed(sts), "us-east-1", NOW),
            Err((Signed::Header, ScopeError::WrongService { .. }))
        ));
        assert!(matches!(
            check(None, &signed(eu), "us-east-1", NOW),
            Err((Signed::Header, ScopeError::WrongRegion { .. }))
        ));
        // Unsigned, or not SigV4, or a scope of another shape: not this check's to refuse.
        assert_eq!(check(Some("list-type=2"), &none, "us-east-1", NOW), Ok(()));
        assert_eq!(check(None, &header("AWS CKEXAMPLE:c2lnbmF0dXJl"), "us-east-1", NOW), Ok(()));
        assert_eq!(check(None, &signed("CKEXAMPLE/us-east-1"), "us-east-1", NOW), Ok(()));
    }
}
