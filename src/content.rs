//! The vocabulary shared by every tier: content hashes, redundancy policies and
//! placements. Pure types, no I/O; the bus, the metadata store, the data servers and
//! the API servers all speak in these.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The SHA-256 of an object's content, the key under which its shards are stored.
///
/// Written as 64 lowercase hex digits everywhere inside cairn (file names, bus
/// messages, metadata); only the HTTP digest headers use base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash([u8; 32]);

/// Why a string is not a [`ContentHash`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a SHA-256 hex digest (need 64 lowercase hex digits): {0:?}")]
pub struct BadHash(pub String);

impl ContentHash {
    /// Wraps raw digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ContentHash(bytes)
    }

    /// The raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, the form used in file names, on the bus and in metadata.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The SHA-256 of `data`, for tests and small in-memory payloads.
    pub fn of(data: &[u8]) -> Self {
        use sha2::Digest;
        ContentHash(sha2::Sha256::digest(data).into())
    }
}

impl FromStr for ContentHash {
    type Err = BadHash;

    /// Accepts exactly 64 lowercase hex digits; anything else (upper case included,
    /// so that one hash has one spelling on disk) is refused.
    fn from_str(s: &str) -> Result<Self, BadHash> {
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(BadHash(s.chars().take(80).collect()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| BadHash(s.to_string()))?;
        Ok(ContentHash(out))
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", self.to_hex())
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The index of a shard within an object's k+m shards (0-based; data shards first).
pub type ShardIndex = u32;

/// A redundancy policy: `k` data shards and `m` parity shards per stripe.
///
/// `k = 1` is plain replication (m+1 full copies). The policy is recorded with each
/// piece of content, so changing the cluster's setting never breaks old objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Data shards per stripe; any `k` shards rebuild the content.
    pub k: u8,
    /// Parity shards per stripe: how many shards may be lost.
    pub m: u8,
}

/// Why a string is not a [`Policy`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a redundancy policy (expected K+M with 1 <= K, K+M <= 32): {0:?}")]
pub struct BadPolicy(pub String);

impl Policy {
    /// A single copy and no redundancy: the seed's behaviour.
    pub const SINGLE: Policy = Policy { k: 1, m: 0 };

    /// Total shards per stripe, which is also the number of distinct data servers a
    /// write needs.
    pub fn shards(&self) -> usize {
        self.k as usize + self.m as usize
    }

    /// How many shards must be durable before a write is acknowledged: k+1 when
    /// there is parity (one shard of slack for the next failure), all of them when
    /// there is none.
    pub fn write_quorum(&self) -> usize {
        if self.m == 0 {
            self.shards()
        } else {
            self.k as usize + 1
        }
    }
}

impl FromStr for Policy {
    type Err = BadPolicy;

    fn from_str(s: &str) -> Result<Self, BadPolicy> {
        let bad = || BadPolicy(s.to_string());
        let (k, m) = s.split_once('+').ok_or_else(bad)?;
        let k: u8 = k.trim().parse().map_err(|_| bad())?;
        let m: u8 = m.trim().parse().map_err(|_| bad())?;
        if k == 0 || k as usize + m as usize > 32 {
            return Err(bad());
        }
        Ok(Policy { k, m })
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{}", self.k, self.m)
    }
}

/// Where each shard of a piece of content was written: shard index → data server
/// address (`host:port`). Possibly stale: a reader that finds a holder gone asks the
/// bus instead.
pub type Placement = BTreeMap<ShardIndex, String>;

/// How a piece of content's bytes are stored on the data servers: as they are, or
/// compressed (README, "Compression"). The content's hash and size are always those
/// of the original bytes; only the stored stream, which the shards code, differs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// The original bytes.
    #[default]
    Identity,
    /// The zstd seekable format: independent zstd frames of a fixed number of
    /// original bytes, then a seek table in a skippable frame
    /// ([`crate::codec::seekable`]).
    Zstd,
}

/// An encoding name that is not `identity` or `zstd`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown content encoding {0:?} (expected identity or zstd)")]
pub struct BadEncoding(pub String);

impl Encoding {
    /// The name the metadata store and HTTP (`Content-Encoding`) use.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Zstd => "zstd",
        }
    }
}

impl FromStr for Encoding {
    type Err = BadEncoding;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "identity" => Ok(Encoding::Identity),
            "zstd" => Ok(Encoding::Zstd),
            other => Err(BadEncoding(other.to_string())),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_through_its_name() {
        for e in [Encoding::Identity, Encoding::Zstd] {
            assert_eq!(e.to_string().parse::<Encoding>().unwrap(), e);
        }
        assert!("gzip".parse::<Encoding>().is_err());
    }

    #[test]
    fn hash_round_trips_through_hex() {
        let h = ContentHash::of(b"add test 123");
        let parsed: ContentHash = h.to_hex().parse().unwrap();
        assert_eq!(parsed, h);
    }

    #[test]
    fn hash_refuses_upper_case_short_and_path_like_input() {
        let h = ContentHash::of(b"x").to_hex();
        assert!(h.to_uppercase().parse::<ContentHash>().is_err());
        assert!(h[..63].parse::<ContentHash>().is_err());
        assert!("../../etc/passwd".parse::<ContentHash>().is_err());
    }

    #[test]
    fn policy_parses_and_knows_its_quorum() {
        let p: Policy = "4+2".parse().unwrap();
        assert_eq!((p.k, p.m, p.shards(), p.write_quorum()), (4, 2, 6, 5));
        assert_eq!(Policy::SINGLE.write_quorum(), 1);
        assert!("0+2".parse::<Policy>().is_err());
        assert!("4".parse::<Policy>().is_err());
        assert!("30+3".parse::<Policy>().is_err());
    }
}
