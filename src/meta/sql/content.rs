//! [`ContentStore`] over any executor, and its statements: the content row, its
//! upsert, its placement index and its lifecycle states; and the one content
//! insert every write uses ([`record_content`]).
//!
//! Where the stores differ, both texts stand side by side ([`Sql::each`]): the
//! placement index is filled from the placement JSON with SQLite's `json_each` or
//! PostgreSQL's `json_each_text`. PostgreSQL locks rows (`FOR UPDATE`, named after
//! `postgres:` in the catalogue) where SQLite's write transaction already holds
//! the one write lock.

use async_trait::async_trait;

use super::{Sql, SqlStore};
use crate::content::{ContentHash, Policy};
use crate::meta::exec::{params, Conn, Executor, Row};
use crate::meta::row::{
    begin_delete_step, count_states, hash_after, parse_state, sql_limit, BeginDelete, ContentRow, RawContent, DELETING,
    LIVE,
};
use crate::meta::sql::sql;
use crate::meta::{ContentCounts, ContentRecord, ContentState, ContentStore, MetaError};

/// Fills the placement index of one hash from its placement JSON ($2).
const INDEX_FILL: Sql = Sql::each(
    "INSERT OR IGNORE INTO placements (server, hash, shard) \
     SELECT value, ?1, CAST(key AS INTEGER) FROM json_each(?2) WHERE type = 'text'",
    "INSERT INTO placements (server, hash, shard) \
     SELECT j.value, $1, j.key::BIGINT FROM json_each_text($2::TEXT::json) j ON CONFLICT DO NOTHING",
);

/// Marks up to $2 unreferenced live rows doomed since $1 (PostgreSQL: skipping rows
/// a writer has locked).
pub(crate) const DOOM: Sql = Sql::each(
    "UPDATE content SET state = 'doomed', doomed_since_ms = ?1 WHERE hash IN \
     (SELECT c.hash FROM content c WHERE c.state = 'live' \
      AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.hash = c.hash) \
      AND NOT EXISTS (SELECT 1 FROM upload_parts p WHERE p.hash = c.hash) \
      AND NOT EXISTS (SELECT 1 FROM multipart_parts m WHERE m.hash = c.hash) LIMIT ?2)",
    "UPDATE content SET state = 'doomed', doomed_since_ms = $1 WHERE state = 'live' AND hash IN \
     (SELECT c.hash FROM content c WHERE c.state = 'live' \
      AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.hash = c.hash) \
      AND NOT EXISTS (SELECT 1 FROM upload_parts p WHERE p.hash = c.hash) \
      AND NOT EXISTS (SELECT 1 FROM multipart_parts m WHERE m.hash = c.hash) LIMIT $2 FOR UPDATE SKIP LOCKED)",
);

sql! {
    /// `begin_delete`'s first statement: the row's state (PostgreSQL: row-locking it
    /// until the commit).
    LOCK_STATE = "SELECT state, doomed_since_ms FROM content WHERE hash = $1", postgres: "FOR UPDATE";

    /// `finish_delete`'s check that the row is deleting (PostgreSQL: row-locking it).
    LOCK_DELETING = "SELECT 1 FROM content WHERE hash = $1 AND state = 'deleting'", postgres: "FOR UPDATE";

    CONTENT = "SELECT hash, size, policy, placement, encoding, stored_size FROM content WHERE hash = $1";

    /// Records content and makes it live; returns no row when it is deleting.
    UPSERT_CONTENT = "INSERT INTO content (hash, size, policy, placement, encoding, stored_size) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (hash) DO UPDATE SET policy = excluded.policy, placement = excluded.placement, \
         encoding = excluded.encoding, stored_size = excluded.stored_size, \
         state = 'live', doomed_since_ms = NULL WHERE content.state <> 'deleting' \
         RETURNING size";

    /// The placement index of one hash: cleared, then filled from its placement JSON.
    INDEX_CLEAR = "DELETE FROM placements WHERE hash = $1";

    STATE = "SELECT state, doomed_since_ms FROM content WHERE hash = $1";

    REVIVE = "UPDATE content SET state = 'live', doomed_since_ms = NULL WHERE hash = $1 AND state = 'doomed'";

    /// (`state <> 'live'`, implied by the state asked for, lets the planner use the
    /// partial index `content_by_state`.)
    DOOMED_BEFORE = "SELECT hash, size, policy, placement, encoding, stored_size FROM content \
         WHERE state = 'doomed' AND state <> 'live' AND doomed_since_ms <= $1 AND hash > $2 ORDER BY hash LIMIT $3";

    /// A version, an upload's part or a multipart upload's part points at it.
    REFERENCED = "SELECT EXISTS (SELECT 1 FROM versions WHERE hash = $1) \
         OR EXISTS (SELECT 1 FROM upload_parts WHERE hash = $1) \
         OR EXISTS (SELECT 1 FROM multipart_parts WHERE hash = $1)";

    SET_STATE = "UPDATE content SET state = $2, doomed_since_ms = NULL WHERE hash = $1";

    CLAIM = "INSERT INTO content (hash, size, policy, placement, state) \
         VALUES ($1, 0, $2, '{}', 'deleting') ON CONFLICT (hash) DO NOTHING";

    DELETING_ROWS = "SELECT hash, size, policy, placement, encoding, stored_size FROM content WHERE state = 'deleting' AND state <> 'live' AND hash > $1 ORDER BY hash LIMIT $2";

    FINISH = "DELETE FROM content WHERE hash = $1 AND state = 'deleting'";

    COUNTS = "SELECT state, count(*) FROM content GROUP BY state";
}

/// Records `content` (inserted, or updated and made live; PostgreSQL row-locks it)
/// and its placement index on `c`, inside the caller's write transaction: the one
/// content insert, used by `put_version` and by an upload's appended parts.
/// Content the collector is deleting is refused with [`MetaError::ContentDeleting`].
pub(crate) async fn record_content(
    c: &mut dyn Conn,
    what: &'static str,
    content: &ContentRecord,
) -> Result<ContentRow, MetaError> {
    let row = ContentRow::encode(content)?;
    let p = params![&row.hash, row.size, &row.policy, &row.placement, row.encoding, row.stored_size];
    let Some(stored) = c.query_opt(what, UPSERT_CONTENT, p).await? else {
        return Err(MetaError::ContentDeleting { hash: content.hash });
    };
    row.check_recorded_size(stored.get(0)?)?;
    reindex(c, what, &row.hash, &row.placement).await?;
    Ok(row)
}

/// Replaces the placement index rows of `hash` by those of `placement` (JSON), on
/// `c` inside the caller's transaction.
pub(crate) async fn reindex(
    c: &mut dyn Conn,
    what: &'static str,
    hash: &str,
    placement: &str,
) -> Result<(), MetaError> {
    c.execute(what, INDEX_CLEAR, params![hash]).await?;
    c.execute(what, INDEX_FILL, params![hash, placement]).await?;
    Ok(())
}

/// A content row ([`RawContent`]'s columns from `at`), validated.
pub(crate) fn content_at(row: &Row, at: usize) -> Result<ContentRecord, MetaError> {
    RawContent {
        hash: row.get(at)?,
        size: row.get(at + 1)?,
        policy: row.get(at + 2)?,
        placement: row.get(at + 3)?,
        encoding: row.get(at + 4)?,
        stored_size: row.get(at + 5)?,
    }
    .parse()
}

/// The content rows a query answers, validated.
pub(crate) async fn query_contents(
    c: &mut dyn Conn,
    what: &'static str,
    sql: Sql,
    params: &[crate::meta::exec::Value],
) -> Result<Vec<ContentRecord>, MetaError> {
    c.query(what, sql, params).await?.iter().map(|row| content_at(row, 0)).collect()
}

/// The state in a `(state, doomed_since_ms)` row of the row of `hex`.
fn state_of(hex: &str, row: Option<Row>) -> Result<Option<ContentState>, MetaError> {
    let Some(row) = row else {
        return Ok(None);
    };
    parse_state(hex, &row.get::<String>(0)?, row.get(1)?).map(Some)
}

/// `(text, integer)` rows of a query.
pub(crate) async fn query_pairs(
    c: &mut dyn Conn,
    what: &'static str,
    sql: Sql,
) -> Result<Vec<(String, i64)>, MetaError> {
    c.query(what, sql, &[]).await?.iter().map(|row| Ok((row.get(0)?, row.get(1)?))).collect()
}

#[async_trait]
impl<E: Executor> ContentStore for SqlStore<E> {
    async fn content(&self, hash: &ContentHash) -> Result<Option<ContentRecord>, MetaError> {
        const WHAT: &str = "content";
        let hex = hash.to_hex();
        self.exec
            .run(WHAT, move |c| {
                Box::pin(async move {
                    c.query_opt(WHAT, CONTENT, params![hex]).await?.map(|r| content_at(&r, 0)).transpose()
                })
            })
            .await
    }

    async fn content_state(&self, hash: &ContentHash) -> Result<Option<ContentState>, MetaError> {
        const WHAT: &str = "content_state";
        let hex = hash.to_hex();
        self.exec
            .run(WHAT, move |c| Box::pin(async move { state_of(&hex, c.query_opt(WHAT, STATE, params![&hex]).await?) }))
            .await
    }

    async fn revive(&self, hash: &ContentHash) -> Result<Option<ContentState>, MetaError> {
        const WHAT: &str = "revive";
        let hex = hash.to_hex();
        self.exec
            .transaction(WHAT, move |c| {
                Box::pin(async move {
                    c.execute(WHAT, REVIVE, params![&hex]).await?;
                    state_of(&hex, c.query_opt(WHAT, STATE, params![&hex]).await?)
                })
            })
            .await
    }

    async fn doom_unreferenced(&self, now_ms: i64, limit: usize) -> Result<usize, MetaError> {
        const WHAT: &str = "doom_unreferenced";
        let Some(limit) = sql_limit(limit) else {
            return Ok(0);
        };
        let doomed = self
            .exec
            .write(WHAT, move |c| Box::pin(async move { c.execute(WHAT, DOOM, params![now_ms, limit]).await }))
            .await?;
        Ok(usize::try_from(doomed).unwrap_or(usize::MAX))
    }

    async fn doomed_before(
        &self,
        cutoff_ms: i64,
        after: Option<&ContentHash>,
        limit: usize,
    ) -> Result<Vec<ContentRecord>, MetaError> {
        const WHAT: &str = "doomed_before";
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let after = hash_after(after);
        self.exec
            .run(WHAT, move |c| {
                Box::pin(async move { query_contents(c, WHAT, DOOMED_BEFORE, params![cutoff_ms, after, limit]).await })
            })
            .await
    }

    async fn begin_delete(&self, hash: &ContentHash, cutoff_ms: i64) -> Result<bool, MetaError> {
        const WHAT: &str = "begin_delete";
        let hex = hash.to_hex();
        self.exec
            .transaction(WHAT, move |c| {
                Box::pin(async move {
                    // The row first, locked: a put_version of this content upserts
                    // (so locks) the same row, so it has either committed (its version
                    // is seen by the next statement: SQLite holds the write lock from
                    // here to the commit, and PostgreSQL's READ COMMITTED reads anew)
                    // or waits for this step and then finds the row deleting.
                    let state = state_of(&hex, c.query_opt(WHAT, LOCK_STATE, params![&hex]).await?)?;
                    if !matches!(state, Some(ContentState::Doomed { .. })) {
                        return Ok(false);
                    }
                    let referenced: bool = c.query_one(WHAT, REFERENCED, params![&hex]).await?.get(0)?;
                    let (new_state, claimed) = match begin_delete_step(state, referenced, cutoff_ms) {
                        BeginDelete::Delete => (DELETING, true),
                        BeginDelete::Revive => (LIVE, false),
                        BeginDelete::Leave => return Ok(false),
                    };
                    c.execute(WHAT, SET_STATE, params![&hex, new_state]).await?;
                    Ok(claimed)
                })
            })
            .await
    }

    async fn claim_orphan(&self, hash: &ContentHash, policy: Policy) -> Result<bool, MetaError> {
        const WHAT: &str = "claim_orphan";
        let (hex, policy) = (hash.to_hex(), policy.to_string());
        self.exec
            .write(WHAT, move |c| Box::pin(async move { Ok(c.execute(WHAT, CLAIM, params![hex, policy]).await? > 0) }))
            .await
    }

    async fn deleting(&self, after: Option<&ContentHash>, limit: usize) -> Result<Vec<ContentRecord>, MetaError> {
        const WHAT: &str = "deleting";
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let after = hash_after(after);
        self.exec
            .run(WHAT, move |c| {
                Box::pin(async move { query_contents(c, WHAT, DELETING_ROWS, params![after, limit]).await })
            })
            .await
    }

    async fn finish_delete(&self, hash: &ContentHash) -> Result<bool, MetaError> {
        const WHAT: &str = "finish_delete";
        let hex = hash.to_hex();
        self.exec
            .transaction(WHAT, move |c| {
                Box::pin(async move {
                    if c.query_opt(WHAT, LOCK_DELETING, params![&hex]).await?.is_none() {
                        return Ok(false);
                    }
                    c.execute(WHAT, INDEX_CLEAR, params![&hex]).await?;
                    Ok(c.execute(WHAT, FINISH, params![&hex]).await? > 0)
                })
            })
            .await
    }

    async fn content_counts(&self) -> Result<ContentCounts, MetaError> {
        const WHAT: &str = "content_counts";
        self.exec.run(WHAT, |c| Box::pin(async move { count_states(query_pairs(c, WHAT, COUNTS).await?) })).await
    }
}
