//! The volume store's read path: looking a shard up in the index, reading its
//! record and checking it before a byte is served, and the listing's walk over the
//! index in (hash, shard) order (see "Reads" in [`super`]).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

use super::index::{Key, Loc};
use super::record::{self, Kind, RecordError, HEADER_LEN};
use super::{ListedRecord, Record, Volume, VolumeError, VolumeStore};
use crate::content::{ContentHash, ShardIndex};

impl VolumeStore {
    /// Reads and verifies `hash.shard`; `Ok(None)` when it is not stored here.
    pub fn get(&self, hash: &ContentHash, shard: ShardIndex) -> Result<Option<Record>, VolumeError> {
        let Some(key) = Key::new(hash, shard) else { return Ok(None) };
        // A compaction may retire the volume between the lookup and the read; the
        // index then already points at the copy, so look again.
        for _ in 0..4 {
            let Some((loc, volume)) = self.lookup(&key) else { return Ok(None) };
            let Some(volume) = volume else { continue };
            return read_record(&volume, loc, hash, shard).map(Some);
        }
        Ok(None)
    }

    /// The raw bytes of `hash.shard`'s record (header included), whether or not they
    /// check: what quarantine keeps for an operator.
    pub fn raw(&self, hash: &ContentHash, shard: ShardIndex) -> Result<Option<Vec<u8>>, VolumeError> {
        let Some(key) = Key::new(hash, shard) else { return Ok(None) };
        let Some((loc, Some(volume))) = self.lookup(&key) else { return Ok(None) };
        let mut buf = vec![0u8; loc.record_len() as usize];
        let n = read_up_to(&volume.file, &mut buf, u64::from(loc.offset()))?;
        buf.truncate(n);
        Ok(Some(buf))
    }

    /// Where `key`'s record lives and its volume (`None` when a compaction just
    /// retired that volume), under one read lock.
    fn lookup(&self, key: &Key) -> Option<(Loc, Option<Arc<Volume>>)> {
        let state = self.shared.read();
        let loc = state.index.get(key)?;
        Some((loc, state.volumes.get(&loc.volume()).cloned()))
    }

    /// Up to `limit` records after `after` (exclusive; `None`: from the start) in
    /// (hash, shard) order: the listing and the scrubber's walk. The index's ordered
    /// map is the sorted view, so a page costs a range lookup under the read lock
    /// plus one 64-byte header read per record (outside the lock) for the full hash,
    /// which the index does not keep. A record whose header does not check is listed
    /// with its 16-byte hash prefix padded with zeros and `header_ok` false: a delete
    /// or quarantine under that name finds it (the index keys on the prefix).
    pub fn records_after(&self, after: Option<(&ContentHash, ShardIndex)>, limit: usize) -> Vec<ListedRecord> {
        let (entries, volumes) = {
            let state = self.shared.read();
            let entries = state.index.range_after(after.map(|(h, s)| Key::at_or_before(h, s)), limit);
            let volumes: HashMap<u32, Arc<Volume>> = entries
                .iter()
                .filter_map(|(_, loc)| state.volumes.get(&loc.volume()).map(|v| (loc.volume(), v.clone())))
                .collect();
            (entries, volumes)
        };
        entries
            .into_iter()
            .map(|(key, loc)| {
                let header = volumes.get(&loc.volume()).and_then(|v| {
                    let mut h = [0u8; HEADER_LEN];
                    match read_up_to(&v.file, &mut h, u64::from(loc.offset())) {
                        Ok(HEADER_LEN) => record::decode_header(&h).ok(),
                        _ => None,
                    }
                });
                let (hash, header_ok) = match header {
                    Some(h)
                        if h.kind == Kind::Shard
                            && h.shard == key.shard()
                            && h.hash.as_bytes()[..16] == key.prefix()[..] =>
                    {
                        (h.hash, true)
                    }
                    _ => {
                        let mut bytes = [0u8; 32];
                        bytes[..16].copy_from_slice(key.prefix());
                        (ContentHash::from_bytes(bytes), false)
                    }
                };
                ListedRecord {
                    hash,
                    shard: key.shard(),
                    len: u64::from(loc.data_len()),
                    policy: loc.policy(),
                    volume: loc.volume(),
                    header_ok,
                }
            })
            .collect()
    }
}

/// Reads and checks the record `loc` of `hash.shard` in `volume`.
fn read_record(volume: &Volume, loc: Loc, hash: &ContentHash, shard: ShardIndex) -> Result<Record, VolumeError> {
    let corrupt = |reason| VolumeError::Corrupt { volume: loc.volume(), offset: loc.offset(), reason };
    let mut buf = vec![0u8; HEADER_LEN + loc.data_len() as usize];
    let n = read_up_to(&volume.file, &mut buf, u64::from(loc.offset()))?;
    if n < buf.len() {
        return Err(corrupt(RecordError::PayloadChecksum));
    }
    let header = record::decode_header(&buf).map_err(corrupt)?;
    if header.kind != Kind::Shard || header.hash != *hash || header.shard != shard || header.len != loc.data_len() {
        return Err(VolumeError::Misplaced {
            volume: loc.volume(),
            offset: loc.offset(),
            wanted: format!("{hash}.{shard} ({} bytes)", loc.data_len()),
            found: format!("{}.{} ({} bytes, {:?})", header.hash, header.shard, header.len, header.kind),
        });
    }
    let mut data = Bytes::from(buf);
    let data = data.split_off(HEADER_LEN);
    record::check_payload(&header, &data).map_err(corrupt)?;
    Ok(Record { data, policy: header.policy })
}

/// Reads into `buf` from `offset` until it is full or the file ends; returns the
/// bytes read.
pub(super) fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
