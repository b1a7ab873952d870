//! The HTTP middleware both routers use ([`HttpMetrics`], a tower layer):
//! requests by route template, their latency until the response body is done,
//! and body bytes counted frame by frame as they flow.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use hyper::body::{Frame, SizeHint};
use metrics::{Counter, Histogram, SharedString};

use super::{
    install, Scope, HTTP_REQUESTS, HTTP_REQUEST_BODY_BYTES, HTTP_REQUEST_DURATION, HTTP_RESPONSE_BODY_BYTES, UNMATCHED,
};

/// Histogram samples wait in the recorder until drained (at every render): a
/// process nobody scrapes would grow without bound, so requests drain them at most
/// this often (milliseconds since [`process_start`]).
const UPKEEP_EVERY_MS: u64 = 5_000;

static LAST_UPKEEP_MS: AtomicU64 = AtomicU64::new(0);

fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Drains histogram samples when the last drain is [`UPKEEP_EVERY_MS`] old: one
/// request in five seconds pays for it, with no task to own.
fn upkeep_if_due(now: Instant) {
    let now_ms = now.saturating_duration_since(process_start()).as_millis() as u64;
    let last = LAST_UPKEEP_MS.load(Ordering::Relaxed);
    if now_ms.saturating_sub(last) >= UPKEEP_EVERY_MS
        && LAST_UPKEEP_MS.compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    {
        install().run_upkeep();
    }
}

/// The HTTP middleware's state: the server's [`Scope`] and the handles of each
/// (route, method) seen, so a request costs a map lookup and atomic adds, not a
/// series lookup with five labels built. The map is bounded by the routes (every
/// route template and [`UNMATCHED`]) times the methods (unknown ones are `other`).
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    inner: Arc<HttpInner>,
    /// The route label of every request, for a service with no route templates
    /// of its own (the S3 API: [`S3_ROUTE`]).
    fixed_route: Option<&'static str>,
}

/// The `route` label of every S3 request (the S3 API is one service to the router).
pub const S3_ROUTE: &str = "s3";

#[derive(Debug)]
struct HttpInner {
    scope: Scope,
    /// By route template.
    routes: RwLock<HashMap<Box<str>, ByMethod>>,
}

/// One route's handles by method label.
type ByMethod = Vec<(&'static str, Arc<RouteMetrics>)>;

/// The handles of one (route, method).
#[derive(Debug)]
struct RouteMetrics {
    scope: Scope,
    route: SharedString,
    method: &'static str,
    duration: Histogram,
    body_in: Counter,
    body_out: Counter,
    /// Requests by status (a handful per route).
    statuses: RwLock<Vec<(u16, Counter)>>,
}

impl RouteMetrics {
    /// Counts one request answered with `status`, incrementing in place (no
    /// handle cloned: every clone is an atomic write other cores see).
    fn count_request(&self, status: u16) {
        {
            let statuses = self.statuses.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, c)) = statuses.iter().find(|(s, _)| *s == status) {
                c.increment(1);
                return;
            }
        }
        let mut statuses = self.statuses.write().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = statuses.iter().find(|(s, _)| *s == status) {
            c.increment(1);
            return;
        }
        let s = &self.scope;
        let counter = metrics::counter!(HTTP_REQUESTS,
            "role" => s.role.as_str(), "server" => s.server.clone(),
            "route" => self.route.clone(), "method" => self.method, "status" => status.to_string());
        counter.increment(1);
        statuses.push((status, counter));
    }
}

/// The `method` label values: the standard methods by name, anything else
/// `other`, so a client cannot mint series.
const METHOD_LABELS: [&str; 10] =
    ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "other"];

/// The index of `method`'s label in [`METHOD_LABELS`].
fn method_slot(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::PUT => 2,
        Method::POST => 3,
        Method::DELETE => 4,
        Method::OPTIONS => 5,
        Method::PATCH => 6,
        Method::TRACE => 7,
        Method::CONNECT => 8,
        _ => 9,
    }
}

impl HttpMetrics {
    /// The middleware state of the server `scope` names.
    pub fn new(scope: Scope) -> HttpMetrics {
        HttpMetrics { inner: Arc::new(HttpInner { scope, routes: RwLock::default() }), fixed_route: None }
    }

    /// The middleware state of a service whose every request is labelled `route`.
    pub fn for_route(scope: Scope, route: &'static str) -> HttpMetrics {
        HttpMetrics { fixed_route: Some(route), ..HttpMetrics::new(scope) }
    }

    fn route(&self, route: &str, method: &'static str) -> Arc<RouteMetrics> {
        let routes = self.inner.routes.read().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = routes.get(route).and_then(|ms| ms.iter().find(|(m, _)| *m == method)) {
            return m.1.clone();
        }
        drop(routes);
        let mut routes = self.inner.routes.write().unwrap_or_else(|e| e.into_inner());
        let methods = routes.entry(route.into()).or_default();
        if let Some((_, m)) = methods.iter().find(|(m, _)| *m == method) {
            return m.clone();
        }
        let s = &self.inner.scope;
        let route_label = SharedString::from(Arc::<str>::from(route));
        let (role, server, r) = (s.role.as_str(), s.server.clone(), route_label.clone());
        let duration = metrics::histogram!(HTTP_REQUEST_DURATION,
            "role" => role, "server" => server.clone(), "route" => r.clone(), "method" => method);
        let body_in = metrics::counter!(HTTP_REQUEST_BODY_BYTES,
            "role" => role, "server" => server.clone(), "route" => r.clone(), "method" => method);
        let body_out = metrics::counter!(HTTP_RESPONSE_BODY_BYTES,
            "role" => role, "server" => server, "route" => r, "method" => method);
        let m = Arc::new(RouteMetrics {
            scope: s.clone(),
            route: route_label,
            method,
            duration,
            body_in,
            body_out,
            statuses: RwLock::default(),
        });
        methods.push((method, m.clone()));
        m
    }
}

/// The middleware, as a layer: `Router::layer(HttpMetrics::new(scope))` after the
/// routes, so each route's handlers are wrapped with the matched route known.
/// Counts each request by route, method and status once its response head is
/// ready, counts body bytes in both directions as frames pass, and times the
/// request until its response body ends or is dropped.
impl<S> tower::Layer<S> for HttpMetrics {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked { inner, metrics: self.clone(), cache: Arc::default() }
    }
}

/// A service (one route's handler, as axum layers each) wrapped by [`HttpMetrics`].
#[derive(Clone, Debug)]
pub struct Tracked<S> {
    inner: S,
    metrics: HttpMetrics,
    cache: Arc<RouteCache>,
}

/// The handles of the route one [`Tracked`] serves, by method slot: after the
/// first request, finding them reads shared memory and writes none (no lock, no
/// map), which keeps the cores from trading cache lines on every request.
#[derive(Debug, Default)]
struct RouteCache {
    route: OnceLock<Box<str>>,
    by_method: [OnceLock<Arc<RouteMetrics>>; METHOD_LABELS.len()],
}

impl<S> Tracked<S> {
    fn route_of(&self, request: &Request) -> Arc<RouteMetrics> {
        let route = match self.metrics.fixed_route {
            Some(route) => route,
            None => request.extensions().get::<MatchedPath>().map_or(UNMATCHED, |p| p.as_str()),
        };
        let slot = method_slot(request.method());
        let label = METHOD_LABELS[slot];
        if self.cache.route.get_or_init(|| route.into()).as_ref() == route {
            return self.cache.by_method[slot].get_or_init(|| self.metrics.route(route, label)).clone();
        }
        // Wrapped around more than one route (a layer outside a nested router).
        self.metrics.route(route, label)
    }
}

impl<S, E> tower::Service<Request> for Tracked<S>
where
    S: tower::Service<Request, Response = Response, Error = E>,
{
    type Response = Response;
    type Error = E;
    type Future = Tracking<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let start = Instant::now();
        let route = self.route_of(&request);
        let request = request.map(|body| Body::new(CountedBody { inner: body, route: route.clone() }));
        Tracking { inner: self.inner.call(request), route: Some(route), start }
    }
}

pin_project_lite::pin_project! {
    /// A [`Tracked`] request being handled: counts it when its response is ready
    /// and hands the response body to [`TimedBody`].
    pub struct Tracking<F> {
        #[pin]
        inner: F,
        route: Option<Arc<RouteMetrics>>,
        start: Instant,
    }
}

impl<F, E> Future for Tracking<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(response)) => response,
        };
        let Some(route) = this.route.take() else { return Poll::Ready(Ok(response)) };
        route.count_request(response.status().as_u16());
        let start = *this.start;
        Poll::Ready(Ok(response.map(|body| Body::new(TimedBody { inner: body, route, start }))))
    }
}

/// A request body that adds the length of each data frame to its route's
/// request-bytes counter as it passes.
struct CountedBody {
    inner: Body,
    route: Arc<RouteMetrics>,
}

impl HttpBody for CountedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.route.body_in.increment(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that counts its data frames' bytes as they pass and records
/// the request's duration when it is dropped: after its last frame, or when the
/// connection gives up on it.
struct TimedBody {
    inner: Body,
    route: Arc<RouteMetrics>,
    start: Instant,
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.route.body_out.increment(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        let now = Instant::now();
        self.route.duration.record(now.saturating_duration_since(self.start).as_secs_f64());
        upkeep_if_due(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::tests::lines_with;
    use crate::telemetry::{render, Role, LATENCY_BUCKETS};
    use axum::routing::put;
    use axum::Router;
    use tower::ServiceExt;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(METHOD_LABELS[method_slot(&Method::DELETE)], "DELETE");
        assert_eq!(METHOD_LABELS[method_slot(&Method::from_bytes(b"BREW").unwrap())], "other");
    }

    #[tokio::test]
    async fn the_middleware_counts_by_route_template_and_body_bytes() {
        let server = "127.0.0.1:2";
        let app = Router::new()
            .route("/things/{id}", put(|body: Bytes| async move { format!("got {}", body.len()) }))
            .layer(HttpMetrics::new(Scope::new(Role::Api, server)));
        for id in ["a", "b"] {
            let request = Request::put(format!("/things/{id}")).body(Body::from(vec![7u8; 1000])).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), 200);
            let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
            assert_eq!(&body[..], b"got 1000");
        }
        let request = Request::get("/nowhere/at/all").body(Body::empty()).unwrap();
        assert_eq!(app.clone().oneshot(request).await.unwrap().status(), 404);

        let text = render();
        let srv = format!("server=\"{server}\"");
        let route = "route=\"/things/{id}\"";
        let count = lines_with(&text, &[HTTP_REQUESTS, &srv, route, "method=\"PUT\"", "status=\"200\""]);
        assert_eq!(
            count,
            vec![format!("{HTTP_REQUESTS}{{role=\"api\",{srv},{route},method=\"PUT\",status=\"200\"}} 2")]
        );
        assert!(!text.contains("/things/a"), "raw paths never become labels");
        let missing = lines_with(&text, &[HTTP_REQUESTS, &srv, "route=\"unmatched\"", "status=\"404\""]);
        assert_eq!(missing.len(), 1, "{text}");
        let bytes_in = lines_with(&text, &[HTTP_REQUEST_BODY_BYTES, &srv, route]);
        assert_eq!(bytes_in.len(), 1, "{text}");
        assert!(bytes_in[0].ends_with(" 2000"), "{}", bytes_in[0]);
        let bytes_out = lines_with(&text, &[HTTP_RESPONSE_BODY_BYTES, &srv, route]);
        assert!(bytes_out[0].ends_with(" 16"), "{}", bytes_out[0]);
        let timed = lines_with(&text, &[HTTP_REQUEST_DURATION, "_count", &srv, route]);
        assert_eq!(timed.len(), 1, "{text}");
        assert!(timed[0].ends_with(" 2"), "{}", timed[0]);
        let buckets = lines_with(&text, &[HTTP_REQUEST_DURATION, "_bucket", &srv, route]);
        assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1, "every bucket and +Inf");
    }
}
