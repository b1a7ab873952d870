//! How a request reaches its door: the native routes and the S3 API side by side
//! on one listener, under one request limit ([`with_s3`]), with the S3 side's
//! virtual-host dispatch and the connection fix-up for bodiless `Expect`.

use std::sync::Arc;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use tokio::sync::Semaphore;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::ServiceBuilder;

use super::admission::{overloaded, s3_overloaded, UploadLimits};
use super::{limits, s3, RequestLimits};
use crate::object::ObjectService;
use crate::telemetry::{self, HttpMetrics};

/// The native routes with the S3 API beside them: a request is S3's when it is
/// virtual-host style (`Host` under `domain`) or its path is not a native route.
/// S3 uploads (PUT, POST) share the native uploads' admission; every request is
/// counted by the metrics. The request limit covers both with one count: tower's
/// semaphore (`GlobalConcurrencyLimit`) behind load shedding, so a request past
/// the limit is refused at once, not queued. It is applied to each side on its
/// own (to the native routes that matched, and to the S3 service) so that each
/// refuses in its client's words: 503 with `Retry-After`, and S3's `SlowDown`.
pub(super) fn with_s3(
    native: Router,
    s3: s3s::service::S3Service,
    domain: Option<String>,
    service: &ObjectService,
    admission: UploadLimits,
    limits: RequestLimits,
    refusals: limits::Refusals,
) -> Router {
    let in_flight = Arc::new(Semaphore::new(limits.requests));
    let counted = refusals.clone();
    let native_requests = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |_: BoxError| {
            counted.count(limits::Limit::Requests);
            async { overloaded("requests") }
        }))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(Arc::clone(&in_flight)));
    let s3_requests = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |_: BoxError| {
            refusals.count(limits::Limit::Requests);
            async { s3_overloaded("requests") }
        }))
        .layer(LoadShedLayer::new())
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(in_flight));
    let s3_service = tower::service_fn(move |request: Request| {
        let s3 = s3.clone();
        async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            if let Err((signed, e)) = s3::scope::check(request.uri().query(), request.headers(), s3::REGION, now) {
                return Ok(s3::scope::refused(signed, &e));
            }
            // HTTP/1.1: without Content-Length or Transfer-Encoding there is no body.
            // s3s needs to know it is empty (it checks a signed payload's length),
            // which a wrapped body no longer tells.
            let bodiless = !request.headers().contains_key(header::CONTENT_LENGTH)
                && !request.headers().contains_key(header::TRANSFER_ENCODING);
            let request =
                if bodiless { request.map(|_| s3s::Body::empty()) } else { request.map(s3s::Body::http_body_unsync) };
            Ok::<_, std::convert::Infallible>(match s3.call(request).await {
                Ok(response) => response.map(Body::new),
                Err(e) => {
                    tracing::warn!(error = ?e, "S3 request failed");
                    (StatusCode::INTERNAL_SERVER_ERROR, "S3 request failed\n").into_response()
                }
            })
        }
    });
    let s3_routes = Router::new()
        .fallback_service(s3_service)
        .layer(middleware::from_fn_with_state(admission, admit_s3_uploads))
        .layer(HttpMetrics::for_route(service.telemetry_scope().clone(), telemetry::S3_ROUTE))
        .layer(s3_requests);
    let dispatch_s3 = s3_routes.clone();
    native
        .route_layer(native_requests)
        .fallback_service(s3_routes)
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let s3 = dispatch_s3.clone();
            let virtual_host =
                domain.as_deref().is_some_and(|d| is_virtual_host(&request, d)) || is_reserved_bucket_request(&request);
            async move {
                if virtual_host {
                    use tower::ServiceExt;
                    match s3.oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    }
                } else {
                    next.run(request).await
                }
            }
        }))
        .layer(middleware::from_fn(close_after_unanswered_expect))
}

/// A CreateBucket or DeleteBucket of a name the native API's paths take (`PUT
/// /objects`): S3's, so the client hears `InvalidBucketName` (or `NoSuchBucket`)
/// in S3's words, not a native 405.
fn is_reserved_bucket_request(request: &Request) -> bool {
    let name = request.uri().path().strip_prefix('/').unwrap_or("");
    matches!(*request.method(), Method::PUT | Method::DELETE) && s3::RESERVED_BUCKETS.contains(&name)
}

/// A request with `Expect: 100-continue` and an empty body is answered without a
/// `100 Continue` (there is nothing to continue), which botocore (boto/botocore#3755)
/// mistakes for the interim answer: it then reads the next answer on the
/// connection as this one's and stalls until the idle timeout. Closing such a
/// connection after its answer costs one reconnect and keeps every client right.
async fn close_after_unanswered_expect(request: Request, next: Next) -> Response {
    let expects = request
        .headers()
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    let empty = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).map(str::trim) == Some("0");
    let mut response = next.run(request).await;
    if expects && empty {
        response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    }
    response
}

/// Whether `request` addresses a bucket by host name under `domain`.
fn is_virtual_host(request: &Request, domain: &str) -> bool {
    let host = request.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    host.len() > domain.len() + 1 && host.ends_with(domain) && host[..host.len() - domain.len()].ends_with('.')
}

/// S3 writes (PUT and POST: objects, parts, completions) take an upload slot as
/// native PUTs do; refused, they hear S3's `SlowDown`.
async fn admit_s3_uploads(State(limits): State<UploadLimits>, request: Request, next: Next) -> Response {
    if request.method() != Method::PUT && request.method() != Method::POST {
        return next.run(request).await;
    }
    match limits.permit(request.headers()) {
        Some(_permit) => next.run(request).await,
        None => s3_overloaded("uploads"),
    }
}
