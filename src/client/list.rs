//! `cairn ls`, `cairn versions`, `cairn stat` and `cairn rm`: the small requests.
//! Each prints a human table by default and, with `--json`, exactly what the server
//! described (`ls` and `versions`: a JSON array of its version objects, every page
//! of `ls` joined; `stat` and `rm`: one object).

use super::{
    human_bytes, human_time, print_json, reason, refused_or_unavailable, ClientError, ClientOptions, Server,
    VersionInfo,
};
use crate::api::names::encode_path;

/// `cairn ls [PREFIX]`.
#[derive(Clone, Debug, clap::Args)]
pub struct LsArgs {
    /// Only names starting with this.
    #[arg(default_value = "")]
    pub prefix: String,
    /// Names asked for per request (the server caps it at 1000); every page is listed.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: u32,
    #[command(flatten)]
    pub options: ClientOptions,
}

/// A subcommand about one name.
#[derive(Clone, Debug, clap::Args)]
pub struct NameArgs {
    /// The object's name.
    pub name: String,
    #[command(flatten)]
    pub options: ClientOptions,
}

/// `cairn stat NAME`.
#[derive(Clone, Debug, clap::Args)]
pub struct StatArgs {
    /// The object's name.
    pub name: String,
    /// That version instead of the current one.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub version: Option<u64>,
    #[command(flatten)]
    pub options: ClientOptions,
}

#[derive(serde::Deserialize)]
struct Page {
    objects: Vec<VersionInfo>,
    truncated: bool,
    next: Option<String>,
}

/// Lists every page of names under the prefix.
pub async fn ls(args: LsArgs) -> Result<(), ClientError> {
    let server = Server::new(&args.options)?;
    let what = format!("listing {:?}", args.prefix);
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = server
            .base
            .join("/objects/")
            .map_err(|e| ClientError::BadEndpoint { endpoint: server.endpoint.clone(), detail: e.to_string() })?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("prefix", &args.prefix).append_pair("limit", &args.page_size.to_string());
            if let Some(a) = &after {
                q.append_pair("after", a);
            }
        }
        let resp = server.send(&what, true, || server.http.get(url.clone())).await?;
        let page: Page = json_answer(&server, &what, resp).await?;
        all.extend(page.objects);
        match (page.truncated, page.next) {
            (true, Some(next)) if Some(&next) != after.as_ref() => after = Some(next),
            (true, _) => {
                return Err(ClientError::BadAnswer { what, detail: "a truncated page without a new `next`".into() })
            }
            (false, _) => break,
        }
    }
    if args.options.json {
        print_json(&all);
    } else {
        print!("{}", table(&all));
    }
    Ok(())
}

/// Every version of a name, oldest first.
pub async fn versions(args: NameArgs) -> Result<(), ClientError> {
    super::check_name(&args.name)?;
    let server = Server::new(&args.options)?;
    let url = server.url(&format!("/versions/{}", encode_path(&args.name)));
    let resp = server.send(&args.name, true, || server.http.get(&url)).await?;
    let resp = success(&server, &args.name, resp).await?;
    // The body is streamed by the server; a break in it is a retryable failure,
    // but versions are few enough to fetch again whole.
    let text = resp.text().await.map_err(|e| server.unreachable(&args.name, 1, crate::report::error_chain(&e)))?;
    let mut all = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: VersionInfo = serde_json::from_str(line)
            .map_err(|e| ClientError::BadAnswer { what: args.name.clone(), detail: format!("a version line: {e}") })?;
        all.push(v);
    }
    if args.options.json {
        print_json(&all);
    } else {
        print!("{}", table(&all));
    }
    Ok(())
}

/// One version's description: `HEAD` for the version number, then that version's
/// line of `/versions/<name>` for the rest (created time).
pub async fn stat(args: StatArgs) -> Result<(), ClientError> {
    super::check_name(&args.name)?;
    let server = Server::new(&args.options)?;
    let info = describe(&server, &args.name, args.version).await?;
    if args.options.json {
        print_json(&info);
    } else {
        print!("{}", table(std::slice::from_ref(&info)));
    }
    Ok(())
}

/// The server's description of `name` (its current version, or `version`).
pub(crate) async fn describe(server: &Server, name: &str, version: Option<u64>) -> Result<VersionInfo, ClientError> {
    let url = server.object_url(name, version);
    let resp = server.send(name, true, || server.http.head(&url)).await?;
    let resp = success(server, name, resp).await?;
    let number = super::get::header_version(&resp)
        .ok_or_else(|| ClientError::BadAnswer { what: name.to_string(), detail: "no x-cairn-version".into() })?;
    let url = server.url(&format!("/versions/{}?after={}&limit=1", encode_path(name), number - 1));
    let resp = server.send(name, true, || server.http.get(&url)).await?;
    let resp = success(server, name, resp).await?;
    let text = resp.text().await.map_err(|e| server.unreachable(name, 1, crate::report::error_chain(&e)))?;
    let line = text.lines().next().unwrap_or_default();
    serde_json::from_str(line)
        .map_err(|e| ClientError::BadAnswer { what: name.to_string(), detail: format!("a version line: {e}") })
}

/// Adds a tombstone version.
pub async fn rm(args: NameArgs) -> Result<(), ClientError> {
    super::check_name(&args.name)?;
    let server = Server::new(&args.options)?;
    let url = server.object_url(&args.name, None);
    let resp = server.send(&args.name, false, || server.http.delete(&url)).await?;
    let info: VersionInfo = json_answer(&server, &args.name, resp).await?;
    if args.options.json {
        print_json(&info);
    } else {
        println!("deleted {} (tombstone version {})", info.name, info.version);
    }
    Ok(())
}

/// The response if it is a success, else its error.
pub(crate) async fn success(
    server: &Server,
    what: &str,
    resp: reqwest::Response,
) -> Result<reqwest::Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    Err(refused_or_unavailable(server, what, status, reason(resp).await))
}

/// A successful response's JSON body.
pub(crate) async fn json_answer<T: for<'de> serde::Deserialize<'de>>(
    server: &Server,
    what: &str,
    resp: reqwest::Response,
) -> Result<T, ClientError> {
    let resp = success(server, what, resp).await?;
    let text = resp.text().await.map_err(|e| server.unreachable(what, 1, crate::report::error_chain(&e)))?;
    serde_json::from_str(&text).map_err(|e| ClientError::BadAnswer { what: what.to_string(), detail: e.to_string() })
}

/// Versions as a table: name, version, size, created (UTC), hash (first 16 digits).
pub fn table(rows: &[VersionInfo]) -> String {
    let width = rows.iter().map(|r| r.name.chars().count()).max().unwrap_or(4).max(4);
    let mut out = format!("{:<width$}  {:>7}  {:>10}  {:<19}  HASH\n", "NAME", "VERSION", "SIZE", "CREATED (UTC)");
    for r in rows {
        let hash = match (&r.hash, r.deleted) {
            (_, true) => "(deleted)".to_string(),
            (Some(h), false) => h.chars().take(16).collect(),
            (None, false) => "-".to_string(),
        };
        out.push_str(&format!(
            "{:<width$}  {:>7}  {:>10}  {:<19}  {hash}\n",
            r.name,
            r.version,
            human_bytes(r.size),
            human_time(r.created)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_shows_every_row_and_marks_tombstones() {
        let live = VersionInfo {
            name: "photos/cat.jpg".into(),
            version: 2,
            size: 2048,
            hash: Some("ab".repeat(32)),
            created: 1_700_000_000_000,
            deleted: false,
        };
        let gone = VersionInfo { version: 3, size: 0, hash: None, deleted: true, ..live.clone() };
        let text = table(&[live, gone]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].contains("2.0 KiB") && lines[1].contains("abababababababab"), "{text}");
        assert!(lines[2].contains("(deleted)"), "{text}");
        assert!(lines[1].contains("2023-11-14 22:13:20"), "{text}");
    }
}
