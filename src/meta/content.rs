//! Content, as the metadata store records it: one row per hash
//! ([`ContentRecord`]) in a lifecycle state ([`ContentState`]), and
//! [`ContentStore`], the methods of the garbage-collection protocol described in
//! [the module docs](super). The stores implement it once, in `sql/content.rs`, over either executor.

use async_trait::async_trait;

use super::MetaError;
use crate::content::{ContentHash, Encoding, Placement, Policy};

/// A piece of stored content: what a version points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentRecord {
    /// The SHA-256 of the content.
    pub hash: ContentHash,
    /// The content's length in bytes.
    pub size: u64,
    /// The redundancy it was written with.
    pub policy: Policy,
    /// Where its shards were written (may be stale).
    pub placement: Placement,
    /// How its bytes are stored: the shards code the stored stream, which is the
    /// original bytes ([`Encoding::Identity`]) or their compressed form.
    pub encoding: Encoding,
    /// The stored stream's length, when it differs from `size` (`None`: the stored
    /// bytes are the original ones). Use [`ContentRecord::stored_len`].
    pub stored_size: Option<u64>,
}

impl ContentRecord {
    /// Content stored as it is (identity encoding).
    pub fn new(hash: ContentHash, size: u64, policy: Policy, placement: Placement) -> ContentRecord {
        ContentRecord { hash, size, policy, placement, encoding: Encoding::Identity, stored_size: None }
    }

    /// The same content, stored as `encoding` in a stream of `stored_size` bytes.
    pub fn encoded(self, encoding: Encoding, stored_size: u64) -> ContentRecord {
        let stored_size = (encoding != Encoding::Identity || stored_size != self.size).then_some(stored_size);
        ContentRecord { encoding, stored_size, ..self }
    }

    /// The length of the stored stream, which the shards code: what every
    /// [`Layout`](crate::codec::Layout) of this content is computed from.
    pub fn stored_len(&self) -> u64 {
        self.stored_size.unwrap_or(self.size)
    }
}

/// The lifecycle state of a content row (the GC protocol, see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentState {
    /// Referenced, or at least not yet found unreferenced: what `put_version` leaves.
    Live,
    /// Found with no version pointing at it.
    Doomed {
        /// When the collector found it unreferenced, in ms since the Unix epoch.
        since_ms: i64,
    },
    /// The collector is deleting its shards; no PUT may reuse it until it is gone.
    Deleting,
}

/// Counts of content rows by state, for operators.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ContentCounts {
    /// Rows in state [`ContentState::Live`].
    pub live: u64,
    /// Rows in state [`ContentState::Doomed`].
    pub doomed: u64,
    /// Rows in state [`ContentState::Deleting`].
    pub deleting: u64,
}

/// Content rows and their lifecycle: the garbage-collection protocol of the
/// module docs (doom, begin and finish a delete, claim orphans, revive).
#[async_trait]
pub trait ContentStore: Send + Sync + 'static {
    /// The recorded content with this hash, or `None`.
    async fn content(&self, hash: &ContentHash) -> Result<Option<ContentRecord>, MetaError>;

    /// The lifecycle state of the content row of `hash`, or `None` (no row).
    async fn content_state(&self, hash: &ContentHash) -> Result<Option<ContentState>, MetaError>;

    /// doomed → live; returns the state after the call (None: no row). live and
    /// deleting unchanged.
    async fn revive(&self, hash: &ContentHash) -> Result<Option<ContentState>, MetaError>;

    /// Marks up to `limit` live rows that no version points at as doomed since
    /// `now_ms`; returns how many.
    async fn doom_unreferenced(&self, now_ms: i64, limit: usize) -> Result<usize, MetaError>;

    /// Doomed rows with since_ms <= cutoff_ms, hash order after `after`, at most
    /// `limit`.
    async fn doomed_before(
        &self,
        cutoff_ms: i64,
        after: Option<&ContentHash>,
        limit: usize,
    ) -> Result<Vec<ContentRecord>, MetaError>;

    /// In one atomic step against `put_version` of the same content: a row doomed
    /// since `cutoff_ms` or earlier that no version points at becomes deleting
    /// (true); a doomed row that a version points at becomes live (false); anything
    /// else is left as it is (false).
    async fn begin_delete(&self, hash: &ContentHash, cutoff_ms: i64) -> Result<bool, MetaError>;

    /// Claims orphan shards: inserts a deleting row for a hash that has no row (size
    /// 0, the given policy, empty placement); true when claimed, false when a row
    /// exists (whatever its state).
    async fn claim_orphan(&self, hash: &ContentHash, policy: Policy) -> Result<bool, MetaError>;

    /// Rows in state deleting (hash order after `after`), at most `limit`.
    async fn deleting(&self, after: Option<&ContentHash>, limit: usize) -> Result<Vec<ContentRecord>, MetaError>;

    /// Removes the row if it is deleting (and its placement index rows); true if
    /// removed.
    async fn finish_delete(&self, hash: &ContentHash) -> Result<bool, MetaError>;

    /// How many content rows are in each state.
    async fn content_counts(&self) -> Result<ContentCounts, MetaError>;
}
