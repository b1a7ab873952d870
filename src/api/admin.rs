//! The operator's routes of an API server (`/admin/…`), which `cairn admin` talks
//! to: the state of the cluster and of every lifecycle worker in one JSON answer,
//! and the levers (start a scrub everywhere, collect garbage now, repair one name,
//! pause or resume a worker).
//!
//! | request | meaning |
//! |---|---|
//! | `GET /admin/status` | data servers (heartbeat age, free space, shard counts, scrub), workers, repair queue, content counts, lease holders |
//! | `POST /admin/scrub` | every live data server starts a scrub pass now |
//! | `POST /admin/gc` | a full garbage-collection pass (orphans included) now |
//! | `POST /admin/heal` | the healer looks at scrub findings and silent servers now |
//! | `POST /admin/uploads/expire` | expired resumable uploads are removed now |
//! | `POST /admin/repair/<name>` | verifies and repairs the current version of `<name>` now |
//! | `POST /admin/workers/<worker>/pause`, `…/resume` | pause or resume a worker |
//! | `GET /admin/keys` | the access keys (ids and limits, never secrets) |
//! | `POST /admin/keys` | create a key (`{"buckets": [...], "read_only": bool}`); the answer holds its secret, once |
//! | `DELETE /admin/keys/<id>` | delete a key |
//!
//! Every route is [`Action::Admin`]: once the cluster has a key, it needs an
//! unrestricted read-write key ([`policy::authorize`], asked by this router's own
//! layer before any handler runs); the first key can be created while there is none.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::future::join_all;
use serde_json::json;

use super::policy::{self, Action, Caller};
use super::ApiError;
use crate::data::wire::WorkerAction;
use crate::maintenance::{gc, heal, Maintenance};
use crate::meta::DEFAULT_BUCKET;
use crate::object::ObjectService;
use crate::telemetry::HttpMetrics;

/// What the admin routes work on.
#[derive(Clone)]
pub struct Admin {
    /// The object paths (cluster view, metadata, data-server client).
    pub service: ObjectService,
    /// The lifecycle workers.
    pub maintenance: Maintenance,
    /// The access keys (the `/admin/keys` routes manage them).
    pub keys: super::keys::KeyRing,
}

/// The admin routes.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/admin/status", get(status))
        .route("/admin/scrub", post(scrub))
        .route("/admin/gc", post(collect))
        .route("/admin/heal", post(heal_now))
        .route("/admin/uploads/expire", post(expire_uploads))
        .route("/admin/repair/{*name}", post(repair))
        .route("/admin/workers/{worker}/{action}", post(worker_action))
        .route("/admin/keys", get(list_keys).post(create_key))
        .route("/admin/keys/{id}", axum::routing::delete(delete_key))
        .route_layer(axum::middleware::from_fn(authorize_admin))
        .layer(HttpMetrics::new(admin.service.telemetry_scope().clone()))
        .with_state(Arc::new(admin))
}

type AdminState = State<Arc<Admin>>;

/// Every admin route is one action; a caller that may not do it hears 403 before
/// any handler runs. The caller comes from [`super::keys::native_auth`]; a request
/// without one (the layer missing) is refused, not served.
async fn authorize_admin(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let Some(caller) = request.extensions().get::<Caller>() else {
        return (StatusCode::FORBIDDEN, "no caller was established for this request\n").into_response();
    };
    match policy::authorize(caller, Action::Admin, None) {
        Ok(()) => next.run(request).await,
        Err(refusal) => super::keys::refused(refusal),
    }
}

/// What `POST /admin/keys` takes.
#[derive(Debug, Default, serde::Deserialize)]
struct NewKey {
    #[serde(default)]
    buckets: Vec<String>,
    #[serde(default)]
    read_only: bool,
}

async fn create_key(State(admin): AdminState, body: axum::body::Bytes) -> Response {
    let wanted: NewKey = if body.is_empty() {
        NewKey::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(k) => k,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, Json(error_json(format!("bad key request: {e}")))).into_response()
            }
        }
    };
    if let Some(bad) = wanted.buckets.iter().find(|b| b.is_empty() || b.len() > 63) {
        return (StatusCode::BAD_REQUEST, Json(error_json(format!("bad bucket name {bad:?}")))).into_response();
    }
    let (access_key, secret) = super::keys::generate_key();
    let key = crate::meta::AccessKey {
        access_key,
        secret,
        buckets: wanted.buckets,
        read_only: wanted.read_only,
        created_ms: crate::clock::now_ms(),
    };
    match admin.service.meta.create_key(&key).await {
        Ok(true) => {
            admin.keys.invalidate();
            tracing::info!(access_key = %key.access_key, buckets = ?key.buckets, read_only = key.read_only, "access key created");
            Json(json!({
                "access_key": key.access_key,
                "secret_key": key.secret,
                "buckets": key.buckets,
                "read_only": key.read_only,
                "created": key.created_ms,
            }))
            .into_response()
        }
        Ok(false) => (StatusCode::CONFLICT, Json(error_json("key id clash; try again"))).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(error_json(e))).into_response(),
    }
}

async fn list_keys(State(admin): AdminState) -> Response {
    match admin.service.meta.keys().await {
        Ok(keys) => {
            let keys: Vec<_> = keys
                .iter()
                .map(|k| json!({ "access_key": k.access_key, "buckets": k.buckets, "read_only": k.read_only, "created": k.created_ms }))
                .collect();
            Json(json!({ "keys": keys })).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(error_json(e))).into_response(),
    }
}

async fn delete_key(State(admin): AdminState, Path(id): Path<String>) -> Response {
    match admin.service.meta.delete_key(&id).await {
        Ok(true) => {
            admin.keys.invalidate();
            tracing::info!(access_key = %id, "access key deleted");
            Json(json!({ "deleted": id })).into_response()
        }
        Ok(false) => (StatusCode::NOT_FOUND, Json(error_json(format!("no such key: {id}")))).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(error_json(e))).into_response(),
    }
}

fn error_json(e: impl std::fmt::Display) -> serde_json::Value {
    json!({ "error": e.to_string() })
}

async fn status(State(admin): AdminState) -> Response {
    let svc = &admin.service;
    let members = svc.membership().members();
    let data_servers = join_all(members.into_iter().map(|m| async move {
        let (stats, scrub, workers) = if m.live {
            let (stats, scrub, workers) =
                tokio::join!(svc.client.stats(&m.addr), svc.client.scrub_status(&m.addr), svc.client.workers(&m.addr));
            (
                stats.map(|s| json!(s)).unwrap_or_else(error_json),
                scrub.map(|s| json!(s)).unwrap_or_else(error_json),
                workers.map(|w| json!(w)).unwrap_or_else(error_json),
            )
        } else {
            (serde_json::Value::Null, serde_json::Value::Null, serde_json::Value::Null)
        };
        json!({
            "addr": m.addr,
            "live": m.live,
            "heartbeat_age_ms": m.age.as_millis() as u64,
            "free_bytes": m.free,
            "stats": stats,
            "scrub": scrub,
            "workers": workers,
        })
    }))
    .await;
    let meta = &svc.meta;
    let (contents, gc_holder, heal_holder) =
        tokio::join!(meta.content_counts(), meta.lease_holder(gc::LEASE), meta.lease_holder(heal::LEASE));
    Json(json!({
        "api_server": admin.maintenance.config.holder,
        "data_servers": data_servers,
        "workers": admin.maintenance.workers.statuses(),
        "repair": svc.repair_status(),
        "contents": contents.map(|c| json!(c)).unwrap_or_else(error_json),
        "leases": {
            "gc": gc_holder.map(|h| json!(h)).unwrap_or_else(error_json),
            "heal": heal_holder.map(|h| json!(h)).unwrap_or_else(error_json),
        },
    }))
    .into_response()
}

async fn scrub(State(admin): AdminState) -> Response {
    let svc = &admin.service;
    let started = join_all(svc.membership().live().into_iter().map(|s| async move {
        let answer = svc.client.scrub_start(&s.addr).await.map(|s| json!(s)).unwrap_or_else(error_json);
        json!({ "addr": s.addr, "scrub": answer })
    }))
    .await;
    admin.maintenance.heal_now();
    (StatusCode::ACCEPTED, Json(json!({ "data_servers": started }))).into_response()
}

async fn collect(State(admin): AdminState) -> Response {
    admin.maintenance.collect_now();
    let status = admin.maintenance.workers.get("gc").map(|h| h.status());
    (StatusCode::ACCEPTED, Json(json!({ "gc": status }))).into_response()
}

async fn heal_now(State(admin): AdminState) -> Response {
    admin.maintenance.heal_now();
    let status = admin.maintenance.workers.get("heal").map(|h| h.status());
    (StatusCode::ACCEPTED, Json(json!({ "heal": status }))).into_response()
}

async fn expire_uploads(State(admin): AdminState) -> Response {
    admin.maintenance.expire_uploads_now();
    let status = admin.maintenance.workers.get("uploads").map(|h| h.status());
    (StatusCode::ACCEPTED, Json(json!({ "uploads": status }))).into_response()
}

async fn repair(State(admin): AdminState, Path(name): Path<String>) -> Result<Response, ApiError> {
    super::names::validate(&name)?;
    let svc = &admin.service;
    let record = svc.find(DEFAULT_BUCKET, &name, None).await?;
    let Some(content) = record.content else {
        return Ok((StatusCode::NOT_FOUND, format!("object {name} was deleted\n")).into_response());
    };
    let rebuilt = svc.repair_with(&content, true).await?;
    Ok(Json(json!({
        "name": name,
        "version": record.version,
        "hash": content.hash,
        "rebuilt": rebuilt,
    }))
    .into_response())
}

async fn worker_action(State(admin): AdminState, Path((worker, action)): Path<(String, String)>) -> Response {
    let handle = admin.maintenance.workers.get(&worker);
    if handle.is_none() && !DATA_WORKERS.contains(&worker.as_str()) {
        return (StatusCode::NOT_FOUND, format!("no worker called {worker:?}\n")).into_response();
    }
    let Some(act) = WorkerAction::parse(&action) else {
        return (StatusCode::BAD_REQUEST, format!("unknown action {action:?} (pause, resume, trigger)\n"))
            .into_response();
    };
    let Some(handle) = handle else {
        return data_worker_action(&admin, &worker, act).await;
    };
    match act {
        WorkerAction::Pause => handle.pause(),
        WorkerAction::Resume => handle.resume(),
        WorkerAction::Trigger => handle.trigger(),
    }
    Json(json!({ "worker": handle.status() })).into_response()
}

/// The workers every data server runs (`GET /workers` on a data server), which
/// `/admin/workers/<name>/<action>` passes on to every live data server.
const DATA_WORKERS: &[&str] = &["scrub", "temp-cleaner", "compactor"];

/// Pauses, resumes or triggers the data servers' worker `worker` on every live data
/// server; answers each server's report of it (or the error that server gave).
async fn data_worker_action(admin: &Admin, worker: &str, action: WorkerAction) -> Response {
    let svc = &admin.service;
    let answers = join_all(svc.membership().live().into_iter().map(|s| async move {
        let answer =
            svc.client.worker_action(&s.addr, worker, action).await.map(|w| json!(w)).unwrap_or_else(error_json);
        json!({ "addr": s.addr, "worker": answer })
    }))
    .await;
    Json(json!({ "data_servers": answers })).into_response()
}
