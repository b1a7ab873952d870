//! The API tier's lifecycle workers (the book's maintenance chapter): version
//! retention ([`retention`]), garbage collection of content and orphan shards
//! ([`gc`]), and healing ([`heal`]: rebuilding what data servers' scrubbers set
//! aside, and re-protecting every content that had a shard on a server gone for
//! good). Each is a [`Worker`](crate::worker::Worker) of the shared shape, started
//! by [`start`] on the API server's task tracker.
//!
//! They sit above [`crate::object`] (they repair and read through the object
//! service) and talk to the metadata store and the data servers' maintenance
//! routes; HTTP handlers reach them only through [`crate::worker::Workers`] and
//! [`Maintenance`]. The garbage collector and the healer each hold a lease in the
//! metadata store while they work, so with several API servers on one store
//! exactly one of each runs at a time; retention is safe to run everywhere (each
//! prune is one atomic step on one name) and runs on every API server with its own
//! `--keep-versions`. The expiry of resumable uploads ([`uploads`]) is safe
//! everywhere too (each batch is one transaction).

pub mod gc;
pub mod heal;
pub mod retention;
pub mod uploads;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::object::ObjectService;
use crate::worker::{WorkerHandle, Workers};

/// How the lifecycle workers run (the API server's flags).
#[derive(Clone, Debug)]
pub struct MaintenanceConfig {
    /// Keep the newest N versions of each name (tombstones count); `None`: all.
    pub keep_versions: Option<u64>,
    /// A name whose newest version is a tombstone older than this disappears
    /// entirely (every version); `None`: never.
    pub tombstone_ttl: Option<Duration>,
    /// Pause between two retention passes over every name.
    pub retention_interval: Duration,
    /// Pause between two garbage-collection passes.
    pub gc_interval: Duration,
    /// How long content no version points at stays doomed (and revivable by a PUT
    /// of the same bytes) before its shards are deleted.
    pub gc_grace: Duration,
    /// Shards that no content row knows are deleted once they are this old.
    pub orphan_age: Duration,
    /// Pause between two orphan sweeps (a listing of every data server).
    pub orphan_interval: Duration,
    /// A data server silent for this long has everything it held rebuilt
    /// elsewhere.
    pub reprotect_after: Duration,
    /// Bytes per second the healer may read to rebuild content (0: unlimited).
    pub reprotect_rate: u64,
    /// How long a lease lasts without renewal (a collector that dies is replaced
    /// after this).
    pub lease_ttl: Duration,
    /// This API server's name in leases and status: unique per process (its
    /// address and a random suffix), or two servers would hold one lease together.
    pub holder: String,
    /// Data servers' heartbeat expiry: the healer waits this long (twice) after
    /// start before judging any server silent, so it has heard every live one.
    pub heartbeat_expiry: Duration,
    /// An S3 multipart upload not completed this long after its creation is
    /// removed with its parts (by the uploads worker).
    pub multipart_expiry: Duration,
}

impl MaintenanceConfig {
    /// The defaults (README, "Lifecycle"), for the API server called `holder`.
    pub fn new(holder: String) -> Self {
        MaintenanceConfig {
            keep_versions: None,
            tombstone_ttl: Some(Duration::from_secs(30 * 24 * 3600)),
            retention_interval: Duration::from_secs(3600),
            gc_interval: Duration::from_secs(600),
            gc_grace: Duration::from_secs(3600),
            orphan_age: Duration::from_secs(24 * 3600),
            orphan_interval: Duration::from_secs(6 * 3600),
            multipart_expiry: Duration::from_secs(7 * 24 * 3600),
            reprotect_after: Duration::from_secs(30 * 60),
            reprotect_rate: 64 << 20,
            lease_ttl: Duration::from_secs(30),
            holder,
            heartbeat_expiry: Duration::from_secs(10),
        }
    }
}

/// The running lifecycle workers of one API server, for the admin routes.
#[derive(Clone)]
pub struct Maintenance {
    /// Every worker, for status and pause/resume.
    pub workers: Workers,
    /// Set to have the next GC pass sweep orphans whatever the orphan interval.
    orphans_now: Arc<AtomicBool>,
    gc: WorkerHandle,
    heal: WorkerHandle,
    uploads: WorkerHandle,
    /// The settings they run with.
    pub config: MaintenanceConfig,
}

impl Maintenance {
    /// Runs a full garbage-collection pass (orphans included) now.
    pub fn collect_now(&self) {
        self.orphans_now.store(true, Ordering::SeqCst);
        self.gc.trigger();
    }

    /// Has the healer look at scrub findings and silent servers now.
    pub fn heal_now(&self) {
        self.heal.trigger();
    }

    /// Removes expired resumable uploads now.
    pub fn expire_uploads_now(&self) {
        self.uploads.trigger();
    }
}

/// Starts the lifecycle workers of the API server `svc` on `workers`.
pub fn start(svc: &ObjectService, workers: Workers, config: MaintenanceConfig) -> Maintenance {
    workers.spawn(retention::Retention::new(svc.clone(), config.clone()));
    let orphans_now = Arc::new(AtomicBool::new(false));
    let gc = workers.spawn(gc::Collector::new(svc.clone(), config.clone(), orphans_now.clone()));
    let heal = workers.spawn(heal::Healer::new(svc.clone(), config.clone()));
    let uploads = workers.spawn(uploads::UploadExpiry::new(svc.clone(), config.multipart_expiry));
    Maintenance { workers, orphans_now, gc, heal, uploads, config }
}
