//! A PostgreSQL schema of a test's own on the test server, dropped afterwards.

use std::time::Duration;

use cairn::meta::postgres::PostgresStore;
use tokio_postgres::NoTls;

pub const DEFAULT_SERVER: &str = "postgres://root@127.0.0.1:5432/test";

pub fn server_url() -> String {
    std::env::var("CAIRN_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_SERVER.to_string())
}

/// A schema of its own on the test server, and a plain connection for raw SQL
/// whose `search_path` is that schema. Dropped (best effort) with the value.
pub struct TestSchema {
    pub name: String,
    pub server: String,
    pub raw: tokio_postgres::Client,
}

impl TestSchema {
    /// A fresh schema name on a reachable server, or `None` (after saying so) when
    /// the server is unreachable and services are not required.
    pub async fn new() -> Option<TestSchema> {
        let server = server_url();
        let name = format!("cairn_test_{}", uuid::Uuid::new_v4().simple());
        let mut config: tokio_postgres::Config = match server.parse() {
            Ok(config) => config,
            Err(e) => panic!("CAIRN_TEST_POSTGRES_URL {server:?} is not a PostgreSQL URL: {e}"),
        };
        config.application_name(format!("{name}_raw"));
        let connected = tokio::time::timeout(Duration::from_secs(5), config.connect(NoTls)).await;
        let (raw, connection) = match connected {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                let cause = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
                return not_reachable(&server, &format!("{e}{cause}"));
            }
            Err(_) => return not_reachable(&server, "connecting timed out after 5 s"),
        };
        tokio::spawn(async move {
            let _ = connection.await;
        });
        raw.batch_execute(&format!("SET search_path TO {name}")).await.expect("set search_path");
        Some(TestSchema { name, server, raw })
    }

    /// The store URL for this schema; its connections are named after the schema.
    pub fn url(&self) -> String {
        let sep = if self.server.contains('?') { '&' } else { '?' };
        format!("{}{sep}schema={name}&application_name={name}", self.server, name = self.name)
    }

    pub async fn open(&self) -> PostgresStore {
        PostgresStore::open(&self.url()).await.expect("open the store")
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // No async drop: a thread with its own runtime, so this works during a panic
        // and inside the test's (possibly single-threaded, now blocked) runtime. The
        // test's stores may not have closed their connections yet (their tasks need
        // that blocked runtime), and one may sit in a transaction holding locks on
        // the schema, so end them first: every connection of the test carries the
        // schema's name as its application_name.
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async move {
                let (client, connection) = tokio_postgres::connect(&server, NoTls).await?;
                tokio::spawn(connection);
                client
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE left(application_name, length($1)) = $1 AND pid <> pg_backend_pid()",
                        &[&name],
                    )
                    .await?;
                client.batch_execute(&format!("SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS {name} CASCADE")).await
            })?;
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test schema {}: {e:?}", self.name),
            Err(_) => eprintln!("could not drop test schema {}: the dropping thread panicked", self.name),
        }
    }
}

fn not_reachable(server: &str, why: &str) -> Option<TestSchema> {
    if std::env::var("CAIRN_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("PostgreSQL at {server} is not reachable ({why}) and CAIRN_REQUIRE_SERVICES=1 requires it");
    }
    eprintln!(
        "SKIPPED: PostgreSQL not reachable at {server} ({why}). Start it, or point CAIRN_TEST_POSTGRES_URL \
         at one; CAIRN_REQUIRE_SERVICES=1 turns this skip into a failure."
    );
    None
}
