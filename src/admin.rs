//! `cairn admin`: the operator's command line, a client of an API server's
//! `/admin/…` routes ([`crate::api::admin`]) over plain HTTP. It prints the
//! cluster's state as a table (or the JSON as it came, with `--json`), starts
//! scrubs and garbage collection, repairs a name, and pauses or resumes a worker;
//! `--wait` follows a scrub or a collection to its end with a progress bar
//! (`indicatif`, drawn only on a terminal).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::api::names::encode_path;

/// The `cairn admin` command line.
#[derive(Clone, Debug, clap::Args)]
pub struct AdminArgs {
    /// API server to talk to.
    #[arg(long, env = "CAIRN_ENDPOINT", default_value = "http://127.0.0.1:12345")]
    pub endpoint: String,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// The access key the requests carry: an unrestricted, read-write one once the
    /// cluster has keys.
    #[command(flatten)]
    pub credentials: crate::api::keys::Credentials,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// What `cairn admin` does.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Data servers (heartbeat age, free space, shards, scrub), workers (state,
    /// progress, last error), content counts and lease holders.
    Status,
    /// Have every live data server start a scrub pass now.
    Scrub {
        /// Follow the pass to its end with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// Run a full garbage-collection pass (orphans included) now.
    Gc {
        /// Wait until the pass has ended.
        #[arg(long)]
        wait: bool,
    },
    /// Have the healer look at scrub findings and silent data servers now.
    Heal,
    /// Verify and repair the current version of a name now.
    Repair {
        /// The object's name.
        name: String,
    },
    /// Pause a worker (retention, gc, heal) after its current step.
    Pause {
        /// The worker.
        worker: String,
    },
    /// Resume a paused worker.
    Resume {
        /// The worker.
        worker: String,
    },
    /// Access keys: create, list, delete.
    #[command(subcommand)]
    Key(KeyCommand),
}

/// What `cairn admin key` does.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Create a key and print its id and secret (the only time the secret is shown).
    Create {
        /// Limit the key to this bucket (repeat for several); none: every bucket.
        #[arg(long = "bucket")]
        buckets: Vec<String>,
        /// The key may only read (GET, HEAD, listings).
        #[arg(long)]
        read_only: bool,
    },
    /// List the keys (ids and limits, never secrets).
    List,
    /// Delete a key: requests signed with it are refused within a second.
    Delete {
        /// The access key id.
        #[arg(value_name = "ACCESS_KEY")]
        id: String,
    },
}

/// Why `cairn admin` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The API server could not be reached.
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The API server refused.
    #[error("{url} answered {status}: {body}")]
    Refused {
        /// What was asked.
        url: String,
        /// The status.
        status: u16,
        /// Its reason.
        body: String,
    },
    /// The answer was not JSON.
    #[error("{url} answered something that is not JSON")]
    NotJson {
        /// What was asked.
        url: String,
    },
    /// A wait ran past its deadline.
    #[error("gave up waiting after {0:?}")]
    WaitedTooLong(Duration),
}

/// How long `--wait` follows a run at most.
const WAIT_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// How often `--wait` asks.
const POLL: Duration = Duration::from_millis(500);

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(&self, post: bool, path: &str) -> Result<Value, AdminError> {
        let method = if post { reqwest::Method::POST } else { reqwest::Method::GET };
        self.send(method, path, None).await
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, AdminError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|source| AdminError::Unreachable { url: url.clone(), source })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|source| AdminError::Unreachable { url: url.clone(), source })?;
        if !status.is_success() {
            return Err(AdminError::Refused { url, status: status.as_u16(), body: text.trim().to_string() });
        }
        serde_json::from_str(&text).map_err(|_| AdminError::NotJson { url })
    }
}

/// Runs one `cairn admin` command and prints what it found.
pub async fn run(args: AdminArgs) -> Result<(), AdminError> {
    let client = Client {
        http: reqwest::Client::builder()
            .default_headers(args.credentials.headers().map_err(|body| AdminError::Refused {
                url: args.endpoint.clone(),
                status: 0,
                body,
            })?)
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|source| AdminError::Unreachable { url: args.endpoint.clone(), source })?,
        base: args.endpoint.trim_end_matches('/').to_string(),
    };
    let answer = match &args.command {
        AdminCommand::Status => {
            let status = client.call(false, "/admin/status").await?;
            if !args.json {
                print!("{}", render_status(&status));
                return Ok(());
            }
            status
        }
        AdminCommand::Scrub { wait } => {
            let before = client.call(false, "/admin/status").await?;
            let started = client.call(true, "/admin/scrub").await?;
            if *wait {
                wait_for_scrub(&client, &before).await?;
                let status = client.call(false, "/admin/status").await?;
                if !args.json {
                    print!("{}", render_status(&status));
                    return Ok(());
                }
                status
            } else {
                started
            }
        }
        AdminCommand::Gc { wait } => {
            let before = gc_passes(&client.call(false, "/admin/status").await?);
            let started = client.call(true, "/admin/gc").await?;
            if *wait {
                wait_for_gc(&client, before).await?
            } else {
                started
            }
        }
        AdminCommand::Heal => client.call(true, "/admin/heal").await?,
        AdminCommand::Repair { name } => client.call(true, &format!("/admin/repair/{}", encode_path(name))).await?,
        AdminCommand::Pause { worker } => {
            client.call(true, &format!("/admin/workers/{}/pause", encode_path(worker))).await?
        }
        AdminCommand::Resume { worker } => {
            client.call(true, &format!("/admin/workers/{}/resume", encode_path(worker))).await?
        }
        AdminCommand::Key(KeyCommand::Create { buckets, read_only }) => {
            let body = serde_json::json!({ "buckets": buckets, "read_only": read_only });
            let key = client.send(reqwest::Method::POST, "/admin/keys", Some(body)).await?;
            if !args.json {
                println!("access key: {}", key["access_key"].as_str().unwrap_or(""));
                println!("secret key: {}", key["secret_key"].as_str().unwrap_or(""));
                println!("(the secret is shown once; export CAIRN_ACCESS_KEY and CAIRN_SECRET_KEY, or give both to an S3 client)");
                return Ok(());
            }
            key
        }
        AdminCommand::Key(KeyCommand::List) => {
            let keys = client.call(false, "/admin/keys").await?;
            if !args.json {
                print!("{}", render_keys(&keys));
                return Ok(());
            }
            keys
        }
        AdminCommand::Key(KeyCommand::Delete { id }) => {
            client.send(reqwest::Method::DELETE, &format!("/admin/keys/{}", encode_path(id)), None).await?
        }
    };
    println!("{}", serde_json::to_string_pretty(&answer).unwrap_or_default());
    Ok(())
}

/// The keys as a table: id, buckets, access, created.
fn render_keys(keys: &Value) -> String {
    let mut out = format!("{:<22} {:<10} {:<20} {}\n", "ACCESS KEY", "ACCESS", "CREATED (UTC)", "BUCKETS");
    for key in keys["keys"].as_array().into_iter().flatten() {
        let buckets: Vec<&str> = key["buckets"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let access = if key["read_only"].as_bool() == Some(true) { "read-only" } else { "read-write" };
        let created = key["created"].as_i64().map(crate::client::human_time).unwrap_or_default();
        let buckets = if buckets.is_empty() { "(all)".to_string() } else { buckets.join(",") };
        out.push_str(&format!(
            "{:<22} {:<10} {:<20} {}\n",
            key["access_key"].as_str().unwrap_or(""),
            access,
            created,
            buckets
        ));
    }
    out
}

/// Each data server's scrub pass number, to tell when a new pass has ended.
fn scrub_passes(status: &Value) -> Vec<(String, u64)> {
    status["data_servers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["live"].as_bool() == Some(true))
        .map(|s| (s["addr"].as_str().unwrap_or("").to_string(), s["scrub"]["pass"].as_u64().unwrap_or(0)))
        .collect()
}

fn progress_bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

async fn wait_for_scrub(client: &Client, before: &Value) -> Result<(), AdminError> {
    let before = scrub_passes(before);
    let bar = progress_bar(0, "scrub");
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        let status = client.call(false, "/admin/status").await?;
        let servers: Vec<&Value> = status["data_servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| before.iter().any(|(a, _)| s["addr"].as_str() == Some(a)))
            .collect();
        let total: u64 = servers.iter().map(|s| s["scrub"]["shards_total"].as_u64().unwrap_or(0)).sum();
        let done: u64 = servers.iter().map(|s| s["scrub"]["shards_done"].as_u64().unwrap_or(0)).sum();
        let finished = scrub_passes(&status)
            .iter()
            .filter(|(addr, pass)| {
                before.iter().any(|(a, p)| a == addr && pass > p)
                    && servers.iter().any(|s| s["addr"].as_str() == Some(addr) && s["scrub"]["state"] != "busy")
            })
            .count();
        bar.set_length(total.max(done));
        bar.set_position(done);
        if finished >= before.len() {
            bar.finish_with_message("scrub done");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(AdminError::WaitedTooLong(WAIT_LIMIT));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn gc_worker(status: &Value) -> Option<&Value> {
    status["workers"].as_array()?.iter().find(|w| w["name"] == "gc")
}

fn gc_passes(status: &Value) -> u64 {
    gc_worker(status).and_then(|w| w["info"]["counts"]["passes"].as_u64()).unwrap_or(0)
}

async fn wait_for_gc(client: &Client, before: u64) -> Result<Value, AdminError> {
    let bar = ProgressBar::new_spinner();
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        let status = client.call(false, "/admin/status").await?;
        if let Some(gc) = gc_worker(&status) {
            let counts = &gc["info"]["counts"];
            bar.set_message(format!(
                "gc: {} phase, {} contents deleted, {} orphan shards deleted",
                gc["info"]["phase"].as_str().unwrap_or("?"),
                counts["deleted"].as_u64().unwrap_or(0),
                counts["orphans_deleted"].as_u64().unwrap_or(0)
            ));
            bar.tick();
            if gc_passes(&status) > before {
                bar.finish_with_message("gc pass done");
                return Ok(gc.clone());
            }
            if gc["info"]["lease"] == "standby" {
                bar.finish_with_message("this API server is not the collector (another holds the gc lease)");
                return Ok(gc.clone());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(AdminError::WaitedTooLong(WAIT_LIMIT));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The status as an operator reads it: a table per part.
pub fn render_status(status: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!("API server {}\n\n", status["api_server"].as_str().unwrap_or("?")));
    out.push_str(&format!(
        "{:<22} {:<5} {:>9} {:>11} {:>9} {:>22}\n",
        "DATA SERVER", "LIVE", "HEARTBEAT", "FREE", "RECORDS", "SCRUB"
    ));
    for s in status["data_servers"].as_array().into_iter().flatten() {
        let scrub = &s["scrub"];
        let scrub = match (scrub["state"].as_str(), scrub["shards_done"].as_u64(), scrub["shards_total"].as_u64()) {
            (Some(state), Some(done), Some(total)) => format!("{state} {done}/{total}"),
            (Some(state), _, _) => state.to_string(),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{:<22} {:<5} {:>8.1}s {:>11} {:>9} {:>22}\n",
            s["addr"].as_str().unwrap_or("?"),
            if s["live"].as_bool() == Some(true) { "yes" } else { "NO" },
            s["heartbeat_age_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
            crate::client::human_bytes(s["free_bytes"].as_u64().unwrap_or(0)),
            s["stats"]["shards"].as_u64().map_or("-".into(), |n| n.to_string()),
            scrub,
        ));
    }
    out.push_str(&format!(
        "\n{:<10} {:<8} {:>14} {:>7} {:>7}  LAST ERROR\n",
        "WORKER", "STATE", "PROGRESS", "STEPS", "ERRORS"
    ));
    for w in status["workers"].as_array().into_iter().flatten() {
        let progress = match (w["progress"]["done"].as_u64(), w["progress"]["total"].as_u64()) {
            (Some(done), Some(total)) => format!("{done}/{total}"),
            (Some(done), None) => done.to_string(),
            _ => "-".into(),
        };
        let error = w["last_error"][1].as_str().unwrap_or("-");
        out.push_str(&format!(
            "{:<10} {:<8} {:>14} {:>7} {:>7}  {}\n",
            w["name"].as_str().unwrap_or("?"),
            w["state"].as_str().unwrap_or("?"),
            progress,
            w["steps"].as_u64().unwrap_or(0),
            w["errors"].as_u64().unwrap_or(0),
            error,
        ));
    }
    let r = &status["repair"];
    out.push_str(&format!(
        "\nrepair: {} queued, {} running, {} done, {} failed\n",
        r["queued"].as_u64().unwrap_or(0),
        r["running"].as_u64().unwrap_or(0),
        r["done"].as_u64().unwrap_or(0),
        r["failed"].as_u64().unwrap_or(0)
    ));
    let c = &status["contents"];
    out.push_str(&format!(
        "contents: {} live, {} doomed, {} deleting\n",
        c["live"].as_u64().unwrap_or(0),
        c["doomed"].as_u64().unwrap_or(0),
        c["deleting"].as_u64().unwrap_or(0)
    ));
    let lease = |v: &Value| v.as_str().map_or("(none)".to_string(), str::to_string);
    out.push_str(&format!(
        "leases: gc {}, heal {}\n",
        lease(&status["leases"]["gc"]),
        lease(&status["leases"]["heal"])
    ));
    out
}
