//! The SQLite store's content rows and their lifecycle: [`ContentStore`] on
//! SQLite, and the one content insert every write uses (`record_content`).

use crate::meta::sql;
use async_trait::async_trait;
use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension};

use super::{immediate, query_pairs, Context, SqliteStore};
use crate::content::{ContentHash, Policy};
use crate::meta::row::{
    begin_delete_step, count_states, hash_after, parse_state, sql_limit, BeginDelete, ContentRow, RawContent, DELETING,
    LIVE,
};
use crate::meta::{ContentCounts, ContentRecord, ContentState, ContentStore, MetaError};

const SQL_INDEX_FILL: &str = "INSERT OR IGNORE INTO placements (server, hash, shard) \
     SELECT value, ?1, CAST(key AS INTEGER) FROM json_each(?2) WHERE type = 'text'";

pub(super) const SQL_DOOM: &str = "UPDATE content SET state = 'doomed', doomed_since_ms = ?1 WHERE hash IN \
     (SELECT c.hash FROM content c WHERE c.state = 'live' \
      AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.hash = c.hash) \
      AND NOT EXISTS (SELECT 1 FROM upload_parts p WHERE p.hash = c.hash) \
      AND NOT EXISTS (SELECT 1 FROM multipart_parts m WHERE m.hash = c.hash) LIMIT ?2)";

const SQL_FINISH_INDEX: &str = "DELETE FROM placements WHERE hash = ?1 \
     AND EXISTS (SELECT 1 FROM content WHERE hash = ?1 AND state = 'deleting')";

/// Records `content` (inserted, or updated and made live) and its placement index
/// on `conn`, inside the caller's write transaction: the one content insert of this
/// store, used by `put_version` and by an upload's appended parts. Content the
/// collector is deleting is refused with [`MetaError::ContentDeleting`].
pub(super) fn record_content(conn: &Connection, what: &str, content: &ContentRecord) -> Result<ContentRow, MetaError> {
    let row = ContentRow::encode(content)?;
    let stored: Option<i64> = conn
        .prepare_cached(sql::UPSERT_CONTENT.sqlite)
        .context(what)?
        .query_row((&row.hash, row.size, &row.policy, &row.placement, row.encoding, row.stored_size), |r| r.get(0))
        .optional()
        .context(what)?;
    let Some(stored) = stored else {
        return Err(MetaError::ContentDeleting { hash: content.hash });
    };
    row.check_recorded_size(stored)?;
    reindex(conn, what, &row.hash, &row.placement)?;
    Ok(row)
}

/// Replaces the placement index rows of `hash` by those of `placement` (JSON), on
/// `conn` inside the caller's transaction.
pub(super) fn reindex(conn: &Connection, what: &str, hash: &str, placement: &str) -> Result<(), MetaError> {
    conn.prepare_cached(sql::INDEX_CLEAR.sqlite).context(what)?.execute([hash]).context(what)?;
    conn.prepare_cached(SQL_INDEX_FILL).context(what)?.execute((hash, placement)).context(what)?;
    Ok(())
}

/// The state of the row of `hash` on `conn`, or `None`.
fn state_of(conn: &Connection, what: &str, hex: &str) -> Result<Option<ContentState>, MetaError> {
    let raw: Option<(String, Option<i64>)> = conn
        .prepare_cached(sql::STATE.sqlite)
        .context(what)?
        .query_row([hex], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
        .context(what)?;
    raw.map(|(state, since)| parse_state(hex, &state, since)).transpose()
}

/// Content rows ([`RawContent`]'s columns) of a query, validated.
pub(super) fn query_contents(
    conn: &Connection,
    what: &str,
    sql: &str,
    params: &[&dyn ToSql],
) -> Result<Vec<ContentRecord>, MetaError> {
    let mut stmt = conn.prepare_cached(sql).context(what)?;
    let rows = stmt.query_map(params, raw_content).context(what)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.context(what)?.parse()?);
    }
    Ok(out)
}

/// A content row as stored, before validation.
fn raw_content(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawContent> {
    Ok(RawContent {
        hash: row.get(0)?,
        size: row.get(1)?,
        policy: row.get(2)?,
        placement: row.get(3)?,
        encoding: row.get(4)?,
        stored_size: row.get(5)?,
    })
}

#[async_trait]
impl ContentStore for SqliteStore {
    async fn content(&self, hash: &ContentHash) -> Result<Option<ContentRecord>, MetaError> {
        let hex = hash.to_hex();
        self.read(move |conn| {
            const WHAT: &str = "content";
            let mut stmt = conn.prepare_cached(sql::CONTENT.sqlite).context(WHAT)?;
            let raw = stmt.query_row([&hex], raw_content).optional().context(WHAT)?;
            raw.map(RawContent::parse).transpose()
        })
        .await
    }

    async fn content_state(&self, hash: &ContentHash) -> Result<Option<ContentState>, MetaError> {
        let hex = hash.to_hex();
        self.read(move |conn| state_of(conn, "content_state", &hex)).await
    }

    async fn revive(&self, hash: &ContentHash) -> Result<Option<ContentState>, MetaError> {
        const WHAT: &str = "revive";
        let hex = hash.to_hex();
        self.write(move |conn| {
            immediate(conn, WHAT, |tx| {
                tx.prepare_cached(sql::REVIVE.sqlite).context(WHAT)?.execute([&hex]).context(WHAT)?;
                state_of(tx, WHAT, &hex)
            })
        })
        .await
    }

    async fn doom_unreferenced(&self, now_ms: i64, limit: usize) -> Result<usize, MetaError> {
        const WHAT: &str = "doom_unreferenced";
        let Some(limit) = sql_limit(limit) else {
            return Ok(0);
        };
        self.write(move |conn| conn.prepare_cached(SQL_DOOM).context(WHAT)?.execute((now_ms, limit)).context(WHAT))
            .await
    }

    async fn doomed_before(
        &self,
        cutoff_ms: i64,
        after: Option<&ContentHash>,
        limit: usize,
    ) -> Result<Vec<ContentRecord>, MetaError> {
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let after = hash_after(after);
        self.read(move |conn| {
            query_contents(conn, "doomed_before", sql::DOOMED_BEFORE.sqlite, &[&cutoff_ms, &after, &limit])
        })
        .await
    }

    async fn begin_delete(&self, hash: &ContentHash, cutoff_ms: i64) -> Result<bool, MetaError> {
        const WHAT: &str = "begin_delete";
        let hex = hash.to_hex();
        self.write(move |conn| {
            // The write lock, held from the reads to the commit, orders this step and
            // every put_version of the content (in any process) one after the other.
            immediate(conn, WHAT, |tx| {
                let state = state_of(tx, WHAT, &hex)?;
                let referenced: bool = tx
                    .prepare_cached(sql::REFERENCED.sqlite)
                    .context(WHAT)?
                    .query_row([&hex], |r| r.get(0))
                    .context(WHAT)?;
                let (new_state, claimed) = match begin_delete_step(state, referenced, cutoff_ms) {
                    BeginDelete::Delete => (DELETING, true),
                    BeginDelete::Revive => (LIVE, false),
                    BeginDelete::Leave => return Ok(false),
                };
                tx.prepare_cached(sql::SET_STATE.sqlite).context(WHAT)?.execute((&hex, new_state)).context(WHAT)?;
                Ok(claimed)
            })
        })
        .await
    }

    async fn claim_orphan(&self, hash: &ContentHash, policy: Policy) -> Result<bool, MetaError> {
        const WHAT: &str = "claim_orphan";
        let (hex, policy) = (hash.to_hex(), policy.to_string());
        self.write(move |conn| {
            let inserted =
                conn.prepare_cached(sql::CLAIM.sqlite).context(WHAT)?.execute((&hex, &policy)).context(WHAT)?;
            Ok(inserted > 0)
        })
        .await
    }

    async fn deleting(&self, after: Option<&ContentHash>, limit: usize) -> Result<Vec<ContentRecord>, MetaError> {
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let after = hash_after(after);
        self.read(move |conn| query_contents(conn, "deleting", sql::DELETING.sqlite, &[&after, &limit])).await
    }

    async fn finish_delete(&self, hash: &ContentHash) -> Result<bool, MetaError> {
        const WHAT: &str = "finish_delete";
        let hex = hash.to_hex();
        self.write(move |conn| {
            immediate(conn, WHAT, |tx| {
                tx.prepare_cached(SQL_FINISH_INDEX).context(WHAT)?.execute([&hex]).context(WHAT)?;
                let removed = tx.prepare_cached(sql::FINISH.sqlite).context(WHAT)?.execute([&hex]).context(WHAT)?;
                Ok(removed > 0)
            })
        })
        .await
    }

    async fn content_counts(&self) -> Result<ContentCounts, MetaError> {
        self.read(|conn| count_states(query_pairs(conn, "content_counts", sql::COUNTS.sqlite, &[])?)).await
    }
}
