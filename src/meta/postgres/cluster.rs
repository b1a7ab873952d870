//! The PostgreSQL store's placements, sightings, leases and worker checkpoints:
//! [`ClusterStore`] on PostgreSQL.

use crate::meta::sql;
use std::time::Duration;

use async_trait::async_trait;

use super::content::reindex;
use super::{Context, PostgresStore};
use crate::content::{ContentHash, Placement};
use crate::meta::row::{count, hash_after, placement_json, sql_limit, ttl_ms};
use crate::meta::{ClusterStore, ContentRecord, MetaError};

/// The database clock in ms since the Unix epoch.
macro_rules! db_now_ms {
    () => {
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"
    };
}

/// Records sightings of distinct servers (an array of them, sorted so that
/// concurrent callers lock rows in one order).
const SQL_SAW: &str = "INSERT INTO server_sightings (server, last_seen_ms) SELECT s, $2 FROM unnest($1::TEXT[]) s \
     ON CONFLICT (server) DO UPDATE SET last_seen_ms = GREATEST(server_sightings.last_seen_ms, excluded.last_seen_ms)";

/// Takes the lease for $3 ms of the database's clock if it is free, expired or the
/// holder's already: one statement, atomic against every other store.
const SQL_ACQUIRE: &str = concat!(
    "INSERT INTO leases (name, holder, expires_ms) VALUES ($1, $2, ",
    db_now_ms!(),
    " + $3) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms ",
    "WHERE leases.holder = excluded.holder OR leases.expires_ms <= ",
    db_now_ms!()
);

const SQL_HOLDER: &str = concat!("SELECT holder FROM leases WHERE name = $1 AND expires_ms > ", db_now_ms!());

#[async_trait]
impl ClusterStore for PostgresStore {
    async fn set_placement(&self, hash: &ContentHash, placement: &Placement) -> Result<(), MetaError> {
        const WHAT: &str = "set_placement";
        let (hex, json) = (hash.to_hex(), placement_json(placement)?);
        let mut client = self.client(WHAT).await?;
        let tx = client.transaction().await.context(WHAT)?;
        let stmt = tx.prepare_cached(sql::SET_PLACEMENT.postgres).await.context(WHAT)?;
        if tx.execute(&stmt, &[&hex, &json]).await.context(WHAT)? > 0 {
            reindex(&tx, WHAT, &hex, &json).await?;
        }
        tx.commit().await.context(WHAT)
    }

    async fn contents_on(
        &self,
        server: &str,
        after: Option<&ContentHash>,
        limit: usize,
    ) -> Result<Vec<ContentRecord>, MetaError> {
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let after = hash_after(after);
        self.query_contents("contents_on", sql::CONTENTS_ON.postgres, &[&server, &after, &limit]).await
    }

    async fn placement_servers(&self) -> Result<Vec<(String, u64)>, MetaError> {
        const WHAT: &str = "placement_servers";
        let rows = self.query_pairs(WHAT, sql::PLACEMENT_SERVERS.postgres, &[]).await?;
        rows.into_iter().map(|(server, n)| Ok((server.clone(), count(n, || format!("{WHAT} {server}"))?))).collect()
    }

    async fn saw_servers(&self, servers: &[String], now_ms: i64) -> Result<(), MetaError> {
        let distinct: Vec<&str> =
            servers.iter().map(String::as_str).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        if distinct.is_empty() {
            return Ok(());
        }
        self.execute("saw_servers", SQL_SAW, &[&distinct, &now_ms]).await.map(drop)
    }

    async fn server_sightings(&self) -> Result<Vec<(String, i64)>, MetaError> {
        self.query_pairs("server_sightings", sql::SIGHTINGS.postgres, &[]).await
    }

    async fn forget_server(&self, server: &str) -> Result<(), MetaError> {
        self.execute("forget_server", sql::FORGET.postgres, &[&server]).await.map(drop)
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, MetaError> {
        Ok(self.execute("acquire_lease", SQL_ACQUIRE, &[&name, &holder, &ttl_ms(ttl)]).await? > 0)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), MetaError> {
        self.execute("release_lease", sql::RELEASE.postgres, &[&name, &holder]).await.map(drop)
    }

    async fn lease_holder(&self, name: &str) -> Result<Option<String>, MetaError> {
        self.query_text("lease_holder", SQL_HOLDER, &[&name]).await
    }

    async fn worker_cursor(&self, name: &str) -> Result<Option<String>, MetaError> {
        const WHAT: &str = "worker_cursor";
        let client = self.client(WHAT).await?;
        let stmt = client.prepare_cached(sql::CURSOR.postgres).await.context(WHAT)?;
        let Some(row) = client.query_opt(&stmt, &[&name]).await.context(WHAT)? else {
            return Ok(None);
        };
        let bytes: Vec<u8> = row.try_get(0).context(WHAT)?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| MetaError::Corrupt(format!("{WHAT} {name:?}: the checkpoint is not UTF-8: {e}")))
    }

    async fn set_worker_cursor(&self, name: &str, value: Option<&str>) -> Result<(), MetaError> {
        match value {
            // Bytes, not TEXT: a checkpoint is opaque, and TEXT cannot hold NUL.
            Some(value) => {
                self.execute("set_worker_cursor", sql::SET_CURSOR.postgres, &[&name, &value.as_bytes()]).await
            }
            None => self.execute("set_worker_cursor", sql::CLEAR_CURSOR.postgres, &[&name]).await,
        }
        .map(drop)
    }
}
