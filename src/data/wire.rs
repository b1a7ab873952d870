//! The data server's protocol, one definition for both ends: the headers a shard
//! travels with, the page limits, and the JSON of every request body, query and
//! answer. The handlers in [`crate::data`] build their answers from these types and
//! [`crate::data::client`] parses into the same ones, so the two sides cannot drift.
//! A leaf of the data room: it knows the content names ([`crate::content`]) and
//! nothing else; the routes themselves are listed in the [`crate::data`] module doc.
//!
//! Field names are the protocol (operators' `cairn admin status` and the tests read
//! them); the unit tests below pin every one.

use serde::{Deserialize, Serialize};

use crate::content::{ContentHash, ShardIndex};

/// Header naming the content hash a temp shard is committed under.
pub const HASH_HEADER: &str = "x-cairn-hash";
/// Header naming the shard index a temp shard is committed as.
pub const SHARD_HEADER: &str = "x-cairn-shard";
/// Header carrying a shard's expected (commit, read request) or actual (read
/// answer) data length.
pub const LENGTH_HEADER: &str = "x-cairn-length";
/// Header carrying a shard's redundancy policy as `K+M` (see the [`crate::data`]
/// module doc).
pub const POLICY_HEADER: &str = "x-cairn-policy";

/// Most shards one `POST /purge` or `GET /shards` names.
pub const MAX_PAGE: usize = 1000;

/// The answer to a shard written and fsynced (`POST /temp/<uuid>`,
/// `PUT /objects/<hash>.<shard>`), besides its [`LENGTH_HEADER`]: `{"len":N}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Written {
    /// The bytes written.
    pub len: u64,
}

/// One shard by name, as `POST /purge` lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardName {
    /// The content.
    pub hash: ContentHash,
    /// The shard index.
    pub shard: ShardIndex,
}

/// The body of `POST /purge`: `{"shards":[{"hash":"<hex>","shard":N},…]}`, at
/// most [`MAX_PAGE`] of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeRequest {
    /// The shards to delete for good.
    pub shards: Vec<ShardName>,
}

/// The answer to `POST /purge`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    /// Shards deleted.
    pub purged: u64,
    /// Shards named that this server does not hold.
    pub missing: u64,
}

/// The query of `DELETE /objects/<hash>.<shard>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteQuery {
    /// `1` (or `true`, or empty): delete for good instead of moving aside; `0` or
    /// `false`: move aside. Anything else is refused.
    pub purge: Option<String>,
}

/// The query of `GET /shards`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Start after this `<hash>.<shard>` (absent or empty: from the start).
    pub after: Option<String>,
    /// At most this many shards, `1..=`[`MAX_PAGE`] (absent: [`MAX_PAGE`]).
    pub limit: Option<usize>,
}

/// A shard a data server holds, as its `GET /shards` listing says (for the orphan
/// collector).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldShard {
    /// The content.
    pub hash: ContentHash,
    /// The shard index.
    pub shard: ShardIndex,
    /// Its data length.
    pub len: u64,
    /// Its policy as `K+M`, when the shard records one.
    pub policy: Option<String>,
    /// Seconds since it was committed there, never overstated.
    pub age_s: u64,
}

/// One page of a data server's shard listing (`GET /shards`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPage {
    /// The shards, in (hash, shard) order.
    pub shards: Vec<HeldShard>,
    /// Where the next page starts (`<hash>.<shard>`), or `None` at the end.
    pub next: Option<String>,
}

/// The query of `GET /scrub/findings`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingsQuery {
    /// Only findings with a sequence number above this (absent: 0, all of them).
    pub after: Option<u64>,
}

/// A shard the data server moved to `garbage/` because it failed verification (or
/// an API server asked), for API servers to rebuild.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Its place in this epoch's sequence, from 1.
    pub seq: u64,
    /// The content hash.
    pub hash: ContentHash,
    /// The shard index.
    pub shard: ShardIndex,
    /// When it was moved aside, ms since the Unix epoch.
    pub at_ms: i64,
}

/// The answer to `GET /scrub/findings`: the findings after a sequence number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingsPage {
    /// The server's epoch, a UUID new at every process start (its sequence numbers
    /// start over then).
    pub epoch: String,
    /// The findings, oldest first.
    pub findings: Vec<Finding>,
}

/// The scrubber's status: the answer to `GET /scrub`, and (202) to `POST /scrub`,
/// `POST /scrub/pause` and `POST /scrub/resume`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubStatus {
    /// The worker's state (`busy`, `idle`, `paused`, `backoff`, `stopped`).
    pub state: String,
    /// The number of the current (or last) pass; 0 before the first.
    pub pass: u64,
    /// Whether a pass is running.
    pub running: bool,
    /// When the current (or last) pass started, ms since the Unix epoch.
    pub pass_started_ms: Option<i64>,
    /// Shards verified in this pass.
    pub shards_done: u64,
    /// Bytes verified in this pass.
    pub bytes_done: u64,
    /// An estimate of the pass's shards, never below `shards_done`.
    pub shards_total: u64,
    /// Corrupt shards found (and quarantined) in this pass.
    pub corrupt_found: u64,
    /// When the last whole pass finished, ms since the Unix epoch.
    pub last_pass_finished_ms: Option<i64>,
    /// The last failed step's error.
    pub last_error: Option<String>,
    /// The last shard the pass verified, `<hash>.<shard>`.
    pub cursor: Option<String>,
    /// Bytes per second the scrubber reads at most (0: unlimited).
    pub rate: u64,
    /// Seconds from the end of one pass to the start of the next (0: only on
    /// request).
    pub interval_s: u64,
}

/// What one compaction did: an item of the answer to `POST /compact` (a list, one
/// per volume compacted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compacted {
    /// The volume compacted.
    pub volume: u32,
    /// Live records copied out.
    pub moved: u64,
    /// Bytes freed.
    pub freed: u64,
}

/// One volume's figures in [`VolumeStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeFigures {
    /// Its id.
    pub id: u32,
    /// Bytes in its file up to the end of its valid log.
    pub size: u64,
    /// Live shard records in it.
    pub live_records: u64,
    /// Their bytes (headers and padding included).
    pub live_bytes: u64,
    /// Whether it is the one being appended to.
    pub active: bool,
}

/// The volume store's figures in [`StoreStats`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeStats {
    /// Small shards stored.
    pub shards: u64,
    /// Estimated heap bytes of the index.
    pub index_bytes: u64,
    /// Batches made durable (one `fdatasync` each) since the store opened.
    pub syncs: u64,
    /// Ops those batches answered.
    pub synced_ops: u64,
    /// Every volume.
    pub volumes: Vec<VolumeFigures>,
}

/// The answer to `GET /stats`: the volume store's figures, or `{"volumes":null}`
/// from a server that keeps every shard in a file of its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoreStats {
    /// The server has a volume store.
    Volumes(VolumeStats),
    /// The server has none.
    NoVolumes {
        /// Always `null`.
        volumes: (),
    },
}

/// A background worker's status: an item of the answer to `GET /workers`, and
/// (202) the answer to `POST /workers/<name>` and its `/pause` and `/resume`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// The worker's name (`scrub`, `temp-cleaner`, `compactor`).
    pub name: String,
    /// Its state (`busy`, `idle`, `paused`, `backoff`, `stopped`).
    pub state: String,
    /// Items done in the current pass and the pass's total when known.
    pub progress: Option<WorkerProgress>,
    /// Items waiting, when the worker has a queue.
    pub queued: u64,
    /// Steps run since start.
    pub steps: u64,
    /// Steps that failed since start.
    pub errors: u64,
    /// The last error, with when it happened (ms since the Unix epoch).
    pub last_error: Option<(i64, String)>,
    /// Worker-specific figures (counts of what it did).
    pub info: serde_json::Value,
}

/// What an operator asks of a data server's worker: the three `POST /workers/<name>…`
/// routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerAction {
    /// `POST /workers/<name>`: run the next round now.
    Trigger,
    /// `POST /workers/<name>/pause`.
    Pause,
    /// `POST /workers/<name>/resume`.
    Resume,
}

impl WorkerAction {
    /// The action an operator names (`trigger`, `pause`, `resume`), if it is one.
    pub fn parse(name: &str) -> Option<WorkerAction> {
        match name {
            "trigger" => Some(WorkerAction::Trigger),
            "pause" => Some(WorkerAction::Pause),
            "resume" => Some(WorkerAction::Resume),
            _ => None,
        }
    }

    /// The path of this action on worker `name`.
    pub fn path(self, name: &str) -> String {
        match self {
            WorkerAction::Trigger => format!("/workers/{name}"),
            WorkerAction::Pause => format!("/workers/{name}/pause"),
            WorkerAction::Resume => format!("/workers/{name}/resume"),
        }
    }
}

/// Progress of a worker's pass, in [`WorkerReport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerProgress {
    /// Done so far in this pass.
    pub done: u64,
    /// The pass's size, when known.
    pub total: Option<u64>,
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// `value` serializes to exactly `expected` and parses back to itself.
    fn pinned<T>(value: T, expected: Value)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let wire = serde_json::to_value(&value).expect("serializes");
        assert_eq!(wire, expected, "field names on the wire");
        let back: T = serde_json::from_value(wire).expect("parses back");
        assert_eq!(back, value);
    }

    #[test]
    fn a_written_answer_is_its_length() {
        pinned(Written { len: 5 }, json!({ "len": 5 }));
        assert_eq!(serde_json::to_string(&Written { len: 5 }).unwrap(), r#"{"len":5}"#);
    }

    #[test]
    fn a_purge_request_and_its_answer_keep_their_names() {
        let hash = ContentHash::of(b"p");
        pinned(
            PurgeRequest { shards: vec![ShardName { hash, shard: 3 }] },
            json!({ "shards": [{ "hash": hash.to_hex(), "shard": 3 }] }),
        );
        pinned(Purged { purged: 2, missing: 1 }, json!({ "purged": 2, "missing": 1 }));
    }

    #[test]
    fn queries_keep_their_names() {
        pinned(DeleteQuery { purge: Some("1".into()) }, json!({ "purge": "1" }));
        pinned(ListQuery { after: Some("ab.1".into()), limit: Some(7) }, json!({ "after": "ab.1", "limit": 7 }));
        pinned(FindingsQuery { after: Some(4) }, json!({ "after": 4 }));
        let q: ListQuery = serde_json::from_value(json!({})).unwrap();
        assert_eq!(q, ListQuery::default(), "every query field is optional");
    }

    #[test]
    fn a_shard_page_keeps_its_names() {
        let hash = ContentHash::of(b"l");
        pinned(
            ShardPage {
                shards: vec![
                    HeldShard { hash, shard: 0, len: 9, policy: Some("4+2".into()), age_s: 12 },
                    HeldShard { hash, shard: 1, len: 9, policy: None, age_s: 0 },
                ],
                next: Some(format!("{hash}.1")),
            },
            json!({
                "shards": [
                    { "hash": hash.to_hex(), "shard": 0, "len": 9, "policy": "4+2", "age_s": 12 },
                    { "hash": hash.to_hex(), "shard": 1, "len": 9, "policy": null, "age_s": 0 },
                ],
                "next": format!("{hash}.1"),
            }),
        );
        pinned(ShardPage { shards: vec![], next: None }, json!({ "shards": [], "next": null }));
    }

    #[test]
    fn a_findings_page_keeps_its_names() {
        let hash = ContentHash::of(b"f");
        pinned(
            FindingsPage {
                epoch: "6b0c5e4e-3f5a-4b8e-9a39-1f1d2e3c4b5a".into(),
                findings: vec![Finding { seq: 1, hash, shard: 2, at_ms: 1_700_000_000_000 }],
            },
            json!({
                "epoch": "6b0c5e4e-3f5a-4b8e-9a39-1f1d2e3c4b5a",
                "findings": [{ "seq": 1, "hash": hash.to_hex(), "shard": 2, "at_ms": 1_700_000_000_000i64 }],
            }),
        );
    }

    #[test]
    fn a_scrub_status_keeps_its_names() {
        pinned(
            ScrubStatus {
                state: "idle".into(),
                pass: 3,
                running: false,
                pass_started_ms: Some(10),
                shards_done: 4,
                bytes_done: 5,
                shards_total: 6,
                corrupt_found: 1,
                last_pass_finished_ms: None,
                last_error: Some("disk gone".into()),
                cursor: Some("ab.0".into()),
                rate: 16,
                interval_s: 60,
            },
            json!({
                "state": "idle",
                "pass": 3,
                "running": false,
                "pass_started_ms": 10,
                "shards_done": 4,
                "bytes_done": 5,
                "shards_total": 6,
                "corrupt_found": 1,
                "last_pass_finished_ms": null,
                "last_error": "disk gone",
                "cursor": "ab.0",
                "rate": 16,
                "interval_s": 60,
            }),
        );
    }

    #[test]
    fn a_compaction_keeps_its_names() {
        pinned(
            vec![Compacted { volume: 2, moved: 10, freed: 4096 }],
            json!([{ "volume": 2, "moved": 10, "freed": 4096 }]),
        );
    }

    #[test]
    fn a_worker_report_keeps_its_names() {
        pinned(
            WorkerReport {
                name: "compactor".into(),
                state: "idle".into(),
                progress: Some(WorkerProgress { done: 1, total: None }),
                queued: 0,
                steps: 2,
                errors: 1,
                last_error: Some((5, "compaction failed".into())),
                info: json!({ "bytes_freed": 10 }),
            },
            json!({
                "name": "compactor",
                "state": "idle",
                "progress": { "done": 1, "total": null },
                "queued": 0,
                "steps": 2,
                "errors": 1,
                "last_error": [5, "compaction failed"],
                "info": { "bytes_freed": 10 },
            }),
        );
    }

    #[test]
    fn store_stats_keep_their_names_with_and_without_volumes() {
        pinned(
            StoreStats::Volumes(VolumeStats {
                shards: 7,
                index_bytes: 700,
                syncs: 2,
                synced_ops: 7,
                volumes: vec![VolumeFigures { id: 1, size: 4096, live_records: 7, live_bytes: 3000, active: true }],
            }),
            json!({
                "shards": 7,
                "index_bytes": 700,
                "syncs": 2,
                "synced_ops": 7,
                "volumes": [{ "id": 1, "size": 4096, "live_records": 7, "live_bytes": 3000, "active": true }],
            }),
        );
        pinned(StoreStats::NoVolumes { volumes: () }, json!({ "volumes": null }));
    }
}
