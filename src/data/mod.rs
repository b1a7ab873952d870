//! The data server (`cairn data`): owns one storage root, stores shards through the
//! temp + commit protocol, serves them verified, answers locate requests from the
//! bus and heartbeats to the API servers.
//!
//! HTTP interface (used by API servers only):
//!
//! | request | meaning |
//! |---|---|
//! | `POST /temp/<uuid>` | stream a shard's bytes into a temp file; fsynced before 200 |
//! | `PUT /temp/<uuid>` | commit it as `X-Cairn-Hash`.`X-Cairn-Shard`, checking `X-Cairn-Length` |
//! | `DELETE /temp/<uuid>` | abort it |
//! | `PUT /objects/<hash>.<shard>` | a whole shard in one request: temp, fsync and commit |
//! | `GET`/`HEAD /objects/<hash>.<shard>` | the shard's verified bytes (`Range` supported) |
//! | `DELETE /objects/<hash>.<shard>` | move the shard to `garbage/` (a finding): 204, or 404 when not here |
//! | `DELETE /objects/<hash>.<shard>?purge=1` | delete it for good, freeing its space: a file is unlinked (directory fsynced), a record tombstoned (space back at the next compaction, every `--compact-interval`): 204, or 404 |
//! | `POST /purge` | purge many: body `{"shards":[{"hash":"<hex>","shard":N},…]}` (at most 1000) → `{"purged":N,"missing":M}` |
//! | `GET /shards?after=<hash>.<shard>&limit=N` | the shards held here in (hash, shard) order, both homes, each once (limit ≤ 1000, default 1000) → `{"shards":[{"hash":"<hex>","shard":N,"len":L,"policy":"K+M"\|null,"age_s":S}],"next":"<hash>.<shard>"\|null}`; `age_s` never overstates the time since the shard was committed here (see [`store::ShardStore::list`]) |
//! | `GET /scrub` | the scrubber's status (JSON, see [`wire::ScrubStatus`]) |
//! | `POST /scrub` | start a pass now unless one runs: 202 with the status |
//! | `POST /scrub/pause`, `POST /scrub/resume` | pause or resume the scrubber: 202 with the status |
//! | `GET /scrub/findings?after=SEQ` | shards moved to `garbage/` for API servers to rebuild → `{"epoch":"<uuid>","findings":[{"seq":N,"hash":"<hex>","shard":N,"at_ms":T}]}` (see [`scrub`]) |
//! | `GET /healthz` | liveness |
//! | `GET /stats` | the volume store's figures (JSON): small shards, index bytes, volumes |
//! | `POST /compact` | compact the volumes that are due now (JSON: what was done) |
//! | `GET /metrics` | the process's metrics, Prometheus text ([`crate::telemetry`]) |
//!
//! A shard's identity is its hash, index, data length and redundancy policy.
//! `X-Cairn-Policy: K+M` (optional everywhere, for curl and older clients; absent
//! means unknown) names the policy: on `POST /temp` and `PUT /objects` it is written
//! into the shard's header; on `PUT /temp` a policy other than the temp shard's is
//! refused with 409 (the temp is removed). On `GET`/`HEAD`, `X-Cairn-Policy` and
//! `X-Cairn-Length` say what the reader expects; a stored shard of another length,
//! or of another policy when both are known, answers 409 with a one-line reason and
//! is left in place (the reader's record may be the stale side). Every successful
//! read carries `X-Cairn-Length` (the stored data length) and `X-Cairn-Policy` (when
//! known). A commit over a stored shard of the same length and policy keeps it
//! (dedup); another length or known policy, or a corrupt file, is replaced.
//!
//! Disk work runs on blocking threads ([`store`], [`shardfile`]); this file is the
//! async edge: HTTP, bus loops, and shutdown.

pub mod client;
#[cfg(test)]
mod crash;
pub mod fs;
#[cfg(test)]
mod lifecycle_tests;
pub mod scrub;
pub mod shardfile;
pub mod store;
pub mod volume;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::bus::{Bus, Heartbeat, LocateReply};
use crate::content::{ContentHash, Policy, ShardIndex};
use crate::range::{self, RangeRequest};
use crate::secret::{ClusterSecret, Refusal, Verifier};
use crate::server::{self, HttpTimeouts};
use crate::telemetry::{self, HttpMetrics, Role, Scope};
use crate::worker::{WorkerHandle, Workers};
use scrub::{Findings, ScrubShared, Scrubber};
use store::{ShardStore, StoreConfig, StoreError, StoredShard};
use wire::{
    Compacted, DeleteQuery, FindingsPage, FindingsQuery, HeldShard, ListQuery, PurgeRequest, Purged, ScrubStatus,
    ShardPage, StoreStats, VolumeFigures, VolumeStats, Written, HASH_HEADER, LENGTH_HEADER, MAX_PAGE, POLICY_HEADER,
    SHARD_HEADER,
};

/// How a data server runs.
#[derive(Clone, Debug)]
pub struct DataConfig {
    /// The address API servers dial, announced in heartbeats and locate replies.
    pub advertise: String,
    /// The storage root.
    pub root: PathBuf,
    /// How often to heartbeat.
    pub heartbeat_interval: Duration,
    /// Temp shards untouched for this long are removed.
    pub temp_ttl: Duration,
    /// How long the server waits on its clients (API servers).
    pub http: HttpTimeouts,
    /// Where shards go: volumes for small ones, files for the rest.
    pub store: StoreConfig,
    /// How often sealed volumes are checked for compaction.
    pub compact_interval: Duration,
    /// Bytes per second the scrubber reads at most (0: unlimited).
    pub scrub_rate: u64,
    /// A scrub pass starts this long after the last one finished (zero: only on
    /// `POST /scrub`).
    pub scrub_interval: Duration,
    /// `garbage/` entries older than this are removed.
    pub garbage_ttl: Duration,
    /// With a secret, every request but `/healthz` and `/metrics` must be signed
    /// with it ([`crate::secret`]); `None`: an open data tier.
    pub cluster_secret: Option<ClusterSecret>,
}

/// Default for [`DataConfig::garbage_ttl`]: a week.
pub const DEFAULT_GARBAGE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Errors that stop a data server from starting or serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataServerError {
    /// The storage root cannot be opened.
    #[error("cannot open storage root {root}: {source}")]
    Root {
        /// The root.
        root: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The bus refused the subscription.
    #[error(transparent)]
    Bus(#[from] crate::bus::BusError),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
}

struct DataState {
    store: ShardStore,
    /// Shards moved to `garbage/`, for API servers to rebuild.
    findings: Arc<Findings>,
    /// The scrubber.
    scrub: WorkerHandle,
    scrub_shared: Arc<ScrubShared>,
    scrub_rate: u64,
    scrub_interval: Duration,
    /// KiB of whole-shard bodies that may be held in memory at once (see
    /// [`BUFFER_BUDGET`]).
    buffered: Arc<tokio::sync::Semaphore>,
    /// This server's metric labels.
    scope: Scope,
    /// Shards committed here ([`telemetry::SHARDS_WRITTEN`]).
    shards_written: metrics::Counter,
}

/// Bytes of whole-shard bodies (`PUT /objects/<hash>.<shard>` of a known length up
/// to 1 MiB) a data server holds in memory at once, waiting for their batch or
/// their write; requests beyond it wait for room before their body is read, so
/// memory stays bounded however many API servers write at once.
const BUFFER_BUDGET: usize = 64 << 20;

/// Runs a data server on `listener` until `shutdown` is cancelled: HTTP, heartbeats,
/// locate answers and temp cleaning. Returns once every task has stopped.
pub async fn serve(
    listener: TcpListener,
    config: DataConfig,
    bus: Bus,
    shutdown: CancellationToken,
) -> Result<(), DataServerError> {
    // Opening recovers the volume index (a checkpoint load and a scan of the tail):
    // disk work, off the async threads.
    let (root, store_config) = (config.root.clone(), config.store);
    let opened = tokio::task::spawn_blocking(move || ShardStore::open_with(&root, store_config))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let scope = Scope::new(Role::Data, &config.advertise);
    let store = opened
        .map_err(|source| DataServerError::Root { root: config.root.clone(), source })?
        .counting_quarantines(scope.counter(telemetry::SHARDS_QUARANTINED));
    // Nothing is being written before we serve, so every temp shard is abandoned.
    match blocking(store.clone(), |s| s.clean_stale_temps(Duration::ZERO)).await {
        Ok(n) if n > 0 => tracing::info!(removed = n, "removed abandoned temp shards"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not clean temp shards"),
    }
    let findings = Arc::new(Findings::default());
    let reseed = findings.clone();
    match blocking(store.clone(), move |s| reseed.reseed(s)).await {
        Ok(n) if n > 0 => tracing::info!(findings = n, "scrub findings re-seeded from garbage/"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not re-seed scrub findings from garbage/"),
    }
    let tasks = TaskTracker::new();
    let workers = Workers::new(tasks.clone(), shutdown.clone(), scope.clone());
    let scrub_shared = Arc::new(ScrubShared::default());
    let scrubber = {
        let (store, shared, findings, server) =
            (store.clone(), scrub_shared.clone(), findings.clone(), config.advertise.clone());
        let (rate, interval) = (config.scrub_rate, config.scrub_interval);
        tokio::task::spawn_blocking(move || Scrubber::new(store, rate, interval, shared, findings, server))
            .await
            .map_err(|e| DataServerError::Root { root: config.root.clone(), source: std::io::Error::other(e) })?
    };
    let scrub = workers.spawn(scrubber);
    let locates = bus.locate_requests().await?;
    tasks.spawn(answer_locates(bus.clone(), locates, store.clone(), config.advertise.clone(), shutdown.clone()));
    tasks.spawn(heartbeat(bus, store.clone(), config.clone(), shutdown.clone()));
    tasks.spawn(clean_temps(store.clone(), config.temp_ttl, config.garbage_ttl, shutdown.clone()));
    if store.volumes().is_some() {
        tasks.spawn(compact_volumes(store.clone(), config.compact_interval, shutdown.clone()));
    }
    tasks.close();

    let buffered = Arc::new(tokio::sync::Semaphore::new(BUFFER_BUDGET / 1024));
    let shards_written = scope.counter(telemetry::SHARDS_WRITTEN);
    let http_metrics = HttpMetrics::new(scope.clone());
    let state = Arc::new(DataState {
        store: store.clone(),
        scope,
        shards_written,
        findings,
        scrub,
        scrub_shared,
        scrub_rate: config.scrub_rate,
        scrub_interval: config.scrub_interval,
        buffered,
    });
    let members_only = Router::new()
        .route("/temp/{id}", post(post_temp).put(commit_temp).delete(abort_temp))
        .route("/objects/{file}", get(get_shard).put(put_shard).delete(delete_shard))
        .route("/stats", get(stats))
        .route("/compact", post(compact))
        .route("/purge", post(purge_many))
        .route("/shards", get(list_shards))
        .route("/scrub", get(scrub_status).post(scrub_start))
        .route("/scrub/pause", post(scrub_pause))
        .route("/scrub/resume", post(scrub_resume))
        .route("/scrub/findings", get(scrub_findings));
    let members_only = match &config.cluster_secret {
        Some(secret) => {
            let check =
                Arc::new(SignatureCheck { verifier: Verifier::new(secret.clone()), scope: state.scope.clone() });
            members_only.route_layer(axum::middleware::from_fn_with_state(check, require_signature))
        }
        None => members_only,
    };
    let app = members_only
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .layer(http_metrics)
        .with_state(state);
    tracing::info!(addr = %config.advertise, root = %config.root.display(), "data server listening");
    let served = server::serve(listener, app, config.http, shutdown.clone()).await.map_err(DataServerError::Http);
    shutdown.cancel();
    tasks.wait().await;
    // A fresh checkpoint makes the next start read the index instead of scanning.
    if let Some(volumes) = store.volumes().cloned() {
        match tokio::task::spawn_blocking(move || volumes.checkpoint()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "no index checkpoint at shutdown; the next start scans more"),
            Err(e) => tracing::warn!(error = %e, "checkpoint task failed"),
        }
    }
    served
}

/// A closed data tier's gate: who may ask anything of this server.
struct SignatureCheck {
    verifier: Verifier,
    scope: Scope,
}

/// Lets through only requests signed with the cluster secret, within the clock
/// window and never seen before; answers 401 (503 when the replay memory is full)
/// with the reason otherwise, and counts it
/// ([`telemetry::CLUSTER_AUTH_REFUSED`]). Nothing of a refused request is read
/// beyond its head.
async fn require_signature(
    State(check): State<Arc<SignatureCheck>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match check.verifier.verify_request(req.method(), req.uri(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            check.scope.counter_with(telemetry::CLUSTER_AUTH_REFUSED, "reason", refusal.as_str()).increment(1);
            tracing::debug!(%refusal, method = %req.method(), uri = %req.uri(), "unsigned or badly signed request refused");
            let status =
                if refusal == Refusal::Busy { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::UNAUTHORIZED };
            (status, format!("{refusal}\n")).into_response()
        }
    }
}

/// Compacts the volumes that are due every `period`, and checkpoints after.
async fn compact_volumes(store: ShardStore, period: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        if let Err(e) = blocking(store.clone(), compact_now).await {
            tracing::warn!(error = %e, "compaction failed; will try again");
        }
    }
}

/// One round of compaction: every volume that is due, what was done to each.
fn compact_now(store: &ShardStore) -> Result<Vec<Compacted>, StoreError> {
    let Some(volumes) = store.volumes() else { return Ok(Vec::new()) };
    let io = |e: volume::VolumeError| StoreError::Io(std::io::Error::other(e));
    let done = volumes.compact_due().map_err(io)?;
    if !done.is_empty() {
        volumes.checkpoint()?;
    }
    Ok(done.into_iter().map(|(volume, c)| Compacted { volume, moved: c.moved, freed: c.freed }).collect())
}

/// `GET /stats`: the volume store's figures.
async fn stats(State(state): State<Arc<DataState>>) -> Response {
    let stats = match state.store.volumes() {
        Some(v) => StoreStats::Volumes(volume_stats(v.stats())),
        None => StoreStats::NoVolumes { volumes: () },
    };
    axum::Json(stats).into_response()
}

/// The volume store's figures as the protocol names them.
fn volume_stats(stats: volume::Stats) -> VolumeStats {
    let volumes = stats
        .volumes
        .into_iter()
        .map(|v| VolumeFigures {
            id: v.id,
            size: v.size,
            live_records: v.live_records,
            live_bytes: v.live_bytes,
            active: v.active,
        })
        .collect();
    VolumeStats {
        shards: stats.shards,
        index_bytes: stats.index_bytes,
        syncs: stats.syncs,
        synced_ops: stats.synced_ops,
        volumes,
    }
}

/// `GET /metrics`: the gauges read from this server's store (volume figures, free
/// space), then the process's metrics (every server in it: see [`crate::telemetry`]).
async fn metrics(State(state): State<Arc<DataState>>) -> Response {
    let scope = &state.scope;
    if let Some(v) = state.store.volumes() {
        let stats = v.stats();
        scope.gauge(telemetry::SHARDS_STORED).set(stats.shards as f64);
        scope.gauge(telemetry::VOLUMES).set(stats.volumes.len() as f64);
        scope.gauge(telemetry::VOLUME_BYTES).set(stats.volumes.iter().map(|v| v.size).sum::<u64>() as f64);
        scope.gauge(telemetry::VOLUME_LIVE_BYTES).set(stats.volumes.iter().map(|v| v.live_bytes).sum::<u64>() as f64);
        scope.counter(telemetry::VOLUME_SYNCS).absolute(stats.syncs);
    }
    match blocking(state.store.clone(), |s| s.free_bytes().map_err(StoreError::Io)).await {
        Ok(free) => scope.gauge(telemetry::DISK_FREE_BYTES).set(free as f64),
        Err(e) => tracing::warn!(error = %e, "cannot read free space for /metrics"),
    }
    telemetry::response()
}

/// `POST /compact`: compacts the volumes that are due, now.
async fn compact(State(state): State<Arc<DataState>>) -> Response {
    match blocking(state.store.clone(), compact_now).await {
        Ok(done) => axum::Json(done).into_response(),
        Err(e) => store_error(e),
    }
}

/// Runs `f` on the blocking pool; a panicked or cancelled job becomes an I/O error.
async fn blocking<T: Send + 'static>(
    store: ShardStore,
    f: impl FnOnce(&ShardStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .unwrap_or_else(|e| Err(StoreError::Io(std::io::Error::other(e))))
}

async fn heartbeat(bus: Bus, store: ShardStore, config: DataConfig, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(config.heartbeat_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let free = match blocking(store.clone(), |s| s.free_bytes().map_err(StoreError::Io)).await {
            Ok(free) => free,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read free space; announcing 0");
                0
            }
        };
        match bus.publish_heartbeat(&Heartbeat { addr: config.advertise.clone(), free }).await {
            Ok(()) if failing => {
                tracing::info!("heartbeats flow again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(error = %e, "heartbeat not sent; will keep trying");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

async fn answer_locates(
    bus: Bus,
    mut requests: mpsc::Receiver<crate::bus::IncomingLocate>,
    store: ShardStore,
    addr: String,
    shutdown: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = requests.recv() => match r { Some(r) => r, None => return },
        };
        let hash = request.request.hash;
        let shards = match blocking(store.clone(), move |s| s.shards_of(&hash)).await {
            Ok(shards) => shards,
            Err(e) => {
                tracing::warn!(error = %e, %hash, "locate: cannot list shards; answering none");
                Vec::new()
            }
        };
        if let Err(e) = bus.reply(&request, &LocateReply { addr: addr.clone(), shards }).await {
            tracing::warn!(error = %e, "locate reply not sent");
        }
    }
}

/// Removes stale temp shards (older than `ttl`) and old `garbage/` entries (older
/// than `garbage_ttl`), every quarter of `ttl`.
async fn clean_temps(store: ShardStore, ttl: Duration, garbage_ttl: Duration, shutdown: CancellationToken) {
    let period = (ttl / 4).max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        match blocking(store.clone(), move |s| s.clean_stale_temps(ttl)).await {
            Ok(n) if n > 0 => tracing::info!(removed = n, "removed stale temp shards"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "temp cleaning failed"),
        }
        match blocking(store.clone(), move |s| s.clean_garbage(garbage_ttl)).await {
            Ok(n) if n > 0 => tracing::info!(removed = n, "removed old garbage entries"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "garbage cleaning failed"),
        }
    }
}

fn reason(status: StatusCode, text: impl ToString) -> Response {
    (status, text.to_string()).into_response()
}

fn store_error(e: StoreError) -> Response {
    let status = match &e {
        StoreError::NoSuchTemp(_) | StoreError::NoSuchShard { .. } => StatusCode::NOT_FOUND,
        StoreError::TempExists(_)
        | StoreError::LengthMismatch { .. }
        | StoreError::PolicyMismatch { .. }
        | StoreError::IdentityMismatch { .. } => StatusCode::CONFLICT,
        StoreError::Volume { source: volume::VolumeError::Collision { .. }, .. } => StatusCode::CONFLICT,
        StoreError::Volume { source: volume::VolumeError::ShardIndex(_), .. } => StatusCode::BAD_REQUEST,
        StoreError::Corrupt { .. } | StoreError::Volume { .. } | StoreError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(error = %e, "storage error");
    }
    reason(status, e)
}

/// A request the data server refuses, with the reason (400).
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        reason(StatusCode::BAD_REQUEST, self.0)
    }
}

fn parse_id(id: &str) -> Result<Uuid, BadRequest> {
    Uuid::parse_str(id).map_err(|_| BadRequest(format!("temp id must be a UUID: {id:?}")))
}

/// The answer to a shard written (and fsynced): its length, in a header and as JSON.
fn written(len: u64) -> Response {
    (StatusCode::OK, [(LENGTH_HEADER, len.to_string())], axum::Json(Written { len })).into_response()
}

/// A chunk for the blocking temp writer, or the order to give up.
type TempChunk = Result<Bytes, ()>;

async fn post_temp(
    State(state): State<Arc<DataState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (id, policy) = match parse_id(&id).and_then(|id| Ok((id, optional_header::<Policy>(&headers, POLICY_HEADER)?)))
    {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    match receive(&state.store, id, policy, body, None).await {
        Ok(len) => written(len),
        Err(r) => r,
    }
}

/// `PUT /objects/<hash>.<shard>`: a whole shard in one request — written to a temp
/// file, fsynced and committed like the temp protocol does in three. For shards the
/// API server has whole in memory (small objects), whose hash it already knows.
async fn put_shard(
    State(state): State<Arc<DataState>>,
    Path(file): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some((hash, shard)) = parse_shard_name(&file) else {
        return reason(StatusCode::BAD_REQUEST, format!("expected <sha256-hex>.<shard>, got {file:?}"));
    };
    let policy = match optional_header::<Policy>(&headers, POLICY_HEADER) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let id = Uuid::new_v4();
    // From the header, not the body's size hint: the body-timeout layer's wrapper
    // does not pass the hint on, which sent every shard down the streaming path.
    let known_len = match optional_header::<u64>(&headers, header::CONTENT_LENGTH.as_str()) {
        Ok(len) => len.or(body.size_hint().exact()),
        Err(r) => return r.into_response(),
    };
    let _buffer_permit = match known_len.filter(|&n| n <= SMALL_SHARD) {
        Some(n) => match state.buffered.clone().acquire_many_owned(n.div_ceil(1024).max(1) as u32).await {
            Ok(permit) => Some(permit),
            Err(_) => return reason(StatusCode::SERVICE_UNAVAILABLE, "data server shutting down"),
        },
        None => None,
    };
    if known_len.is_some_and(|n| state.store.is_small(n)) {
        // A small shard: a record in the active volume, group-committed.
        let stored = match axum::body::to_bytes(body, SMALL_SHARD as usize).await {
            Ok(bytes) => state.store.put_small(hash, shard, policy, bytes).await.map_err(store_error),
            Err(e) => Err(reason(StatusCode::BAD_REQUEST, format!("upload broken off: {e}"))),
        };
        return match stored {
            Ok(_) => {
                state.shards_written.increment(1);
                written(known_len.unwrap_or_default())
            }
            Err(r) => r,
        };
    }
    let small = known_len.is_some_and(|n| n <= SMALL_SHARD);
    let stored = if small {
        // Small and of known length: gather it here and write, fsync and commit in
        // one blocking job, without a channel hop per chunk.
        match axum::body::to_bytes(body, SMALL_SHARD as usize).await {
            Ok(bytes) => blocking(state.store.clone(), move |s| {
                let written = (|| {
                    let mut w = s.create_temp(id, policy)?;
                    w.write(&bytes)?;
                    let len = w.finish()?;
                    s.commit(id, &hash, shard, len, policy)?;
                    Ok(len)
                })();
                if written.is_err() {
                    // The id is fresh, so whatever temp file exists under it is ours.
                    let _ = s.abort(id);
                }
                written
            })
            .await
            .map_err(store_error),
            Err(e) => Err(reason(StatusCode::BAD_REQUEST, format!("upload broken off: {e}"))),
        }
    } else {
        receive(&state.store, id, policy, body, Some((hash, shard))).await
    };
    match stored {
        Ok(len) => {
            state.shards_written.increment(1);
            written(len)
        }
        Err(r) => r,
    }
}

/// Shards up to this size, sent with a known length, are gathered in memory before
/// they are written (`PUT /objects/<hash>.<shard>`).
const SMALL_SHARD: u64 = 1024 * 1024;

/// Streams `body` into temp shard `id` (cut under `policy`) and fsyncs it, then, with `commit_as`,
/// commits it under that name in the same blocking job. Returns the shard's length;
/// on any failure (a broken body, a disk error) the temp file is gone.
async fn receive(
    store: &ShardStore,
    id: Uuid,
    policy: Option<Policy>,
    body: Body,
    commit_as: Option<(ContentHash, ShardIndex)>,
) -> Result<u64, Response> {
    let (tx, mut rx) = mpsc::channel::<TempChunk>(4);
    // Spawned now (not lazily on first poll, as `blocking` would be): it must drain
    // the channel while the body is still arriving.
    let writer_store = store.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<Option<u64>, StoreError> {
        let mut w = writer_store.create_temp(id, policy)?;
        while let Some(chunk) = rx.blocking_recv() {
            match chunk {
                Ok(bytes) => w.write(&bytes)?,
                Err(()) => return Ok(None),
            }
        }
        let len = w.finish()?;
        if let Some((hash, shard)) = commit_as {
            writer_store.commit(id, &hash, shard, len, policy)?;
        }
        Ok(Some(len))
    });
    let writer = async move { writer.await.unwrap_or_else(|e| Err(StoreError::Io(std::io::Error::other(e)))) };
    let mut body = body.into_data_stream();
    let mut client_failed = None;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => Ok(c),
            Err(e) => {
                client_failed = Some(e);
                Err(())
            }
        };
        let stop = chunk.is_err();
        // The writer stopped (disk error): its result says why.
        if tx.send(chunk).await.is_err() || stop {
            break;
        }
    }
    drop(tx);
    match writer.await {
        Ok(Some(len)) if client_failed.is_none() => Ok(len),
        Ok(_) => {
            let _ = blocking(store.clone(), move |s| s.abort(id)).await;
            let why = client_failed.map(|e| e.to_string()).unwrap_or_default();
            tracing::info!(%id, %why, "upload broken off; temp shard removed");
            Err(reason(StatusCode::BAD_REQUEST, format!("upload broken off: {why}")))
        }
        Err(e @ StoreError::TempExists(_)) => Err(store_error(e)),
        Err(e) => {
            let _ = blocking(store.clone(), move |s| s.abort(id)).await;
            Err(store_error(e))
        }
    }
}

fn header_value<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Result<T, BadRequest> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| BadRequest(format!("missing or malformed {name} header")))
}

/// An optional header: `None` when absent, 400 when present and malformed.
fn optional_header<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Result<Option<T>, BadRequest> {
    let Some(value) = headers.get(name) else { return Ok(None) };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| BadRequest(format!("malformed {name} header")))
}

async fn commit_temp(State(state): State<Arc<DataState>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let parsed = (|| {
        Ok::<_, BadRequest>((
            parse_id(&id)?,
            header_value::<ContentHash>(&headers, HASH_HEADER)?,
            header_value::<ShardIndex>(&headers, SHARD_HEADER)?,
            header_value::<u64>(&headers, LENGTH_HEADER)?,
            optional_header::<Policy>(&headers, POLICY_HEADER)?,
        ))
    })();
    let (id, hash, shard, len, policy) = match parsed {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    match blocking(state.store.clone(), move |s| s.commit(id, &hash, shard, len, policy)).await {
        Ok(_) => {
            state.shards_written.increment(1);
            StatusCode::OK.into_response()
        }
        Err(e) => store_error(e),
    }
}

async fn abort_temp(State(state): State<Arc<DataState>>, Path(id): Path<String>) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    match blocking(state.store.clone(), move |s| s.abort(id)).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => store_error(e),
    }
}

/// `DELETE /objects/<hash>.<shard>`: moves the shard to `garbage/` (an API server
/// found that it holds the wrong content), or with `?purge=1` deletes it for good
/// (the garbage collector). 204, or 404 when it is not here.
async fn delete_shard(
    State(state): State<Arc<DataState>>,
    Path(file): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> Response {
    let Some((hash, shard)) = parse_shard_name(&file) else {
        return reason(StatusCode::BAD_REQUEST, format!("expected <sha256-hex>.<shard>, got {file:?}"));
    };
    let purge = match query.purge.as_deref() {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") | Some("") => true,
        Some(other) => return reason(StatusCode::BAD_REQUEST, format!("purge must be 1 or 0, got {other:?}")),
    };
    if purge {
        return match blocking(state.store.clone(), move |s| s.purge(&hash, shard)).await {
            Ok(()) => {
                purged_metric(&state, 1);
                StatusCode::NO_CONTENT.into_response()
            }
            Err(e) => store_error(e),
        };
    }
    match blocking(state.store.clone(), move |s| s.quarantine(&hash, shard)).await {
        Ok(()) => {
            tracing::warn!(%hash, shard, "shard moved to garbage on request");
            state.findings.push(hash, shard, crate::clock::now_ms());
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => store_error(e),
    }
}

fn purged_metric(state: &DataState, n: u64) {
    state.scope.counter(telemetry::SHARDS_PURGED).increment(n);
}

/// `POST /purge`: purges every shard named (see the module doc), in one blocking
/// job; `{"purged":N,"missing":M}`.
async fn purge_many(State(state): State<Arc<DataState>>, body: Bytes) -> Response {
    let body: PurgeRequest = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return reason(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"shards\":[{{\"hash\":..,\"shard\":N}}]}}: {e}"),
            )
        }
    };
    if body.shards.len() > MAX_PAGE {
        return reason(
            StatusCode::BAD_REQUEST,
            format!("at most {MAX_PAGE} shards per request, got {}", body.shards.len()),
        );
    }
    let done = blocking(state.store.clone(), move |s| {
        let (mut purged, mut missing) = (0u64, 0u64);
        for item in body.shards {
            match s.purge(&item.hash, item.shard) {
                Ok(()) => purged += 1,
                Err(StoreError::NoSuchShard { .. }) => missing += 1,
                Err(e) => return Err(e),
            }
        }
        Ok((purged, missing))
    })
    .await;
    match done {
        Ok((purged, missing)) => {
            purged_metric(&state, purged);
            axum::Json(Purged { purged, missing }).into_response()
        }
        Err(e) => store_error(e),
    }
}

/// `GET /shards`: a page of the shards held here (see the module doc).
async fn list_shards(State(state): State<Arc<DataState>>, Query(query): Query<ListQuery>) -> Response {
    let after = match query.after.as_deref() {
        None | Some("") => None,
        Some(a) => match parse_shard_name(a) {
            Some(a) => Some(a),
            None => return reason(StatusCode::BAD_REQUEST, format!("after must be <sha256-hex>.<shard>, got {a:?}")),
        },
    };
    let limit = query.limit.unwrap_or(MAX_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return reason(StatusCode::BAD_REQUEST, format!("limit must be 1..={MAX_PAGE}"));
    }
    match blocking(state.store.clone(), move |s| s.list(after, limit)).await {
        Ok((shards, next)) => {
            let shards = shards
                .into_iter()
                .map(|s| HeldShard {
                    hash: s.hash,
                    shard: s.shard,
                    len: s.len,
                    policy: s.policy.map(|p| p.to_string()),
                    age_s: s.age_s,
                })
                .collect();
            let next = next.map(|(h, s)| format!("{h}.{s}"));
            axum::Json(ShardPage { shards, next }).into_response()
        }
        Err(e) => store_error(e),
    }
}

/// The scrubber's status: the pass's state and the worker's.
fn scrub_json(state: &DataState) -> ScrubStatus {
    let (worker, pass) = (state.scrub.status(), state.scrub_shared.state());
    ScrubStatus {
        state: worker.state.as_str().to_string(),
        pass: pass.pass,
        running: pass.running,
        pass_started_ms: pass.pass_started_ms,
        shards_done: pass.shards_done,
        bytes_done: pass.bytes_done,
        shards_total: pass.shards_total.max(pass.shards_done),
        corrupt_found: pass.corrupt_found,
        last_pass_finished_ms: pass.last_pass_finished_ms,
        last_error: worker.last_error.map(|(_, e)| e),
        cursor: pass.cursor,
        rate: state.scrub_rate,
        interval_s: state.scrub_interval.as_secs(),
    }
}

/// `GET /scrub`: the scrubber's status.
async fn scrub_status(State(state): State<Arc<DataState>>) -> Response {
    axum::Json(scrub_json(&state)).into_response()
}

/// `POST /scrub`: starts a pass now unless one runs.
async fn scrub_start(State(state): State<Arc<DataState>>) -> Response {
    state.scrub_shared.request_pass();
    state.scrub.trigger();
    (StatusCode::ACCEPTED, axum::Json(scrub_json(&state))).into_response()
}

/// `POST /scrub/pause`.
async fn scrub_pause(State(state): State<Arc<DataState>>) -> Response {
    state.scrub.pause();
    (StatusCode::ACCEPTED, axum::Json(scrub_json(&state))).into_response()
}

/// `POST /scrub/resume`.
async fn scrub_resume(State(state): State<Arc<DataState>>) -> Response {
    state.scrub.resume();
    (StatusCode::ACCEPTED, axum::Json(scrub_json(&state))).into_response()
}

/// `GET /scrub/findings?after=SEQ`.
async fn scrub_findings(State(state): State<Arc<DataState>>, Query(query): Query<FindingsQuery>) -> Response {
    let findings = state.findings.after(query.after.unwrap_or(0));
    axum::Json(FindingsPage { epoch: state.findings.epoch().to_string(), findings }).into_response()
}

/// Parses `<hash>.<shard>`.
fn parse_shard_name(file: &str) -> Option<(ContentHash, ShardIndex)> {
    let (hash, shard) = file.split_once('.')?;
    Some((hash.parse().ok()?, shard.parse().ok()?))
}

/// Blocks of verified shard bytes in flight between the disk reader and the socket.
const READ_AHEAD: usize = 4;

async fn get_shard(
    State(state): State<Arc<DataState>>,
    Path(file): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Some((hash, shard)) = parse_shard_name(&file) else {
        return reason(StatusCode::BAD_REQUEST, format!("expected <sha256-hex>.<shard>, got {file:?}"));
    };
    let expected = optional_header::<u64>(&headers, LENGTH_HEADER)
        .and_then(|len| Ok((len, optional_header::<Policy>(&headers, POLICY_HEADER)?)));
    let (expected_len, expected_policy) = match expected {
        Ok(e) => e,
        Err(r) => return r.into_response(),
    };
    let reader = match blocking(state.store.clone(), move |s| s.open_shard(&hash, shard)).await {
        Ok(r) => r,
        Err(e) => {
            if e.is_corrupt() && blocking(state.store.clone(), move |s| s.quarantine(&hash, shard)).await.is_ok() {
                state.findings.push(hash, shard, crate::clock::now_ms());
            }
            return store_error(e);
        }
    };
    // Not quarantined on a mismatch: the reader's record may be the stale side.
    if let Err(e) = store::check_identity(&hash, shard, &reader, expected_len, expected_policy) {
        return store_error(e);
    }
    let total = reader.data_len();
    let (status, range) = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => (StatusCode::OK, range::ByteRange { start: 0, end: total }),
        Some(h) => match range::parse(h, total) {
            RangeRequest::Full => (StatusCode::OK, range::ByteRange { start: 0, end: total }),
            RangeRequest::Partial(r) => (StatusCode::PARTIAL_CONTENT, r),
            RangeRequest::Unsatisfiable => {
                return (StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{total}"))])
                    .into_response()
            }
        },
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, range.len())
        .header(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))
        .header(LENGTH_HEADER, total);
    if let Some(policy) = reader.policy() {
        builder = builder.header(POLICY_HEADER, policy.to_string());
    }
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(header::CONTENT_RANGE, range.content_range(total));
    }
    if method == Method::HEAD || range.is_empty() {
        return builder.body(Body::empty()).unwrap_or_else(|e| reason(StatusCode::INTERNAL_SERVER_ERROR, e));
    }
    let reader = match reader {
        // Read whole and verified already.
        StoredShard::Record(record) => {
            let body = record.data.slice(range.start as usize..range.end as usize);
            return builder.body(Body::from(body)).unwrap_or_else(|e| reason(StatusCode::INTERNAL_SERVER_ERROR, e));
        }
        StoredShard::File(reader) => reader,
    };

    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(READ_AHEAD);
    let store = state.store.clone();
    let findings = state.findings.clone();
    tokio::task::spawn_blocking(move || {
        let mut reader = reader;
        let result =
            reader.read_range(range.start, range.end, |block| tx.blocking_send(Ok(Bytes::from(block))).is_ok());
        if let Err(source) = result {
            // Never serve the bad block: end the stream with an error, which aborts the
            // response, and move the shard aside so it is neither served nor announced.
            tracing::error!(%hash, shard, error = %source, "corrupt shard detected while serving");
            if store.quarantine(&hash, shard).is_ok() {
                findings.push(hash, shard, crate::clock::now_ms());
            }
            let _ = tx.blocking_send(Err(std::io::Error::other(format!("shard {hash}.{shard}: {source}"))));
        }
    });
    // Look at the first block before committing to a 200, so that a shard whose
    // start is corrupt gets a proper error status.
    let first = match rx.recv().await {
        Some(Ok(b)) => b,
        Some(Err(e)) => return reason(StatusCode::INTERNAL_SERVER_ERROR, e),
        None => return reason(StatusCode::INTERNAL_SERVER_ERROR, "shard reader stopped"),
    };
    let rest = tokio_stream::wrappers::ReceiverStream::new(rx);
    let stream = futures_util::stream::once(async move { Ok(first) }).chain(rest);
    builder.body(Body::from_stream(stream)).unwrap_or_else(|e| reason(StatusCode::INTERNAL_SERVER_ERROR, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_are_validated() {
        let h = ContentHash::of(b"x");
        assert_eq!(parse_shard_name(&format!("{h}.3")), Some((h, 3)));
        assert_eq!(parse_shard_name(&format!("{h}")), None);
        assert_eq!(parse_shard_name(&format!("{h}.-1")), None);
        assert_eq!(parse_shard_name("../../etc/passwd.0"), None);
    }

    /// A data server on an ephemeral loopback port with an in-process bus.
    struct TestServer {
        base: String,
        http: reqwest::Client,
        stop: CancellationToken,
        _dir: tempfile::TempDir,
    }

    async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let broker = crate::bus::memory::MemoryBroker::new();
        let bus = Bus::new(Arc::new(broker.connect()), stop.clone()).await.unwrap();
        let config = DataConfig {
            advertise: addr.to_string(),
            root: dir.path().to_path_buf(),
            heartbeat_interval: Duration::from_secs(60),
            temp_ttl: Duration::from_secs(3600),
            http: crate::server::HttpTimeouts::default(),
            store: StoreConfig::default(),
            compact_interval: Duration::from_secs(3600),
            scrub_rate: 0,
            scrub_interval: Duration::ZERO,
            garbage_ttl: DEFAULT_GARBAGE_TTL,
            cluster_secret: None,
        };
        tokio::spawn(serve(listener, config, bus, stop.clone()));
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
        TestServer { base: format!("http://{addr}"), http, stop, _dir: dir }
    }

    #[tokio::test]
    async fn policy_and_length_travel_with_a_shard() {
        let t = start().await;
        let hash = ContentHash::of(b"http");
        let url = format!("{}/objects/{hash}.2", t.base);
        let r = t.http.put(&url).header(POLICY_HEADER, "4+2").body("hello").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = t.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[POLICY_HEADER], "4+2");
        assert_eq!(r.headers()[LENGTH_HEADER], "5");
        assert_eq!(r.bytes().await.unwrap(), "hello");
        let r = t.http.head(&url).header(POLICY_HEADER, "4+2").header(LENGTH_HEADER, "5").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        // Another expected length or policy: 409 naming both, and the shard stays.
        let r = t.http.get(&url).header(LENGTH_HEADER, "6").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let why = r.text().await.unwrap();
        assert!(why.contains("5 bytes") && why.contains("6 bytes"), "{why}");
        let r = t.http.get(&url).header(POLICY_HEADER, "1+2").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let why = r.text().await.unwrap();
        assert!(why.contains("4+2") && why.contains("1+2"), "{why}");
        let r = t.http.get(&url).header(POLICY_HEADER, "4+").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(t.http.get(&url).send().await.unwrap().status(), StatusCode::OK);
        t.stop.cancel();
    }

    #[tokio::test]
    async fn a_commit_announcing_another_policy_is_a_conflict() {
        let t = start().await;
        let hash = ContentHash::of(b"temp");
        let temp = |id: Uuid| format!("{}/temp/{id}", t.base);
        let commit = |id: Uuid, policy: Option<&'static str>| {
            let mut req = t
                .http
                .put(temp(id))
                .header(HASH_HEADER, hash.to_hex())
                .header(SHARD_HEADER, "0")
                .header(LENGTH_HEADER, "3");
            if let Some(p) = policy {
                req = req.header(POLICY_HEADER, p);
            }
            req.send()
        };
        let id = Uuid::new_v4();
        let r = t.http.post(temp(id)).header(POLICY_HEADER, "1+2").body("abc").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(commit(id, Some("4+2")).await.unwrap().status(), StatusCode::CONFLICT);
        assert_eq!(commit(id, Some("1+2")).await.unwrap().status(), StatusCode::NOT_FOUND, "the temp was removed");
        let id = Uuid::new_v4();
        t.http.post(temp(id)).header(POLICY_HEADER, "1+2").body("abc").send().await.unwrap();
        assert_eq!(commit(id, Some("1+2")).await.unwrap().status(), StatusCode::OK);
        let r = t.http.get(format!("{}/objects/{hash}.0", t.base)).send().await.unwrap();
        assert_eq!(r.headers()[POLICY_HEADER], "1+2");
        // Old clients say nothing and still commit.
        let id = Uuid::new_v4();
        t.http.post(temp(id)).body("abc").send().await.unwrap();
        assert_eq!(commit(id, None).await.unwrap().status(), StatusCode::OK);
        t.stop.cancel();
    }

    #[tokio::test]
    async fn delete_moves_a_shard_aside_once() {
        let t = start().await;
        let hash = ContentHash::of(b"del");
        let url = format!("{}/objects/{hash}.0", t.base);
        t.http.put(&url).body("x").send().await.unwrap().error_for_status().unwrap();
        assert_eq!(t.http.delete(&url).send().await.unwrap().status(), StatusCode::NO_CONTENT);
        assert_eq!(t.http.get(&url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
        assert_eq!(t.http.delete(&url).send().await.unwrap().status(), StatusCode::NOT_FOUND);
        let bad = format!("{}/objects/nothex.0", t.base);
        assert_eq!(t.http.delete(&bad).send().await.unwrap().status(), StatusCode::BAD_REQUEST);
        assert_eq!(std::fs::read_dir(t._dir.path().join("garbage")).unwrap().count(), 1);
        t.stop.cancel();
    }
}
