//! Which shards the store holds: the shard indices of one content, and the paged
//! listing over both homes in (hash, shard) order, with each shard's length, policy
//! and an age that never overstates. Part of [`super`]; locate answers, the orphan
//! collector's listing and the scrubber's walk use it.

use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use super::{ShardStore, StoreError};
use crate::content::{ContentHash, Policy, ShardIndex};
use crate::data::shardfile::{ShardFileError, ShardReader};
use crate::data::volume::ListedRecord;

impl ShardStore {
    /// The shard indices of `hash` stored here, in order.
    pub fn shards_of(&self, hash: &ContentHash) -> Result<Vec<ShardIndex>, StoreError> {
        let prefix = format!("{}.", hash.to_hex());
        let mut shards = self.small.as_ref().map(|v| v.shards_of(hash)).unwrap_or_default();
        let entries = match fs::read_dir(self.fanout_dir(hash)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(shards),
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(index) = name.strip_prefix(&prefix).and_then(|s| s.parse::<ShardIndex>().ok()) {
                shards.push(index);
            }
        }
        shards.sort_unstable();
        shards.dedup();
        Ok(shards)
    }

    /// Up to `limit` shard names after `after` (exclusive; `None`: from the start)
    /// in (hash, shard) order, over both homes, each name once (a name in both homes,
    /// mid-move, is listed as the record reads see). Memory is bounded by the page:
    /// the volume index is already sorted ([`VolumeStore::records_after`]), and the
    /// fan-out directories are walked in sorted order from `after`'s, one directory
    /// read (and sorted) at a time, stopping once `limit` files are found.
    ///
    /// [`VolumeStore::records_after`]: crate::data::volume::VolumeStore::records_after
    pub fn names_after(
        &self,
        after: Option<(ContentHash, ShardIndex)>,
        limit: usize,
    ) -> Result<Vec<Named>, StoreError> {
        let records = match &self.small {
            Some(v) => v.records_after(after.as_ref().map(|(h, s)| (h, *s)), limit),
            None => Vec::new(),
        };
        let files = self.files_after(after, limit)?;
        let mut out = Vec::with_capacity(limit.min(records.len() + files.len()));
        let (mut r, mut f) = (records.into_iter().peekable(), files.into_iter().peekable());
        while out.len() < limit {
            let (rec_key, file_key) = (r.peek().map(|rec| (rec.hash, rec.shard)), f.peek().copied());
            let take_record = match (rec_key, file_key) {
                (None, None) => break,
                (Some(rk), Some(fk)) if rk == fk => {
                    // In both homes (mid-move): listed once, as the record reads see.
                    f.next();
                    true
                }
                (Some(rk), Some(fk)) => rk < fk,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            if take_record {
                let Some(rec) = r.next() else { break };
                out.push(Named { hash: rec.hash, shard: rec.shard, home: Home::Record(rec) });
            } else {
                let Some((hash, shard)) = f.next() else { break };
                out.push(Named { hash, shard, home: Home::File });
            }
        }
        Ok(out)
    }

    /// Up to `limit` shard files after `after`, in (hash, shard) order.
    fn files_after(
        &self,
        after: Option<(ContentHash, ShardIndex)>,
        limit: usize,
    ) -> io::Result<Vec<(ContentHash, ShardIndex)>> {
        let objects = self.root.join("objects");
        let from = after.map(|(h, _)| {
            let hex = h.to_hex();
            (hex[0..2].to_string(), hex[2..4].to_string())
        });
        let mut out = Vec::new();
        for top in sorted_fanout(&objects)? {
            if from.as_ref().is_some_and(|(t, _)| top < *t) {
                continue;
            }
            for sub in sorted_fanout(&objects.join(&top))? {
                if from.as_ref().is_some_and(|(t, s)| top == *t && sub < *s) {
                    continue;
                }
                let entries = match fs::read_dir(objects.join(&top).join(&sub)) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                let mut names = Vec::new();
                for entry in entries {
                    let name = entry?.file_name();
                    let Some(parsed) = name.to_str().and_then(parse_shard_file_name) else { continue };
                    if after.is_none_or(|a| parsed > a) {
                        names.push(parsed);
                    }
                }
                names.sort_unstable();
                names.truncate(limit - out.len());
                out.extend(names);
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// A page of the listing for the orphan collector: up to `limit` shards after
    /// `after` ([`names_after`](ShardStore::names_after)) with their length, policy
    /// and age. The age never overstates how long ago the shard was committed here:
    /// a file's is its mtime's (a dedup commit onto it touches it); a record's is
    /// the latest of its volume file's mtime (no record in a volume is younger than
    /// the volume's last write), the last dedup commit onto it in this process, and
    /// the process start (dedup refreshes are kept in memory only, so after a
    /// restart every record counts as committed at the start at the earliest).
    /// `next` is the last name listed when the page is full, else `None`.
    pub fn list(
        &self,
        after: Option<(ContentHash, ShardIndex)>,
        limit: usize,
    ) -> Result<(Vec<ListedShard>, Option<ShardName>), StoreError> {
        let names = self.names_after(after, limit)?;
        let next = (names.len() >= limit).then(|| names.last().map(|n| (n.hash, n.shard))).flatten();
        let now = SystemTime::now();
        let age = |t: SystemTime| now.duration_since(t).unwrap_or_default().as_secs();
        let mut volume_times = std::collections::HashMap::new();
        let (refreshed, floor) = {
            let r = self.refreshed.lock().unwrap_or_else(|e| e.into_inner());
            let at: Vec<Option<SystemTime>> = names.iter().map(|n| r.at.get(&(n.hash, n.shard)).copied()).collect();
            (at, r.floor)
        };
        let mut out = Vec::with_capacity(names.len());
        for (name, refreshed) in names.into_iter().zip(refreshed) {
            let (len, policy, committed) = match name.home {
                Home::Record(rec) => {
                    let volume_time = *volume_times.entry(rec.volume).or_insert_with(|| {
                        self.small.as_ref().and_then(|v| v.volume_modified(rec.volume)).unwrap_or(now)
                    });
                    let t = volume_time.max(floor).max(refreshed.unwrap_or(floor));
                    (rec.len, rec.policy, t)
                }
                Home::File => {
                    let path = self.shard_path(&name.hash, name.shard);
                    let modified = match fs::metadata(&path) {
                        Ok(m) => m.modified().unwrap_or(now),
                        // Gone since the walk: deleted, not listed.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e.into()),
                    };
                    match ShardReader::open(&path) {
                        Ok(r) => (r.data_len(), r.policy(), modified),
                        Err(ShardFileError::Io(e)) if e.kind() == io::ErrorKind::NotFound => continue,
                        // A bad header: listed with the file's size and no policy.
                        Err(_) => (fs::metadata(&path).map(|m| m.len()).unwrap_or(0), None, modified),
                    }
                }
            };
            out.push(ListedShard { hash: name.hash, shard: name.shard, len, policy, age_s: age(committed) });
        }
        Ok((out, next))
    }
}

/// A shard's name: its content hash and index.
pub type ShardName = (ContentHash, ShardIndex);

/// Where a listed shard lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Home {
    /// A shard file in the fan-out directories.
    File,
    /// A volume record, as the index lists it.
    Record(ListedRecord),
}

/// A shard name and its home ([`ShardStore::names_after`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Named {
    /// The content hash.
    pub hash: ContentHash,
    /// The shard index.
    pub shard: ShardIndex,
    /// Where it lives.
    pub home: Home,
}

/// One entry of the listing ([`ShardStore::list`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedShard {
    /// The content hash.
    pub hash: ContentHash,
    /// The shard index.
    pub shard: ShardIndex,
    /// The shard's data length.
    pub len: u64,
    /// Its policy, when known.
    pub policy: Option<Policy>,
    /// Seconds since it was committed here, at most (never more).
    pub age_s: u64,
}

/// Parses a shard file name, `<sha256-hex>.<shard>`.
pub fn parse_shard_file_name(name: &str) -> Option<(ContentHash, ShardIndex)> {
    let (hash, shard) = name.split_once('.')?;
    if shard.is_empty() || !shard.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((hash.parse().ok()?, shard.parse().ok()?))
}

/// The fan-out directory names (two lowercase hex digits) in `dir`, sorted; none
/// when `dir` is missing.
fn sorted_fanout(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        if let Some(n) =
            name.to_str().filter(|n| n.len() == 2 && n.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        {
            names.push(n.to_string());
        }
    }
    names.sort_unstable();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{mixed_store, write_temp};
    use super::*;

    #[test]
    fn names_come_in_hash_shard_order_across_both_homes() {
        let dir = tempfile::tempdir().unwrap();
        let store = mixed_store(dir.path());
        let mut hashes: Vec<ContentHash> = (0..6u8).map(|i| ContentHash::of(&[i])).collect();
        hashes.sort();
        let mut want = Vec::new();
        for (i, h) in hashes.iter().enumerate() {
            // Records (small) and files (large, one with an index no record can have).
            let (shard, data): (ShardIndex, &[u8]) =
                if i % 2 == 0 { (5, b"tiny") } else { (300, b"a shard longer than sixteen bytes") };
            let id = write_temp(&store, data);
            store.commit(id, h, shard, data.len() as u64, None).unwrap();
            want.push((*h, shard, shard == 5));
            let id = write_temp(&store, b"more than sixteen bytes here");
            store.commit(id, h, 7, 28, None).unwrap();
            want.push((*h, 7, false));
        }
        want.sort_by_key(|&(h, s, _)| (h, s));
        let all: Vec<_> = store
            .names_after(None, 100)
            .unwrap()
            .into_iter()
            .map(|n| (n.hash, n.shard, matches!(n.home, Home::Record(_))))
            .collect();
        assert_eq!(all, want);
        // Paging from every name gives the rest, whatever home the cursor was in.
        for (at, (h, s, _)) in want.iter().enumerate() {
            let rest: Vec<_> =
                store.names_after(Some((*h, *s)), 3).unwrap().into_iter().map(|n| (n.hash, n.shard)).collect();
            let expected: Vec<_> = want[at + 1..].iter().take(3).map(|&(h, s, _)| (h, s)).collect();
            assert_eq!(rest, expected, "after {h}.{s}");
        }
    }
}
