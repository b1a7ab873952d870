//! [`ClusterStore`] over any executor, and its statements: placements, sightings,
//! leases and worker checkpoints.
//!
//! Where the stores differ: a lease is judged by this host's clock on SQLite
//! (every store on one file is on one host) and by the database's clock on
//! PostgreSQL (API servers on several hosts); PostgreSQL records a batch of
//! sightings in one statement over an array, SQLite (which has no arrays) one
//! statement per server in one transaction; and PostgreSQL keeps a checkpoint as
//! `BYTEA`, because `TEXT` cannot hold NUL.

use std::time::Duration;

use async_trait::async_trait;

use super::content::{query_contents, query_pairs, reindex};
use super::{Dialect, Sql, SqlStore};
use crate::clock::now_ms;
use crate::content::{ContentHash, Placement};
use crate::meta::exec::{params, Executor};
use crate::meta::row::{count, hash_after, placement_json, sql_limit, ttl_ms};
use crate::meta::sql::sql;
use crate::meta::{ClusterStore, ContentRecord, MetaError};

/// The database clock in ms since the Unix epoch (PostgreSQL).
macro_rules! db_now_ms {
    () => {
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT"
    };
}

/// Records a sighting: SQLite one server ($1) at a time; PostgreSQL an array of
/// distinct servers ($1, sorted so that concurrent callers lock rows in one order).
const SAW: Sql = Sql::each(
    "INSERT INTO server_sightings (server, last_seen_ms) VALUES (?1, ?2) \
     ON CONFLICT (server) DO UPDATE SET last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
    "INSERT INTO server_sightings (server, last_seen_ms) SELECT s, $2 FROM unnest($1::TEXT[]) s \
     ON CONFLICT (server) DO UPDATE SET last_seen_ms = GREATEST(server_sightings.last_seen_ms, excluded.last_seen_ms)",
);

/// Takes the lease if it is free, expired or the holder's already: one statement,
/// atomic against every other store. SQLite: ?3 is when it expires and ?4 now, by
/// this host's clock; PostgreSQL: $3 is the lease's length on the database's clock.
const ACQUIRE: Sql = Sql::each(
    "INSERT INTO leases (name, holder, expires_ms) VALUES (?1, ?2, ?3) \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms \
     WHERE leases.holder = excluded.holder OR leases.expires_ms <= ?4",
    concat!(
        "INSERT INTO leases (name, holder, expires_ms) VALUES ($1, $2, ",
        db_now_ms!(),
        " + $3) ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms ",
        "WHERE leases.holder = excluded.holder OR leases.expires_ms <= ",
        db_now_ms!()
    ),
);

/// The lease's holder unless it has expired (SQLite: ?2 is now).
const HOLDER: Sql = Sql::each(
    "SELECT holder FROM leases WHERE name = ?1 AND expires_ms > ?2",
    concat!("SELECT holder FROM leases WHERE name = $1 AND expires_ms > ", db_now_ms!()),
);

sql! {
    CONTENTS_ON = "SELECT c.hash, c.size, c.policy, c.placement, c.encoding, c.stored_size FROM \
         (SELECT DISTINCT hash FROM placements WHERE server = $1 AND hash > $2 ORDER BY hash LIMIT $3) p \
         JOIN content c ON c.hash = p.hash ORDER BY c.hash";

    PLACEMENT_SERVERS = "SELECT server, count(*) FROM placements GROUP BY server ORDER BY server";

    SIGHTINGS = "SELECT server, last_seen_ms FROM server_sightings ORDER BY server";

    FORGET = "DELETE FROM server_sightings WHERE server = $1";

    RELEASE = "DELETE FROM leases WHERE name = $1 AND holder = $2";

    CURSOR = "SELECT value FROM worker_cursors WHERE name = $1";

    SET_CURSOR = "INSERT INTO worker_cursors (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value";

    CLEAR_CURSOR = "DELETE FROM worker_cursors WHERE name = $1";

    SET_PLACEMENT = "UPDATE content SET placement = $2 WHERE hash = $1";
}

#[async_trait]
impl<E: Executor> ClusterStore for SqlStore<E> {
    async fn set_placement(&self, hash: &ContentHash, placement: &Placement) -> Result<(), MetaError> {
        const WHAT: &str = "set_placement";
        let (hex, json) = (hash.to_hex(), placement_json(placement)?);
        self.exec
            .transaction(WHAT, move |c| {
                Box::pin(async move {
                    if c.execute(WHAT, SET_PLACEMENT, params![&hex, &json]).await? > 0 {
                        reindex(c, WHAT, &hex, &json).await?;
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
        const WHAT: &str = "contents_on";
        let Some(limit) = sql_limit(limit) else {
            return Ok(Vec::new());
        };
        let (server, after) = (server.to_string(), hash_after(after));
        self.exec
            .run(WHAT, move |c| {
                Box::pin(async move { query_contents(c, WHAT, CONTENTS_ON, params![server, after, limit]).await })
            })
            .await
    }

    async fn placement_servers(&self) -> Result<Vec<(String, u64)>, MetaError> {
        const WHAT: &str = "placement_servers";
        let rows =
            self.exec.run(WHAT, |c| Box::pin(async move { query_pairs(c, WHAT, PLACEMENT_SERVERS).await })).await?;
        rows.into_iter().map(|(server, n)| Ok((server.clone(), count(n, || format!("{WHAT} {server}"))?))).collect()
    }

    async fn saw_servers(&self, servers: &[String], now_ms: i64) -> Result<(), MetaError> {
        const WHAT: &str = "saw_servers";
        let distinct: Vec<String> =
            servers.iter().cloned().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        if distinct.is_empty() {
            return Ok(());
        }
        self.exec
            .transaction(WHAT, move |c| {
                Box::pin(async move {
                    match c.dialect() {
                        Dialect::Postgres => drop(c.execute(WHAT, SAW, params![distinct, now_ms]).await?),
                        Dialect::Sqlite => {
                            for server in distinct {
                                c.execute(WHAT, SAW, params![server, now_ms]).await?;
                            }
                        }
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn server_sightings(&self) -> Result<Vec<(String, i64)>, MetaError> {
        const WHAT: &str = "server_sightings";
        self.exec.run(WHAT, |c| Box::pin(async move { query_pairs(c, WHAT, SIGHTINGS).await })).await
    }

    async fn forget_server(&self, server: &str) -> Result<(), MetaError> {
        const WHAT: &str = "forget_server";
        let server = server.to_string();
        self.exec
            .write(WHAT, move |c| Box::pin(async move { c.execute(WHAT, FORGET, params![server]).await.map(drop) }))
            .await
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, MetaError> {
        const WHAT: &str = "acquire_lease";
        let (name, holder, ttl) = (name.to_string(), holder.to_string(), ttl_ms(ttl));
        self.exec
            .write(WHAT, move |c| {
                Box::pin(async move {
                    let changed = match c.dialect() {
                        Dialect::Postgres => c.execute(WHAT, ACQUIRE, params![name, holder, ttl]).await?,
                        Dialect::Sqlite => {
                            let now = now_ms();
                            c.execute(WHAT, ACQUIRE, params![name, holder, now.saturating_add(ttl), now]).await?
                        }
                    };
                    Ok(changed > 0)
                })
            })
            .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), MetaError> {
        const WHAT: &str = "release_lease";
        let (name, holder) = (name.to_string(), holder.to_string());
        self.exec
            .write(WHAT, move |c| {
                Box::pin(async move { c.execute(WHAT, RELEASE, params![name, holder]).await.map(drop) })
            })
            .await
    }

    async fn lease_holder(&self, name: &str) -> Result<Option<String>, MetaError> {
        const WHAT: &str = "lease_holder";
        let name = name.to_string();
        self.exec
            .run(WHAT, move |c| {
                Box::pin(async move {
                    let row = match c.dialect() {
                        Dialect::Postgres => c.query_opt(WHAT, HOLDER, params![name]).await?,
                        Dialect::Sqlite => c.query_opt(WHAT, HOLDER, params![name, now_ms()]).await?,
                    };
                    row.map(|r| r.get(0)).transpose()
                })
            })
            .await
    }

    async fn worker_cursor(&self, name: &str) -> Result<Option<String>, MetaError> {
        const WHAT: &str = "worker_cursor";
        let name = name.to_string();
        self.exec
            .run(WHAT, move |c| {
                Box::pin(async move {
                    let Some(row) = c.query_opt(WHAT, CURSOR, params![&name]).await? else {
                        return Ok(None);
                    };
                    match c.dialect() {
                        Dialect::Sqlite => row.get(0).map(Some),
                        Dialect::Postgres => String::from_utf8(row.get(0)?).map(Some).map_err(|e| {
                            MetaError::Corrupt(format!("{WHAT} {name:?}: the checkpoint is not UTF-8: {e}"))
                        }),
                    }
                })
            })
            .await
    }

    async fn set_worker_cursor(&self, name: &str, value: Option<&str>) -> Result<(), MetaError> {
        const WHAT: &str = "set_worker_cursor";
        let (name, value) = (name.to_string(), value.map(str::to_string));
        self.exec
            .write(WHAT, move |c| {
                Box::pin(async move {
                    match value {
                        None => c.execute(WHAT, CLEAR_CURSOR, params![name]).await?,
                        // Bytes on PostgreSQL: a checkpoint is opaque, and TEXT cannot hold NUL.
                        Some(value) if c.dialect() == Dialect::Postgres => {
                            c.execute(WHAT, SET_CURSOR, params![name, value.into_bytes()]).await?
                        }
                        Some(value) => c.execute(WHAT, SET_CURSOR, params![name, value]).await?,
                    };
                    Ok(())
                })
            })
            .await
    }
}
