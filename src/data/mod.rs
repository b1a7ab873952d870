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
//! | `GET /workers` | every background worker's status (`scrub`, `temp-cleaner`, `compactor`; see [`wire::WorkerReport`]) |
//! | `POST /workers/<name>` | run the worker's next round now: 202 with its status (404: no such worker) |
//! | `POST /workers/<name>/pause`, `POST /workers/<name>/resume` | pause or resume it: 202 with its status |
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
//! Disk work runs on blocking threads ([`store`], [`shardfile`], [`volume`]); the
//! rest is the async edge, in rooms: this file starts a server (config, state, the
//! router, the cluster-secret gate, shutdown); `handlers` serves shards (temp +
//! commit, reads, deletes, purges, the listing); `admin` the operator routes
//! (stats, metrics, compaction, the scrubber's); `announce` heartbeats and locate
//! answers on the bus; `upkeep` the background cleaning and compaction; [`scrub`]
//! the scrubber. [`wire`] is the protocol both ends share, and [`client`] the API
//! servers' side of it.

mod admin;
mod announce;
pub mod client;
#[cfg(test)]
mod crash;
pub mod fs;
mod handlers;
#[cfg(test)]
mod lifecycle_tests;
pub mod scrub;
pub mod shardfile;
pub mod store;
mod upkeep;
pub mod volume;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::Bus;
use crate::secret::{ClusterSecret, Refusal, Verifier};
use crate::server::{self, HttpTimeouts};
use crate::telemetry::{self, HttpMetrics, Role, Scope};
use crate::worker::{WorkerHandle, Workers};
use admin::{
    compact, metrics, scrub_findings, scrub_pause, scrub_resume, scrub_start, scrub_status, stats, worker_pause,
    worker_resume, worker_statuses, worker_trigger,
};
use announce::{answer_locates, heartbeat};
use handlers::{abort_temp, commit_temp, delete_shard, get_shard, list_shards, post_temp, purge_many, put_shard};
use scrub::{Findings, ScrubShared, Scrubber};
use store::{ShardStore, StoreConfig, StoreError};
use upkeep::{Compactor, TempCleaner};

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
    /// Every background worker (the scrubber, the temp cleaner, the compactor).
    workers: Workers,
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
/// locate answers and the background workers. Returns once every task has stopped.
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
    workers.spawn(TempCleaner::new(store.clone(), config.temp_ttl, config.garbage_ttl));
    if store.volumes().is_some() {
        workers.spawn(Compactor::new(store.clone(), config.compact_interval));
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
        workers,
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
        .route("/scrub/findings", get(scrub_findings))
        .route("/workers", get(worker_statuses))
        .route("/workers/{name}", post(worker_trigger))
        .route("/workers/{name}/pause", post(worker_pause))
        .route("/workers/{name}/resume", post(worker_resume));
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

/// Runs `f` on the blocking pool; a panicked or cancelled job becomes an I/O error.
async fn blocking<T: Send + 'static>(
    store: ShardStore,
    f: impl FnOnce(&ShardStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .unwrap_or_else(|e| Err(StoreError::Io(std::io::Error::other(e))))
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::handlers::parse_shard_name;
    use super::wire::{HASH_HEADER, LENGTH_HEADER, POLICY_HEADER, SHARD_HEADER};
    use super::*;
    use crate::content::ContentHash;

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
