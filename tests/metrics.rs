//! `GET /metrics` on an API server and a data server of an in-process cluster:
//! what a few PUTs, GETs and a 404 leave in the Prometheus text, read back with a
//! real text-format parser.

mod common;

use std::time::{Duration, Instant};

use cairn::telemetry;
use common::{pattern, start_with, TestCluster};
use prom_text_format_parser::{Scrape, ValueType};

/// One scrape: its text and what the parser made of it.
struct Metrics {
    text: String,
    scrape: Scrape,
}

impl Metrics {
    /// Fetches and parses `/metrics` at `base`, checking the content type and that
    /// every sample line of the text became a sample.
    async fn fetch(t: &TestCluster, base: &str) -> Metrics {
        let r = t.http.get(format!("{base}/metrics")).send().await.expect("GET /metrics sent");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], telemetry::CONTENT_TYPE);
        let text = r.text().await.expect("metrics text");
        let scrape = Scrape::parse(&text).unwrap_or_else(|e| panic!("metrics text does not parse: {e:?}\n{text}"));
        let lines = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).count();
        let samples: usize = scrape.metrics.iter().map(|m| m.samples.len()).sum();
        assert_eq!(samples, lines, "every sample line parses into a sample");
        Metrics { text, scrape }
    }

    /// The sum of the plain samples (not a histogram's sum or count) of `name`
    /// whose labels include every pair of `labels`; `None` when there is none.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels, ValueType::Sample)
    }

    /// A histogram's `_count` samples, summed as [`Metrics::sum`] does.
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels, ValueType::Count)
    }

    fn matching(&self, name: &str, labels: &[(&str, &str)], kind: ValueType) -> Option<f64> {
        let values: Vec<f64> = self
            .scrape
            .metrics
            .iter()
            .filter(|m| m.name == name)
            .flat_map(|m| &m.samples)
            .filter(|s| s.value.value_type == kind)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.iter().any(|l| l.key == *k && l.value == *v)))
            .map(|s| s.value.value.as_f64())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }
}

#[tokio::test]
async fn puts_gets_and_a_404_show_up_in_api_and_data_server_metrics() {
    // Small objects (below 64 KiB) as three copies, large ones 4+2 through the
    // streaming path: 3 + 3 + 3 + 6 shards.
    let t = start_with("4+2", "1+2", 64 * 1024, 6).await;
    let objects =
        [("a", pattern(1000, 1)), ("b", pattern(4096, 2)), ("c", pattern(30_000, 3)), ("big", pattern(300_000, 4))];
    let shards = 3 + 3 + 3 + 6;
    let put_bytes: usize = objects.iter().map(|(_, b)| b.len()).sum();
    for (name, body) in &objects {
        assert_eq!(t.put(name, body.clone()).await.status(), 200, "PUT {name}");
    }
    for (name, body) in &objects {
        let got = t.get(name).await;
        assert_eq!(got.status(), 200, "GET {name}");
        assert_eq!(&got.bytes().await.unwrap()[..], &body[..]);
    }
    assert_eq!(t.get("never-put").await.status(), 404);

    let api_server = t.cluster.api_addr.to_string();
    let api = [("role", "api"), ("server", api_server.as_str())];
    let objects_route = ("route", "/objects/{*name}");
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
        api.iter().copied().chain(extra.iter().copied()).chain([objects_route]).collect()
    };

    // Shards written after the quorum finish in the background: wait for them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = Metrics::fetch(&t, &t.base).await;
        let written = m.sum(telemetry::SHARDS_WRITTEN, &api).unwrap_or(0.0);
        if written >= shards as f64 || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(m.sum(telemetry::SHARDS_WRITTEN, &api), Some(shards as f64), "{}", m.text);
    let puts_ok = m.sum(telemetry::HTTP_REQUESTS, &with(&[("method", "PUT"), ("status", "200")]));
    assert!(puts_ok >= Some(objects.len() as f64), "PUT 200s: {puts_ok:?}\n{}", m.text);
    let gets_ok = m.sum(telemetry::HTTP_REQUESTS, &with(&[("method", "GET"), ("status", "200")]));
    assert!(gets_ok >= Some(objects.len() as f64), "GET 200s: {gets_ok:?}");
    let missing = m.sum(telemetry::HTTP_REQUESTS, &with(&[("method", "GET"), ("status", "404")]));
    assert_eq!(missing, Some(1.0), "the 404 is counted once");
    let bytes_in = m.sum(telemetry::HTTP_REQUEST_BODY_BYTES, &with(&[("method", "PUT")]));
    assert!(bytes_in >= Some(put_bytes as f64), "bytes in {bytes_in:?} < {put_bytes}");
    let bytes_out = m.sum(telemetry::HTTP_RESPONSE_BODY_BYTES, &with(&[("method", "GET")]));
    assert!(bytes_out >= Some(put_bytes as f64), "bytes out {bytes_out:?} < {put_bytes}");
    let timed = m.count(telemetry::HTTP_REQUEST_DURATION, &with(&[("method", "GET")]));
    assert!(timed >= Some(objects.len() as f64 + 1.0), "GETs timed: {timed:?}");
    assert_eq!(m.sum(telemetry::LIVE_DATA_SERVERS, &api), Some(t.cluster.data_addrs.len() as f64));
    assert_eq!(m.sum(telemetry::REPAIR_QUEUE_DEPTH, &api), Some(0.0));
    assert!(!m.text.contains("never-put"), "raw paths never become labels");

    // A data server's /metrics shows the process's series, every data server's;
    // each updates its own store gauges when scraped, so scrape them all and read
    // the last scrape.
    let mut scrapes = Vec::new();
    for addr in &t.cluster.data_addrs {
        scrapes.push(Metrics::fetch(&t, &format!("http://{addr}")).await);
    }
    let d = scrapes.pop().expect("data servers");
    let data = [("role", "data")];
    assert_eq!(d.sum(telemetry::SHARDS_WRITTEN, &data), Some(shards as f64), "{}", d.text);
    let stored = d.sum(telemetry::SHARDS_STORED, &data);
    assert_eq!(stored, Some(shards as f64), "every shard is small enough for a volume");
    for addr in &t.cluster.data_addrs {
        let server = addr.to_string();
        let this = [("role", "data"), ("server", server.as_str())];
        let free = d.sum(telemetry::DISK_FREE_BYTES, &this);
        assert!(free > Some(0.0), "free bytes of {server}: {free:?}");
    }
    let first = t.cluster.data_addrs[0].to_string();
    let shard_puts = d.sum(
        telemetry::HTTP_REQUESTS,
        &[("role", "data"), ("route", "/objects/{file}"), ("method", "PUT"), ("status", "200")],
    );
    assert_eq!(shard_puts, Some(9.0), "one-shot shard PUTs of the small objects");
    let commits = d.sum(telemetry::HTTP_REQUESTS, &[("role", "data"), ("route", "/temp/{id}"), ("method", "PUT")]);
    assert_eq!(commits, Some(6.0), "temp commits of the large object");
    assert!(d.sum(telemetry::HTTP_REQUEST_BODY_BYTES, &[("role", "data"), ("server", first.as_str())]) > Some(0.0));
    t.cluster.shutdown().await;
}
