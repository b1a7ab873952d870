//! Throughput of the erasure codec (`cairn::codec`) in bytes of object data, with the
//! hashing and checksumming every written byte also goes through, for context; and
//! what the cluster secret's signature costs one data-server request.
//!
//! Run: `cargo bench --bench codec` (about 35 s of measurement after the build). Results
//! and the machine they were taken on: `BENCH-codec.md`.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use cairn::codec::{decode_stripe, Layout, StripeEncoder, EC_BLOCK};
use cairn::content::Policy;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use sha2::{Digest, Sha256};

/// Object bytes in one full 4+2 stripe: 4 × 64 KiB.
const STRIPE: usize = 4 * EC_BLOCK as usize;

/// The object encoded stripe by stripe in the "run of stripes" benchmark.
const OBJECT: usize = 16 << 20;

fn policy(s: &str) -> Policy {
    s.parse().expect("a valid policy")
}

/// `len` pseudo-random bytes (xorshift64), so that nothing is all zeros.
fn random_bytes(len: usize) -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

fn configure<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(20);
    g
}

fn encode(c: &mut Criterion) {
    let mut g = configure(c, "encode");
    let object = random_bytes(OBJECT);

    let stripe = object.slice(..STRIPE);
    let mut enc = StripeEncoder::new(Layout::new(policy("4+2"), STRIPE as u64));
    g.throughput(Throughput::Bytes(STRIPE as u64));
    g.bench_function("4+2/stripe_256KiB", |b| b.iter(|| enc.encode(black_box(stripe.clone())).unwrap()));

    // As the write path does: one encoder, reused for every stripe of the object.
    let layout = Layout::new(policy("4+2"), OBJECT as u64);
    g.throughput(Throughput::Bytes(OBJECT as u64));
    g.bench_function("4+2/object_16MiB", |b| {
        b.iter(|| {
            let mut enc = StripeEncoder::new(layout);
            for s in 0..layout.stripes() {
                let (start, end) = layout.stripe_span(s);
                black_box(enc.encode(object.slice(start as usize..end as usize)).unwrap());
            }
        })
    });

    // Baseline: replication's "encode" is k + m handles on the same bytes.
    let mut rep = StripeEncoder::new(Layout::new(policy("1+2"), STRIPE as u64));
    g.throughput(Throughput::Bytes(STRIPE as u64));
    g.bench_function("1+2/stripe_256KiB", |b| b.iter(|| rep.encode(black_box(stripe.clone())).unwrap()));
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = configure(c, "decode");
    g.throughput(Throughput::Bytes(STRIPE as u64));
    let layout = Layout::new(policy("4+2"), STRIPE as u64);
    let data = random_bytes(STRIPE);
    let all: Vec<Option<Bytes>> =
        StripeEncoder::new(layout).encode(data.clone()).unwrap().into_iter().map(Some).collect();
    for (name, lost) in [("4+2/all_data", &[][..]), ("4+2/lost_1_data", &[0][..]), ("4+2/lost_2_data", &[0, 1][..])] {
        let mut blocks = all.clone();
        for &i in lost {
            blocks[i] = None;
        }
        assert_eq!(decode_stripe(&layout, 0, &blocks).unwrap(), data, "{name}");
        g.bench_function(name, |b| b.iter(|| decode_stripe(&layout, 0, black_box(&blocks)).unwrap()));
    }
    g.finish();

    // A degraded read rebuilds DEGRADED_RUN stripes per call: the blocks of four
    // stripes end to end, two data shards lost.
    let run = cairn::object::read::DEGRADED_RUN as usize;
    let mut g = configure(c, "decode_run");
    g.throughput(Throughput::Bytes((STRIPE * run) as u64));
    let big = Layout::new(policy("4+2"), (STRIPE * run) as u64);
    let data = random_bytes(STRIPE * run);
    let mut enc = StripeEncoder::new(big);
    let mut shards = vec![Vec::new(); 6];
    for s in 0..run {
        for (i, block) in enc.encode(data.slice(s * STRIPE..(s + 1) * STRIPE)).unwrap().into_iter().enumerate() {
            shards[i].extend_from_slice(&block);
        }
    }
    let blocks: Vec<Option<Bytes>> =
        shards.into_iter().enumerate().map(|(i, s)| (i >= 2).then(|| Bytes::from(s))).collect();
    g.bench_function("4+2/lost_2_data_4_stripes", |b| {
        b.iter(|| cairn::codec::reconstruct(big.policy, 0, black_box(&blocks)).unwrap())
    });
    g.finish();
}

fn hashes(c: &mut Criterion) {
    let mut g = configure(c, "checksum");
    g.throughput(Throughput::Bytes(STRIPE as u64));
    let buf = random_bytes(STRIPE);
    g.bench_function("sha256_256KiB", |b| b.iter(|| Sha256::digest(black_box(&buf[..]))));
    g.bench_function("crc32c_256KiB", |b| b.iter(|| crc32c::crc32c(black_box(&buf[..]))));
    g.finish();
}

/// What the cluster secret costs a data-server request: the API server signs it,
/// the data server verifies it (MAC, clock, nonce), as for a shard read.
fn cluster_signature(c: &mut Criterion) {
    use cairn::secret::{ClusterSecret, Verifier};
    use http::{HeaderMap, HeaderValue, Method};
    let mut g = configure(c, "cluster_signature");
    let secret = ClusterSecret::from_text(&cairn::secret::generate()).expect("a generated secret");
    let verifier = Verifier::new(secret.clone());
    let path = format!("/objects/{}.3", "ab".repeat(32));
    let uri: http::Uri = path.parse().expect("a path");
    let mut base = HeaderMap::new();
    base.insert("x-cairn-policy", HeaderValue::from_static("4+2"));
    base.insert("x-cairn-length", HeaderValue::from_static("1048576"));
    g.bench_function("sign_and_verify_shard_read", |b| {
        b.iter(|| {
            let mut headers = base.clone();
            secret.sign_headers(&Method::GET, &path, &mut headers);
            verifier.verify_request(&Method::GET, &uri, black_box(&headers)).expect("a fresh signature verifies")
        })
    });
    g.finish();
}

criterion_group!(benches, encode, decode, hashes, cluster_signature);
criterion_main!(benches);
