//! The PostgreSQL store's content rows and their lifecycle: [`ContentStore`] on
//! PostgreSQL, and the one content insert every write uses (`record_content`).

use crate::meta::sql;
use async_trait::async_trait;
use tokio_postgres::Row;

use super::{Context, PostgresStore};
use crate::content::{ContentHash, Policy};
use crate::meta::row::{
    begin_delete_step, count_states, hash_after, parse_state, sql_limit, BeginDelete, ContentRow, RawContent, DELETING,
    LIVE,
};
use crate::meta::{ContentCounts, ContentRecord, ContentState, ContentStore, MetaError};

const SQL_INDEX_FILL: &str = "INSERT INTO placements (server, hash, shard) \
     SELECT j.value, $1, j.key::BIGINT FROM json_each_text($2::TEXT::json) j ON CONFLICT DO NOTHING";

/// `begin_delete`'s first statement: the row's state, row-locking it until commit.
const SQL_LOCK_STATE: &str = "SELECT state, doomed_since_ms FROM content WHERE hash = $1 FOR UPDATE";

const SQL_DOOM: &str = "UPDATE content SET state = 'doomed', doomed_since_ms = $1 WHERE state = 'live' AND hash IN \
     (SELECT c.hash FROM content c WHERE c.state = 'live' \
      AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.hash = c.hash) \
      AND NOT EXISTS (SELECT 1 FROM upload_parts p WHERE p.hash = c.hash) \
      AND NOT EXISTS (SELECT 1 FROM multipart_parts m WHERE m.hash = c.hash) LIMIT $2 FOR UPDATE SKIP LOCKED)";

const SQL_LOCK_DELETING: &str = "SELECT 1 FROM content WHERE hash = $1 AND state = 'deleting' FOR UPDATE";

/// Records `content` (inserted, or updated and made live, row-locking it) and its
/// placement index inside `tx`: the one content insert of this store, used by
/// `put_version` and by an upload's appended parts. Content the collector is
/// deleting is refused with [`MetaError::ContentDeleting`].
pub(super) async fn record_content(
    tx: &deadpool_postgres::Transaction<'_>,
    what: &str,
    content: &ContentRecord,
) -> Result<ContentRow, MetaError> {
    let row = ContentRow::encode(content)?;
    let stmt = tx.prepare_cached(sql::UPSERT_CONTENT.postgres).await.context(what)?;
    let stored = tx
        .query_opt(&stmt, &[&row.hash, &row.size, &row.policy, &row.placement, &row.encoding, &row.stored_size])
        .await
        .context(what)?;
    let Some(stored) = stored else {
        return Err(MetaError::ContentDeleting { hash: content.hash });
    };
    row.check_recorded_size(stored.try_get(0).context(what)?)?;
    reindex(tx, what, &row.hash, &row.placement).await?;
    Ok(row)
}

/// Replaces the placement index rows of `hash` by those of `placement` (JSON),
/// inside `tx`.
pub(super) async fn reindex(
    tx: &deadpool_postgres::Transaction<'_>,
    what: &str,
    hash: &str,
    placement: &str,
) -> Result<(), MetaError> {
    let stmt = tx.prepare_cached(sql::INDEX_CLEAR.postgres).await.context(what)?;
    tx.execute(&stmt, &[&hash]).await.context(what)?;
    let stmt = tx.prepare_cached(SQL_INDEX_FILL).await.context(what)?;
    tx.execute(&stmt, &[&hash, &placement]).await.context(what)?;
    Ok(())
}

/// The state in a `(state, doomed_since_ms)` row of the row of `hex`.
fn state_row(hex: &str, row: Option<Row>, what: &str) -> Result<Option<ContentState>, MetaError> {
    let Some(row) = row else {
        return Ok(None);
    };
    let (state, since): (String, Option<i64>) = (row.try_get(0).context(what)?, row.try_get(1).context(what)?);
    parse_state(hex, &state, since).map(Some)
}

/// A content row ([`RawContent`]'s columns), validated.
pub(super) fn content_row(row: &Row, what: &str) -> Result<ContentRecord, MetaError> {
    let read = |row: &Row| -> Result<RawContent, tokio_postgres::Error> {
        Ok(RawContent {
            hash: row.try_get(0)?,
            size: row.try_get(1)?,
            policy: row.try_get(2)?,
            placement: row.try_get(3)?,
            encoding: row.try_get(4)?,
            stored_size: row.try_get(5)?,
        })
    };
    read(row).context(what)?.parse()
}

#[async_trait]
impl ContentStore for PostgresStore {
    async fn content(&self, hash: &ContentHash) -> Result<Option<ContentRecord>, MetaError> {
        const WHAT: &str = "content";
        let hex = hash.to_hex();
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(sql::CONTENT.postgres).await.context(WHAT)?;
        let Some(row) = client.query_opt(&stmt, &[&hex]).await.context(WHAT)? else {
            return Ok(None);
        };
        content_row(&row, WHAT).map(Some)
    }

    async fn content_state(&self, hash: &ContentHash) -> Result<Option<ContentState>, MetaError> {
        const WHAT: &str = "content_state";
        let hex = hash.to_hex();
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(sql::STATE.postgres).await.context(WHAT)?;
        state_row(&hex, client.query_opt(&stmt, &[&hex]).await.context(WHAT)?, WHAT)
    }

    async fn revive(&self, hash: &ContentHash) -> Result<Option<ContentState>, MetaError> {
        const WHAT: &str = "revive";
        let hex = hash.to_hex();
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let stmt = tx.prepare_cached(sql::REVIVE.postgres).await.context(WHAT)?;
        tx.execute(&stmt, &[&hex]).await.context(WHAT)?;
        let stmt = tx.prepare_cached(sql::STATE.postgres).await.context(WHAT)?;
        let state = state_row(&hex, tx.query_opt(&stmt, &[&hex]).await.context(WHAT)?, WHAT)?;
        tx.commit().await.context(WHAT)?;
        Ok(state)
    }

    async fn doom_unreferenced(&self, now_ms: i64, limit: usize) -> Result<usize, MetaError> {
        let Some(limit) = sql_limit(limit) else {
            return Ok(0);
        };
        let doomed = self.execute("doom_unreferenced", SQL_DOOM, &[&now_ms, &limit]).await?;
        Ok(usize::try_from(doomed).unwrap_or(usize::MAX))
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
        self.query_contents("doomed_before", sql::DOOMED_BEFORE.postgres, &[&cutoff_ms, &after, &limit]).await
    }

    async fn begin_delete(&self, hash: &ContentHash, cutoff_ms: i64) -> Result<bool, MetaError> {
        const WHAT: &str = "begin_delete";
        let hex = hash.to_hex();
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        // Lock the content row first: a put_version of this content upserts (so
        // locks) the same row, so it has either committed (its version is seen by
        // the next statement, which reads anew under READ COMMITTED) or waits for
        // this step and then finds the row deleting.
        let stmt = tx.prepare_cached(SQL_LOCK_STATE).await.context(WHAT)?;
        let state = state_row(&hex, tx.query_opt(&stmt, &[&hex]).await.context(WHAT)?, WHAT)?;
        if !matches!(state, Some(ContentState::Doomed { .. })) {
            return Ok(false);
        }
        let stmt = tx.prepare_cached(sql::REFERENCED.postgres).await.context(WHAT)?;
        let referenced: bool = tx.query_one(&stmt, &[&hex]).await.and_then(|r| r.try_get(0)).context(WHAT)?;
        let (new_state, claimed) = match begin_delete_step(state, referenced, cutoff_ms) {
            BeginDelete::Delete => (DELETING, true),
            BeginDelete::Revive => (LIVE, false),
            BeginDelete::Leave => return Ok(false),
        };
        let stmt = tx.prepare_cached(sql::SET_STATE.postgres).await.context(WHAT)?;
        tx.execute(&stmt, &[&hex, &new_state]).await.context(WHAT)?;
        tx.commit().await.context(WHAT)?;
        Ok(claimed)
    }

    async fn claim_orphan(&self, hash: &ContentHash, policy: Policy) -> Result<bool, MetaError> {
        let (hex, policy) = (hash.to_hex(), policy.to_string());
        Ok(self.execute("claim_orphan", sql::CLAIM.postgres, &[&hex, &policy]).await? > 0)
    }

    async fn deleting(&self, after: Option<&ContentHash>, limit: usize) -> Result<Vec<ContentRecord>, MetaError> {
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let after = hash_after(after);
        self.query_contents("deleting", sql::DELETING.postgres, &[&after, &limit]).await
    }

    async fn finish_delete(&self, hash: &ContentHash) -> Result<bool, MetaError> {
        const WHAT: &str = "finish_delete";
        let hex = hash.to_hex();
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let stmt = tx.prepare_cached(SQL_LOCK_DELETING).await.context(WHAT)?;
        if tx.query_opt(&stmt, &[&hex]).await.context(WHAT)?.is_none() {
            return Ok(false);
        }
        let stmt = tx.prepare_cached(sql::INDEX_CLEAR.postgres).await.context(WHAT)?;
        tx.execute(&stmt, &[&hex]).await.context(WHAT)?;
        let stmt = tx.prepare_cached(sql::FINISH.postgres).await.context(WHAT)?;
        let removed = tx.execute(&stmt, &[&hex]).await.context(WHAT)?;
        tx.commit().await.context(WHAT)?;
        Ok(removed > 0)
    }

    async fn content_counts(&self) -> Result<ContentCounts, MetaError> {
        count_states(self.query_pairs("content_counts", sql::COUNTS.postgres, &[]).await?)
    }
}
