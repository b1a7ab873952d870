//! Property tests over every parser of outside input (issue 13), in `cargo test`:
//! object names, `Range`, the digest headers, `Accept-Encoding`, bus messages and
//! data-server addresses, the data server's header values (hash, policy), shard
//! files and volume records as read back from disk, and the tus headers.
//!
//! Each property says more than "no panic" where there is more to say: encode then
//! parse gives back the value, a parsed range lies inside the object, an accepted
//! name has no `..` segment. The generators mix arbitrary input with input shaped
//! like the real thing, so that the interesting branches are reached. The
//! coverage-guided twins of these tests are the cargo-fuzz targets in `fuzz/`
//! (`tools/fuzz.sh`); HTTP requests are fuzzed in `tests/fuzz_http.rs`.
//!
//! Case counts are chosen so that the whole file runs in a few seconds on two
//! cores; failures are not persisted (a failing case is printed, shrunk).

use std::collections::HashSet;
use std::io::Write;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use proptest::collection::vec;
use proptest::prelude::*;

use cairn::api::{accept, digest, names, tus};
use cairn::bus::{self, Delivery, Heartbeat, LocateReply, LocateRequest, MessageKind};
use cairn::content::{ContentHash, Policy, ShardIndex};
use cairn::data::shardfile::{ShardFileError, ShardReader, ShardWriter};
use cairn::data::volume::record::{self, Kind};
use cairn::object::resumable::ChecksumAlgorithm;
use cairn::range::{self, ByteRange, RangeRequest};
use cairn::secret::{self, ClusterSecret, Verifier};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Text that is sometimes anything and sometimes made of `pieces`, the tokens a
/// parser cares about, so that both the odd and the near-valid inputs are tried.
fn text_of(pieces: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        vec(prop::sample::select(pieces), 0..12).prop_map(|p| p.concat()),
        (vec(prop::sample::select(pieces), 0..8), any::<u64>()).prop_map(|(p, n)| format!("{}{n}", p.concat())),
    ]
}

// ---------------------------------------------------------------- object names

const NAME_PIECES: &[&str] = &["a", "b", "/", ".", "..", "\0", "\n", "\u{7f}", "\u{85}", "é", "日", " ", "%2e", "\\"];

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn an_accepted_name_is_never_a_path_escape(name in text_of(NAME_PIECES)) {
        if names::validate(&name).is_ok() {
            prop_assert!(!name.is_empty() && name.len() <= names::MAX_NAME_LEN);
            prop_assert!(!name.contains('\0'), "NUL in {name:?}");
            prop_assert!(!name.chars().any(char::is_control), "control character in {name:?}");
            prop_assert!(name.split('/').all(|s| s != "." && s != ".."), "dot segment in {name:?}");
        }
    }

    #[test]
    fn names_of_plain_segments_are_accepted(segments in vec("[A-Za-z0-9_.-]{1,12}", 1..8)) {
        let name = segments.join("/");
        let dots = segments.iter().any(|s| s == "." || s == "..");
        prop_assert_eq!(names::validate(&name).is_ok(), !dots, "{:?}", name);
    }
}

// ---------------------------------------------------------------- Range

const RANGE_PIECES: &[&str] = &["bytes=", "bytes", "=", "-", ",", " ", "0", "1", "9", "+", "18446744073709551615", "x"];

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn a_parsed_range_lies_inside_the_object(header in text_of(RANGE_PIECES), len in prop_oneof![0u64..100, any::<u64>()]) {
        match range::parse(&header, len) {
            RangeRequest::Partial(r) => {
                prop_assert!(r.start < r.end && r.end <= len, "{header:?} of {len}: {r:?}");
                prop_assert_eq!(r.len(), r.end - r.start);
            }
            RangeRequest::Full | RangeRequest::Unsatisfiable => {}
        }
    }

    #[test]
    fn a_range_from_its_numbers_parses_back(a in any::<u64>(), b in any::<u64>(), len in 1u64..u64::MAX) {
        let (first, last) = (a.min(b) % len, a.max(b));
        let want = ByteRange { start: first, end: last.saturating_add(1).min(len) };
        prop_assert_eq!(range::parse(&format!("bytes={first}-{last}"), len), RangeRequest::Partial(want));
        prop_assert_eq!(range::parse(&format!("bytes={first}-"), len), RangeRequest::Partial(ByteRange { start: first, end: len }));
        // What Content-Range says of a range is that range again.
        let said = want.content_range(len);
        let spec = said.strip_prefix("bytes ").and_then(|s| s.split_once('/')).map(|(r, _)| r).unwrap();
        prop_assert_eq!(range::parse(&format!("bytes={spec}"), len), RangeRequest::Partial(want));
    }

    #[test]
    fn a_suffix_range_is_the_tail(n in 1u64.., len in 1u64..) {
        let want = ByteRange { start: len - n.min(len), end: len };
        prop_assert_eq!(range::parse(&format!("bytes=-{n}"), len), RangeRequest::Partial(want));
    }

    #[test]
    fn a_start_past_the_end_is_unsatisfiable(len in 0u64..1 << 40, past in 0u64..1 << 40) {
        prop_assert_eq!(range::parse(&format!("bytes={}-", len + past), len), RangeRequest::Unsatisfiable);
    }
}

// ---------------------------------------------------------------- digests

const DIGEST_PIECES: &[&str] =
    &["SHA-256", "sha-256", "md5", "=", ":", ",", " ", "AAAA", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", "=="];

fn hashes() -> impl Strategy<Value = ContentHash> {
    any::<[u8; 32]>().prop_map(ContentHash::from_bytes)
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn a_digest_found_is_spelled_in_the_header(value in text_of(DIGEST_PIECES)) {
        // Base64 decoding is canonical (padding and trailing bits checked), so a
        // digest can only come from its one spelling.
        if let Ok(Some(h)) = digest::from_digest(&value) {
            prop_assert!(value.contains(&digest::to_base64(&h)), "{value:?}");
        }
        if let Ok(Some(h)) = digest::from_content_digest(&value) {
            prop_assert!(value.contains(&format!(":{}:", digest::to_base64(&h))), "{value:?}");
        }
        let _ = digest::expected(Some(&value), Some(&value));
    }

    #[test]
    fn digest_headers_round_trip(h in hashes(), other in hashes(), before in "[a-z0-9-]{1,8}=[A-Za-z0-9]{0,8}") {
        let b64 = digest::to_base64(&h);
        prop_assert_eq!(digest::from_digest(&format!("SHA-256={b64}")), Ok(Some(h)));
        prop_assert_eq!(digest::from_digest(&format!("{before}, sha-256={b64}")), Ok(Some(h)));
        prop_assert_eq!(digest::from_content_digest(&format!("sha-256=:{b64}:")), Ok(Some(h)));
        let (a, b) = (format!("SHA-256={b64}"), format!("sha-256=:{}:", digest::to_base64(&other)));
        let both = digest::expected(Some(&a), Some(&b));
        if h == other {
            prop_assert_eq!(both, Ok(Some(h)));
        } else {
            prop_assert_eq!(both, Err(digest::BadDigest::Conflict));
        }
    }
}

// ---------------------------------------------------------------- Accept-Encoding

const ACCEPT_PIECES: &[&str] =
    &["zstd", "ZSTD", "gzip", "*", ";", "q=", "q", "=", "0", "1", ".", "5", "000", ",", " ", "1.0001"];

fn q_value() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        Just(("1".to_string(), true)),
        Just(("0".to_string(), false)),
        (0u32..=1000).prop_map(|t| (format!("{}.{:03}", t / 1000, t % 1000), t > 0)),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn accept_encoding_never_panics(values in vec(text_of(ACCEPT_PIECES), 0..4)) {
        let _ = accept::accepts_zstd(values.iter().map(String::as_str));
    }

    #[test]
    fn an_explicit_zstd_entry_decides(others in vec("(gzip|br|deflate|identity)(;q=0\\.[0-9])?", 0..4), (q, yes) in q_value(), star in any::<bool>()) {
        let mut items = others.clone();
        items.push(format!("zstd;q={q}"));
        if star {
            items.push("*".into());
        }
        prop_assert_eq!(accept::accepts_zstd([items.join(", ").as_str()]), yes);
        // Without zstd or *, nothing is accepted.
        prop_assert!(!accept::accepts_zstd([others.join(", ").as_str()]));
    }
}

// ---------------------------------------------------------------- bus messages and addresses

fn ipv6_literal() -> impl Strategy<Value = String> {
    (any::<u128>(), 1u16..).prop_map(|(ip, port)| SocketAddrV6::new(Ipv6Addr::from(ip), port, 0, 0).to_string())
}

/// DNS labels of `pattern` that are not IDNA (`xn--…`, any case).
fn plain_label(pattern: &'static str) -> impl Strategy<Value = String> {
    pattern.prop_filter("IDNA labels are refused", |l: &String| !l.to_ascii_lowercase().starts_with("xn--"))
}

fn good_addrs() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<[u8; 4]>(), 1u16..).prop_map(|(ip, port)| SocketAddr::from((ip, port)).to_string()),
        ipv6_literal(),
        // A DNS name's last label starts with a letter (see validate_addr: a URL
        // parser reads a numeric last label as IPv4); no label is IDNA (`xn--`),
        // which validate_addr refuses.
        (
            vec(plain_label("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"), 0..3),
            plain_label("[a-zA-Z]([a-z0-9-]{0,20}[a-z0-9])?"),
            1u16..
        )
            .prop_map(|(mut labels, last, port)| {
                labels.push(last);
                format!("{}:{port}", labels.join("."))
            }),
    ]
}

const ADDR_PIECES: &[&str] = &[
    "a", "1", "255", "999", ".", ":", "[", "]", "::", "-", "@", "/", "?", "#", "%", " ", "http://", "0", "xn--", "XN--",
];

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn an_accepted_address_is_exactly_a_host_and_port(addr in prop_oneof![text_of(ADDR_PIECES), good_addrs()]) {
        if bus::validate_addr(&addr).is_ok() {
            // As the object paths build their URLs: the address must not be able to
            // add a user, a path or a query to it.
            let url = reqwest::Url::parse(&format!("http://{addr}/objects/x")).expect("an accepted address makes a URL");
            prop_assert_eq!(url.path(), "/objects/x");
            prop_assert_eq!(url.username(), "");
            prop_assert!(url.password().is_none() && url.query().is_none() && url.fragment().is_none());
            let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
            prop_assert_eq!(url.port_or_known_default(), Some(port));
            prop_assert!(port > 0);
        }
    }

    #[test]
    fn good_addresses_are_accepted(addr in good_addrs()) {
        prop_assert_eq!(bus::validate_addr(&addr), Ok(()), "{}", addr);
    }

    #[test]
    fn heartbeats_round_trip(addr in good_addrs(), free in any::<u64>()) {
        let hb = Heartbeat { addr, free };
        let body = serde_json::to_vec(&hb).unwrap();
        prop_assert_eq!(bus::decode_heartbeat(&body).unwrap(), hb);
    }

    #[test]
    fn locate_replies_round_trip(addr in good_addrs(), shards in prop::collection::hash_set(any::<ShardIndex>(), 0..40)) {
        let reply = LocateReply { addr, shards: shards.into_iter().collect() };
        let body = serde_json::to_vec(&reply).unwrap();
        prop_assert_eq!(bus::decode_locate_reply(&body).unwrap(), reply);
    }

    #[test]
    fn locate_requests_round_trip(hash in hashes()) {
        let body = serde_json::to_vec(&LocateRequest { hash }).unwrap();
        prop_assert_eq!(serde_json::from_slice::<LocateRequest>(&body).unwrap().hash, hash);
    }

    #[test]
    fn a_forged_bus_message_decodes_to_an_error_or_a_checked_value(body in forged_bus_bodies()) {
        if let Ok(hb) = bus::decode_heartbeat(&body) {
            prop_assert_eq!(bus::validate_addr(&hb.addr), Ok(()));
        }
        if let Ok(reply) = bus::decode_locate_reply(&body) {
            prop_assert_eq!(bus::validate_addr(&reply.addr), Ok(()));
            prop_assert!(reply.shards.len() <= bus::MAX_REPLY_SHARDS);
            prop_assert_eq!(reply.shards.iter().collect::<HashSet<_>>().len(), reply.shards.len());
        }
        if let Ok(request) = serde_json::from_slice::<LocateRequest>(&body) {
            prop_assert_eq!(request.hash.to_hex().parse::<ContentHash>().unwrap(), request.hash);
        }
    }

    /// A closed bus takes nothing but what its own secret signed: any body, with or
    /// without a `CAIRN-SIG` line (garbage, another secret's, or ours moved to
    /// other properties), is refused, and never panics on the way.
    #[test]
    fn a_closed_bus_refuses_every_forged_envelope(
        json in forged_bus_bodies(),
        garbage in "[ -~]{0,80}",
        reply_to in proptest::option::of("[a-z0-9.-]{0,20}"),
        id in proptest::option::of("[a-z0-9-]{0,36}"),
        which in 0u8..4,
    ) {
        let ours = ClusterSecret::from_text("our cluster secret, thirty-two bytes or more").unwrap();
        let theirs = ClusterSecret::from_text("another cluster's secret, thirty-two bytes+").unwrap();
        let verifier = Verifier::new(ours.clone());
        let body = match which {
            0 => json.clone(),
            1 => [secret::BUS_PREFIX, garbage.as_bytes(), b"\n", &json].concat(),
            2 => secret::seal_envelope(&theirs, &[b"heartbeat"], &json),
            // Ours, but for other properties than the delivery carries.
            _ => secret::seal_envelope(&ours, &[b"locate", b"elsewhere", b"other-id"], &json),
        };
        let d = Delivery { body: body.into(), reply_to, correlation_id: id };
        for kind in [MessageKind::Heartbeat, MessageKind::LocateRequest, MessageKind::LocateReply] {
            prop_assert!(bus::authenticate(Some(&verifier), kind, &d).is_err());
        }
    }

    /// What our secret signed for a kind and its properties is taken once, as it was.
    #[test]
    fn a_sealed_message_opens_to_its_json_once(json in vec(any::<u8>(), 0..200), id in "[a-z0-9-]{1,36}") {
        let ours = ClusterSecret::from_text("our cluster secret, thirty-two bytes or more").unwrap();
        let verifier = Verifier::new(ours.clone());
        let body = secret::seal_envelope(&ours, &[b"locate-reply", id.as_bytes()], &json);
        let d = Delivery { body: body.into(), reply_to: None, correlation_id: Some(id) };
        prop_assert_eq!(bus::authenticate(Some(&verifier), MessageKind::LocateReply, &d).unwrap(), &json[..]);
        prop_assert!(bus::authenticate(Some(&verifier), MessageKind::LocateReply, &d).is_err(), "a replay");
    }
}

#[test]
fn a_url_parser_reads_a_numeric_last_label_as_ipv4() {
    // Why validate_addr refuses `a.0:1` and `0x7f.1:80` (found by the property
    // above): one is no URL at all, the other dials somewhere else.
    assert!(reqwest::Url::parse("http://a.0:1/").is_err());
    let url = reqwest::Url::parse("http://0x7f.1:80/").unwrap();
    assert_eq!(url.host_str(), Some("127.0.0.1"));
    for addr in ["a.0:1", "0x7f.1:80"] {
        assert!(bus::validate_addr(addr).is_err(), "{addr}");
    }
}

/// Bodies that are JSON of the bus messages with fields of the wrong type, range
/// or shape, or bytes that are not JSON at all.
fn forged_bus_bodies() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        Just("null".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("18446744073709551616".to_string()),
        text_of(ADDR_PIECES).prop_map(|s| serde_json::to_string(&s).unwrap()),
        good_addrs().prop_map(|s| serde_json::to_string(&s).unwrap()),
        vec(any::<i64>(), 0..300).prop_map(|v| serde_json::to_string(&v).unwrap()),
        "[0-9a-fA-F]{60,68}".prop_map(|s| format!("\"{s}\"")),
    ];
    let key = prop::sample::select(&["addr", "free", "shards", "hash", "extra", "ADDR", ""][..]);
    prop_oneof![
        vec(any::<u8>(), 0..64),
        vec((key, value), 0..5).prop_map(|fields| {
            let inner: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", inner.join(",")).into_bytes()
        }),
    ]
}

// ---------------------------------------------------------------- data-server header values

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn policies_round_trip(k in 1u8..=32, m in 0u8..=31) {
        let p = Policy { k, m };
        let parsed = p.to_string().parse::<Policy>();
        if k as usize + m as usize <= 32 {
            prop_assert_eq!(parsed, Ok(p));
        } else {
            prop_assert!(parsed.is_err());
        }
    }

    #[test]
    fn a_parsed_policy_is_plausible(text in text_of(&["+", "0", "1", "3", "32", "33", "255", "256", " ", "-", "k"])) {
        if let Ok(p) = text.parse::<Policy>() {
            prop_assert!(p.k >= 1 && p.shards() <= 32, "{text:?}: {p:?}");
        }
    }

    #[test]
    fn a_hash_has_one_spelling(text in prop_oneof![any::<String>(), "[0-9a-fA-F]{63,65}"], h in hashes()) {
        if let Ok(parsed) = text.parse::<ContentHash>() {
            prop_assert_eq!(parsed.to_hex(), text);
        }
        prop_assert_eq!(h.to_hex().parse::<ContentHash>().unwrap(), h);
        let upper = h.to_hex().to_uppercase();
        prop_assert_eq!(upper.parse::<ContentHash>().is_ok(), !upper.bytes().any(|b| b.is_ascii_alphabetic()));
    }
}

// ---------------------------------------------------------------- shard files on disk

fn write_shard(path: &std::path::Path, data: &[u8], policy: Option<Policy>) {
    let mut w = ShardWriter::create(path, policy).unwrap();
    w.write(data).unwrap();
    w.finish().unwrap();
}

/// Everything the file serves, or the first error.
fn read_back(path: &std::path::Path) -> Result<Vec<u8>, ShardFileError> {
    let mut reader = ShardReader::open(path)?;
    let mut out = Vec::new();
    reader.read_range(0, u64::MAX, |b| {
        out.extend_from_slice(&b);
        true
    })?;
    assert_eq!(out.len() as u64, reader.data_len(), "a whole read serves exactly data_len bytes");
    Ok(out)
}

proptest! {
    #![proptest_config(config(200))]

    #[test]
    fn a_damaged_shard_file_serves_its_data_or_an_error(data in vec(any::<u8>(), 0..3000), at in any::<prop::sample::Index>(), flip in 1u8..) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        write_shard(&path, &data, Some(Policy { k: 4, m: 2 }));
        prop_assert_eq!(read_back(&path).unwrap(), data.clone());
        let mut raw = std::fs::read(&path).unwrap();
        let i = at.index(raw.len());
        raw[i] ^= flip;
        std::fs::write(&path, &raw).unwrap();
        // CRC-32C catches every change confined to one byte; what is served is the
        // original or nothing.
        if let Ok(served) = read_back(&path) {
            prop_assert_eq!(served, data);
        }
    }

    #[test]
    fn a_crafted_shard_header_is_refused_or_read_without_panic(
        block_size in prop_oneof![Just(0u32), 1u32..64, 1u32..=64 << 20, any::<u32>()],
        (k, m) in prop_oneof![Just((0u8, 0u8)), (1u8..=8, 0u8..=4), any::<(u8, u8)>()],
        reserved in prop_oneof![3 => Just(0u16), 1 => any::<u16>()],
        data_len in prop_oneof![0u64..300, any::<u64>(), (u64::MAX - 64)..],
        tail in vec(any::<u8>(), 0..300),
    ) {
        // A header with a good checksum, as a hostile or buggy writer could leave.
        let mut h = Vec::with_capacity(32);
        h.extend_from_slice(b"CAIRNSH1");
        h.extend_from_slice(&block_size.to_le_bytes());
        h.extend_from_slice(&[k, m]);
        h.extend_from_slice(&reserved.to_le_bytes());
        h.extend_from_slice(&data_len.to_le_bytes());
        h.extend_from_slice(&crc32c::crc32c(&h[..24]).to_le_bytes());
        h.extend_from_slice(&[0; 4]);
        h.extend_from_slice(&tail);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        std::fs::File::create(&path).unwrap().write_all(&h).unwrap();
        if let Ok(served) = read_back(&path) {
            prop_assert!(served.len() as u64 <= tail.len() as u64);
        }
    }
}

// ---------------------------------------------------------------- volume records on disk

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn volume_records_round_trip(h in hashes(), shard in any::<ShardIndex>(), k in 1u8..=16, m in 0u8..=16,
                                 data in vec(any::<u8>(), 0..200), volume in any::<u32>(), offset in any::<u32>()) {
        let policy = Some(Policy { k, m });
        let mut out = Vec::new();
        record::encode_shard(&mut out, &h, shard, policy, &data);
        prop_assert_eq!(out.len() as u64, record::record_len(data.len() as u32));
        let header = record::decode_header(&out).unwrap();
        prop_assert_eq!((header.kind, header.hash, header.shard, header.policy), (Kind::Shard, h, shard, policy));
        prop_assert_eq!(record::check_payload(&header, &out[record::HEADER_LEN..record::HEADER_LEN + data.len()]), Ok(()));
        let mut t = Vec::new();
        record::encode_tombstone(&mut t, &h, shard, volume, offset);
        prop_assert_eq!(record::decode_header(&t).unwrap().kind, Kind::Tombstone { volume, offset });
        prop_assert_eq!(record::parse_volume_header(&record::volume_header(volume)), Some(volume));
    }

    #[test]
    fn record_bytes_never_panic(bytes in vec(any::<u8>(), 0..128), fix_crc in any::<bool>()) {
        let mut bytes = bytes;
        if fix_crc && bytes.len() >= record::HEADER_LEN {
            bytes[..4].copy_from_slice(b"CVR1");
            let crc = crc32c::crc32c(&bytes[..56]);
            bytes[56..60].copy_from_slice(&crc.to_le_bytes());
        }
        if let Ok(h) = record::decode_header(&bytes) {
            prop_assert!(h.policy.is_none_or(|p| p.k >= 1 && p.shards() <= 32));
            let _ = record::check_payload(&h, &bytes[record::HEADER_LEN..]);
        }
        let _ = record::parse_volume_header(&bytes);
    }
}

// ---------------------------------------------------------------- tus headers

const METADATA_PIECES: &[&str] = &["name", "filename", "bucket", " ", ",", "YQ==", "Yg==", "!", "=", "a", ""];

fn headers(pairs: &[(&'static str, String)]) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(HeaderName::from_static(name), HeaderValue::from_str(value).ok()?);
    }
    Some(map)
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn upload_metadata_round_trips(pairs in prop::collection::btree_map("[A-Za-z0-9_.-]{1,12}", vec(any::<u8>(), 0..40), 0..6)) {
        let value: Vec<String> = pairs
            .iter()
            .map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k} {}", STANDARD.encode(v)) })
            .collect();
        let parsed = tus::parse_metadata(&value.join(",")).unwrap();
        prop_assert_eq!(parsed, pairs.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn upload_metadata_never_panics(value in text_of(METADATA_PIECES)) {
        if let Ok(pairs) = tus::parse_metadata(&value) {
            let keys: HashSet<&String> = pairs.iter().map(|(k, _)| k).collect();
            prop_assert_eq!(keys.len(), pairs.len(), "keys are unique");
            prop_assert!(pairs.iter().all(|(k, _)| !k.is_empty() && !k.contains([' ', ','])));
        }
    }

    #[test]
    fn upload_checksums_round_trip(alg in prop::sample::select(&["sha1", "SHA256", "md5"][..]), digest in vec(any::<u8>(), 1..64)) {
        let map = headers(&[("upload-checksum", format!("{alg} {}", STANDARD.encode(&digest)))]).unwrap();
        let checksum = tus::checksum(&map).unwrap().unwrap();
        prop_assert_eq!(checksum.algorithm, ChecksumAlgorithm::from_name(alg).unwrap());
        prop_assert_eq!(checksum.digest, digest);
    }

    #[test]
    fn tus_header_values_never_panic(
        sum in text_of(&["sha1", "sha256", "md5", " ", "YQ==", "!"]),
        length in text_of(&["0", "1", " ", "-", "+"]),
        defer in text_of(&["1", "0", " "]),
        max in any::<u64>(),
    ) {
        if let Some(map) = headers(&[("upload-checksum", sum)]) {
            let _ = tus::checksum(&map);
        }
        if let Some(map) = headers(&[("upload-length", length), ("upload-defer-length", defer)]) {
            match tus::upload_length(&map, max) {
                Ok(Some(n)) => prop_assert!(n <= max),
                Ok(None) => prop_assert!(map["upload-defer-length"].to_str().unwrap().trim() == "1"),
                Err(_) => {}
            }
        }
    }
}
