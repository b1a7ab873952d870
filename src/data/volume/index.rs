//! The in-memory index of a volume store: (content hash, shard) → where its record
//! lives, and the checkpoint file that lets a restart skip scanning every volume.
//!
//! **Memory.** An entry is 31 bytes: the first 16 bytes of the content hash and the
//! shard index (a key of 17 bytes), the volume, offset and payload length (4 bytes
//! each) and the policy (2). It lives in a `BTreeMap`, whose nodes hold 11 entries
//! and are about two thirds full with random keys: 50.6 bytes per small shard
//! measured (RSS growth for a million random keys), 48 MiB per million, with no rehash that doubles it at a bad moment, and ordered,
//! so that a checkpoint is written (and read back) in key order. A 128-bit prefix of
//! a SHA-256 is unique among any set of contents anyone will store (a collision
//! takes about 2^64 work to find); every read checks the record's full hash anyway,
//! and a write that would shadow another content under the same prefix is refused.
//!
//! **Checkpoint.** `volumes/index`: a snapshot of the index and, for each volume, the
//! offset up to which the snapshot reflects its records. A restart loads it and
//! scans each volume only from there. Written to `index.tmp`, fsynced, renamed over
//! `index`, directory fsynced: a crash leaves the old checkpoint or the new one, and
//! a missing or corrupt one only costs a full scan.
//!
//! ```text
//! "CAIRNIX1" | volumes u32 | entries u64
//! per volume: id u32 | scanned-to u64
//! per entry:  hash prefix [16] | shard u8 | volume u32 | offset u32 | len u32 | k u8 | m u8   (31 bytes)
//! crc32c of everything before it, u32
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};

use crate::content::{ContentHash, Policy, ShardIndex};

/// An index key: the first 16 bytes of the content hash and the shard index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    prefix: [u8; 16],
    shard: u8,
}

impl Key {
    /// The key of `hash.shard`, or `None` for a shard index above 255 (no policy has
    /// one: k+m is at most 32).
    pub fn new(hash: &ContentHash, shard: ShardIndex) -> Option<Key> {
        let mut prefix = [0u8; 16];
        prefix.copy_from_slice(&hash.as_bytes()[..16]);
        Some(Key { prefix, shard: u8::try_from(shard).ok()? })
    }

    /// The shard index.
    pub fn shard(&self) -> ShardIndex {
        ShardIndex::from(self.shard)
    }

    /// The first 16 bytes of the content hash.
    pub fn prefix(&self) -> &[u8; 16] {
        &self.prefix
    }

    /// The greatest key at or before `hash.shard` in (hash, shard) order: the key
    /// itself, or for a shard index above 255 (never a key) the last key of `hash`.
    /// Keys after it are exactly the names after `hash.shard`.
    pub fn at_or_before(hash: &ContentHash, shard: ShardIndex) -> Key {
        let mut prefix = [0u8; 16];
        prefix.copy_from_slice(&hash.as_bytes()[..16]);
        Key { prefix, shard: u8::try_from(shard).unwrap_or(u8::MAX) }
    }
}

/// Where a record lives and what it holds, packed into 14 bytes of alignment 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    volume: [u8; 4],
    offset: [u8; 4],
    len: [u8; 4],
    k: u8,
    m: u8,
}

impl Loc {
    /// A record of `len` payload bytes at `offset` in `volume`, cut under `policy`.
    pub fn new(volume: u32, offset: u32, len: u32, policy: Option<Policy>) -> Loc {
        let (k, m) = policy.map_or((0, 0), |p| (p.k, p.m));
        Loc { volume: volume.to_le_bytes(), offset: offset.to_le_bytes(), len: len.to_le_bytes(), k, m }
    }

    /// The volume.
    pub fn volume(&self) -> u32 {
        u32::from_le_bytes(self.volume)
    }

    /// The record's offset in its volume.
    pub fn offset(&self) -> u32 {
        u32::from_le_bytes(self.offset)
    }

    /// The shard's length (the record's payload).
    pub fn data_len(&self) -> u32 {
        u32::from_le_bytes(self.len)
    }

    /// The shard's policy, when its writer said.
    pub fn policy(&self) -> Option<Policy> {
        (self.k > 0).then_some(Policy { k: self.k, m: self.m })
    }

    /// Bytes the record takes in its volume.
    pub fn record_len(&self) -> u64 {
        super::record::record_len(self.data_len())
    }
}

/// Live records per volume, kept with the index so compaction knows what is dead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// Live shard records.
    pub records: u64,
    /// Their bytes, headers and padding included.
    pub bytes: u64,
}

/// The index: every live small shard's location, and live bytes per volume.
#[derive(Debug, Default)]
pub struct Index {
    map: BTreeMap<Key, Loc>,
    live: HashMap<u32, Live>,
}

/// Approximate heap bytes per entry (see the module doc).
pub const BYTES_PER_ENTRY: u64 = 51;

impl Index {
    /// Where `key`'s record lives.
    pub fn get(&self, key: &Key) -> Option<Loc> {
        self.map.get(key).copied()
    }

    /// Points `key` at `loc`; returns what it pointed at before.
    pub fn insert(&mut self, key: Key, loc: Loc) -> Option<Loc> {
        let old = self.map.insert(key, loc);
        if let Some(old) = old {
            self.forget(old);
        }
        let live = self.live.entry(loc.volume()).or_default();
        live.records += 1;
        live.bytes += loc.record_len();
        old
    }

    /// Removes `key` when it points at (`volume`, `offset`); true when it did.
    pub fn remove_at(&mut self, key: &Key, volume: u32, offset: u32) -> bool {
        match self.map.get(key) {
            Some(loc) if loc.volume() == volume && loc.offset() == offset => {
                let loc = *loc;
                self.map.remove(key);
                self.forget(loc);
                true
            }
            _ => false,
        }
    }

    fn forget(&mut self, loc: Loc) {
        if let Some(live) = self.live.get_mut(&loc.volume()) {
            live.records = live.records.saturating_sub(1);
            live.bytes = live.bytes.saturating_sub(loc.record_len());
        }
    }

    /// The shard indices stored for `hash`, in order.
    pub fn shards_of(&self, hash: &ContentHash) -> Vec<ShardIndex> {
        let Some(lo) = Key::new(hash, 0) else { return Vec::new() };
        let hi = Key { shard: u8::MAX, ..lo };
        self.map.range(lo..=hi).map(|(k, _)| k.shard()).collect()
    }

    /// Up to `limit` entries in key order, after `after` (exclusive) or from the
    /// start. Key order is (hash, shard) order: the prefix is the hash's first
    /// bytes, and two contents never share a prefix in one index.
    pub fn range_after(&self, after: Option<Key>, limit: usize) -> Vec<(Key, Loc)> {
        use std::ops::Bound;
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.map.range((from, Bound::Unbounded)).take(limit).map(|(k, l)| (*k, *l)).collect()
    }

    /// Live records and bytes in `volume`.
    pub fn live(&self, volume: u32) -> Live {
        self.live.get(&volume).copied().unwrap_or_default()
    }

    /// Entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Drops every entry in `volume` (its file is gone); returns how many.
    pub fn drop_volume(&mut self, volume: u32) -> usize {
        let before = self.map.len();
        self.map.retain(|_, loc| loc.volume() != volume);
        self.live.remove(&volume);
        before - self.map.len()
    }

    /// Writes the checkpoint of this index, valid up to `scanned` (volume → offset).
    pub fn write_checkpoint(&self, scanned: &BTreeMap<u32, u64>, out: impl Write) -> io::Result<()> {
        let mut out = CrcWriter { inner: io::BufWriter::with_capacity(1 << 20, out), crc: 0 };
        out.write_all(CHECKPOINT_MAGIC)?;
        out.write_all(&(scanned.len() as u32).to_le_bytes())?;
        out.write_all(&(self.map.len() as u64).to_le_bytes())?;
        for (id, end) in scanned {
            out.write_all(&id.to_le_bytes())?;
            out.write_all(&end.to_le_bytes())?;
        }
        let mut entry = [0u8; ENTRY_LEN];
        for (key, loc) in &self.map {
            entry[..16].copy_from_slice(&key.prefix);
            entry[16] = key.shard;
            entry[17..21].copy_from_slice(&loc.volume);
            entry[21..25].copy_from_slice(&loc.offset);
            entry[25..29].copy_from_slice(&loc.len);
            entry[29] = loc.k;
            entry[30] = loc.m;
            out.write_all(&entry)?;
        }
        let crc = out.crc;
        let mut inner = out.inner;
        inner.write_all(&crc.to_le_bytes())?;
        inner.flush()
    }

    /// Reads a checkpoint: the index and the offsets it is valid up to. `None` when
    /// the bytes are not a whole, intact checkpoint.
    pub fn read_checkpoint(input: impl Read) -> io::Result<Option<(Index, BTreeMap<u32, u64>)>> {
        let mut input = io::BufReader::with_capacity(1 << 20, input);
        let mut crc = 0u32;
        let mut read = |buf: &mut [u8]| -> io::Result<bool> {
            match input.read_exact(buf) {
                Ok(()) => {
                    crc = crc32c::crc32c_append(crc, buf);
                    Ok(true)
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
                Err(e) => Err(e),
            }
        };
        let mut head = [0u8; 20];
        if !read(&mut head)? || &head[..8] != CHECKPOINT_MAGIC {
            return Ok(None);
        }
        let volumes = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        let entries = u64::from_le_bytes(head[12..20].try_into().expect("8 bytes"));
        let mut scanned = BTreeMap::new();
        for _ in 0..volumes {
            let mut v = [0u8; 12];
            if !read(&mut v)? {
                return Ok(None);
            }
            scanned.insert(
                u32::from_le_bytes(v[..4].try_into().expect("4 bytes")),
                u64::from_le_bytes(v[4..].try_into().expect("8 bytes")),
            );
        }
        let mut sorted = Vec::new();
        let mut entry = [0u8; ENTRY_LEN];
        for _ in 0..entries {
            if !read(&mut entry)? {
                return Ok(None);
            }
            let mut prefix = [0u8; 16];
            prefix.copy_from_slice(&entry[..16]);
            let key = Key { prefix, shard: entry[16] };
            let bytes = |at: usize| -> [u8; 4] { [entry[at], entry[at + 1], entry[at + 2], entry[at + 3]] };
            let loc = Loc { volume: bytes(17), offset: bytes(21), len: bytes(25), k: entry[29], m: entry[30] };
            sorted.push((key, loc));
        }
        let expected = crc;
        let mut tail = [0u8; 4];
        match input.read_exact(&mut tail) {
            Ok(()) if u32::from_le_bytes(tail) == expected => {}
            Ok(()) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let mut index = Index::default();
        for (_, loc) in &sorted {
            let live = index.live.entry(loc.volume()).or_default();
            live.records += 1;
            live.bytes += loc.record_len();
        }
        // Sorted input: the map is built in bulk, without a search per entry.
        index.map = sorted.into_iter().collect();
        Ok(Some((index, scanned)))
    }
}

const CHECKPOINT_MAGIC: &[u8; 8] = b"CAIRNIX1";
const ENTRY_LEN: usize = 31;

struct CrcWriter<W: Write> {
    inner: W,
    crc: u32,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32, shard: ShardIndex) -> Key {
        Key::new(&ContentHash::of(&i.to_le_bytes()), shard).unwrap()
    }

    #[test]
    fn live_bytes_follow_inserts_replacements_and_removals() {
        let mut index = Index::default();
        index.insert(key(1, 0), Loc::new(1, 16, 100, None));
        index.insert(key(2, 0), Loc::new(1, 184, 8, None));
        assert_eq!(index.live(1), Live { records: 2, bytes: 168 + 72 });
        // Replaced by a record in volume 2: volume 1 loses it.
        index.insert(key(1, 0), Loc::new(2, 16, 100, None));
        assert_eq!(index.live(1), Live { records: 1, bytes: 72 });
        assert!(!index.remove_at(&key(2, 0), 1, 999), "a tombstone for another record does nothing");
        assert!(index.remove_at(&key(2, 0), 1, 184));
        assert_eq!(index.live(1), Live::default());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn shards_of_lists_one_contents_shards_only() {
        let mut index = Index::default();
        for shard in [2, 0, 5] {
            index.insert(key(7, shard), Loc::new(1, 16, 1, None));
        }
        index.insert(key(8, 1), Loc::new(1, 16, 1, None));
        assert_eq!(index.shards_of(&ContentHash::of(&7u32.to_le_bytes())), vec![0, 2, 5]);
        assert!(Key::new(&ContentHash::of(b"x"), 256).is_none());
    }

    #[test]
    fn a_checkpoint_round_trips_and_any_damage_is_noticed() {
        let mut index = Index::default();
        for i in 0..1000 {
            index.insert(key(i, i % 3), Loc::new(i % 4, i * 8, i, Some(Policy { k: 1, m: 2 })));
        }
        let scanned = BTreeMap::from([(0, 4096), (3, 16)]);
        let mut bytes = Vec::new();
        index.write_checkpoint(&scanned, &mut bytes).unwrap();
        let (back, back_scanned) = Index::read_checkpoint(&bytes[..]).unwrap().unwrap();
        assert_eq!(back.map, index.map);
        assert_eq!(back.live, index.live);
        assert_eq!(back_scanned, scanned);
        for cut in [0, 7, 20, bytes.len() / 2, bytes.len() - 1] {
            assert!(Index::read_checkpoint(&bytes[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 0x10;
        assert!(Index::read_checkpoint(&flipped[..]).unwrap().is_none());
    }
}
