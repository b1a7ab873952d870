//! The SQLite store's placements, sightings, leases and worker checkpoints:
//! [`ClusterStore`] on SQLite.

use crate::meta::sql;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::OptionalExtension;

use super::content::{query_contents, reindex};
use super::{immediate, query_pairs, Context, SqliteStore};
use crate::clock::now_ms;
use crate::content::{ContentHash, Placement};
use crate::meta::row::{count, hash_after, placement_json, sql_limit, ttl_ms};
use crate::meta::{ClusterStore, ContentRecord, MetaError};

const SQL_SAW: &str = "INSERT INTO server_sightings (server, last_seen_ms) VALUES (?1, ?2) \
     ON CONFLICT (server) DO UPDATE SET last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)";

/// Takes the lease (?3: when it expires, ?4: now) if it is free, expired or the
/// holder's already: one statement, so one step under SQLite's write lock.
const SQL_ACQUIRE: &str = "INSERT INTO leases (name, holder, expires_ms) VALUES (?1, ?2, ?3) \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms \
     WHERE leases.holder = excluded.holder OR leases.expires_ms <= ?4";

const SQL_HOLDER: &str = "SELECT holder FROM leases WHERE name = ?1 AND expires_ms > ?2";

#[async_trait]
impl ClusterStore for SqliteStore {
    async fn set_placement(&self, hash: &ContentHash, placement: &Placement) -> Result<(), MetaError> {
        let hex = hash.to_hex();
        let json = placement_json(placement)?;
        self.write(move |conn| {
            const WHAT: &str = "set_placement";
            immediate(conn, WHAT, |tx| {
                let changed =
                    tx.prepare_cached(sql::SET_PLACEMENT.sqlite).context(WHAT)?.execute((&hex, &json)).context(WHAT)?;
                if changed > 0 {
                    reindex(tx, WHAT, &hex, &json)?;
                }
                Ok(())
            })
        })
        .await
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
        let (server, after) = (server.to_string(), hash_after(after));
        self.read(move |conn| query_contents(conn, "contents_on", sql::CONTENTS_ON.sqlite, &[&server, &after, &limit]))
            .await
    }

    async fn placement_servers(&self) -> Result<Vec<(String, u64)>, MetaError> {
        const WHAT: &str = "placement_servers";
        self.read(|conn| {
            let rows = query_pairs(conn, WHAT, sql::PLACEMENT_SERVERS.sqlite, &[])?;
            rows.into_iter().map(|(server, n)| Ok((server.clone(), count(n, || format!("{WHAT} {server}"))?))).collect()
        })
        .await
    }

    async fn saw_servers(&self, servers: &[String], now_ms: i64) -> Result<(), MetaError> {
        const WHAT: &str = "saw_servers";
        if servers.is_empty() {
            return Ok(());
        }
        let servers = servers.to_vec();
        self.write(move |conn| {
            immediate(conn, WHAT, |tx| {
                let mut stmt = tx.prepare_cached(SQL_SAW).context(WHAT)?;
                for server in &servers {
                    stmt.execute((server, now_ms)).context(WHAT)?;
                }
                Ok(())
            })
        })
        .await
    }

    async fn server_sightings(&self) -> Result<Vec<(String, i64)>, MetaError> {
        self.read(|conn| query_pairs(conn, "server_sightings", sql::SIGHTINGS.sqlite, &[])).await
    }

    async fn forget_server(&self, server: &str) -> Result<(), MetaError> {
        const WHAT: &str = "forget_server";
        let server = server.to_string();
        self.write(move |conn| {
            conn.prepare_cached(sql::FORGET.sqlite).context(WHAT)?.execute([&server]).context(WHAT)?;
            Ok(())
        })
        .await
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, MetaError> {
        const WHAT: &str = "acquire_lease";
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |conn| {
            let now = now_ms();
            let expires = now.saturating_add(ttl_ms(ttl));
            let changed = conn
                .prepare_cached(SQL_ACQUIRE)
                .context(WHAT)?
                .execute((&name, &holder, expires, now))
                .context(WHAT)?;
            Ok(changed > 0)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), MetaError> {
        const WHAT: &str = "release_lease";
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |conn| {
            conn.prepare_cached(sql::RELEASE.sqlite).context(WHAT)?.execute((&name, &holder)).context(WHAT)?;
            Ok(())
        })
        .await
    }

    async fn lease_holder(&self, name: &str) -> Result<Option<String>, MetaError> {
        const WHAT: &str = "lease_holder";
        let name = name.to_string();
        self.read(move |conn| {
            conn.prepare_cached(SQL_HOLDER)
                .context(WHAT)?
                .query_row((&name, now_ms()), |row| row.get(0))
                .optional()
                .context(WHAT)
        })
        .await
    }

    async fn worker_cursor(&self, name: &str) -> Result<Option<String>, MetaError> {
        const WHAT: &str = "worker_cursor";
        let name = name.to_string();
        self.read(move |conn| {
            conn.prepare_cached(sql::CURSOR.sqlite)
                .context(WHAT)?
                .query_row([&name], |row| row.get(0))
                .optional()
                .context(WHAT)
        })
        .await
    }

    async fn set_worker_cursor(&self, name: &str, value: Option<&str>) -> Result<(), MetaError> {
        const WHAT: &str = "set_worker_cursor";
        let (name, value) = (name.to_string(), value.map(str::to_string));
        self.write(move |conn| {
            match &value {
                Some(value) => conn.prepare_cached(sql::SET_CURSOR.sqlite).context(WHAT)?.execute((&name, value)),
                None => conn.prepare_cached(sql::CLEAR_CURSOR.sqlite).context(WHAT)?.execute([&name]),
            }
            .context(WHAT)?;
            Ok(())
        })
        .await
    }
}
