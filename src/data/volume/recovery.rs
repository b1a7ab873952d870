//! How the volume store comes back after a stop or a crash: it loads the index
//! checkpoint, scans each volume from where the checkpoint ends (skipping damaged
//! stretches, stopping at a torn tail) and replays the records into the index; and
//! how it writes that checkpoint (see "Crash story" in [`super`]).

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use super::index::{Index, Key, Loc};
use super::read::read_up_to;
use super::record::{self, Kind, RecordError, HEADER_LEN, VOLUME_HEADER_LEN};
use super::{sync_dir, volume_path, Shared, State, Volume};

/// Bytes a scan reads at a time.
const SCAN_WINDOW: usize = 4 << 20;

/// Walks the records of volume `id` from `from` to at most `limit`, calling `apply`
/// with each valid record (header, offset, raw bytes without padding) in order,
/// skipping over damaged stretches (see the module doc). Returns the end of the
/// valid log: just past the last valid record, or `from`.
pub(super) fn scan(
    file: &File,
    id: u32,
    from: u64,
    limit: u64,
    mut apply: impl FnMut(record::Header, u64, &[u8]),
) -> io::Result<u64> {
    let limit = limit.min(file.metadata()?.len());
    let mut window = Window { file, start: from, buf: Vec::new() };
    let mut pos = from;
    let mut end = from;
    let mut damaged_at = None;
    while pos + HEADER_LEN as u64 <= limit {
        match window.record_at(pos, limit)? {
            Ok((header, raw)) => {
                if let Some(at) = damaged_at.take() {
                    tracing::error!(volume = id, from = at, to = pos, "skipped a damaged stretch of a volume");
                }
                apply(header, pos, raw);
                pos += header.record_len();
                end = pos;
            }
            Err(_) => {
                damaged_at.get_or_insert(pos);
                pos += record::ALIGN;
            }
        }
    }
    if let Some(at) = damaged_at {
        if at < limit {
            tracing::info!(volume = id, at, bytes = limit - at, "volume log ends before its file does (torn tail)");
        }
    }
    Ok(end)
}

/// A sliding read buffer over a volume file, for scans.
struct Window<'a> {
    file: &'a File,
    start: u64,
    buf: Vec<u8>,
}

impl Window<'_> {
    /// `len` bytes at `pos`, or fewer at the end of the file.
    fn bytes(&mut self, pos: u64, len: usize, limit: u64) -> io::Result<&[u8]> {
        let have = pos >= self.start && pos + len as u64 <= self.start + self.buf.len() as u64;
        if !have {
            let want = len.max(SCAN_WINDOW).min(limit.saturating_sub(pos) as usize);
            self.buf.resize(want, 0);
            let n = read_up_to(self.file, &mut self.buf, pos)?;
            self.buf.truncate(n);
            self.start = pos;
        }
        let from = (pos - self.start) as usize;
        let to = (from + len).min(self.buf.len());
        Ok(&self.buf[from..to])
    }

    /// The valid record at `pos`, or why there is none.
    fn record_at(&mut self, pos: u64, limit: u64) -> io::Result<Result<(record::Header, &[u8]), RecordError>> {
        let header = match record::decode_header(self.bytes(pos, HEADER_LEN, limit)?) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        let total = HEADER_LEN + header.len as usize;
        if pos + total as u64 > limit {
            return Ok(Err(RecordError::PayloadChecksum));
        }
        let raw = self.bytes(pos, total, limit)?;
        if raw.len() < total {
            return Ok(Err(RecordError::PayloadChecksum));
        }
        if let Err(e) = record::check_payload(&header, &raw[HEADER_LEN..]) {
            return Ok(Err(e));
        }
        Ok(Ok((header, raw)))
    }
}

/// Applies one valid record to the index during recovery.
fn replay(index: &mut Index, volume: u32, offset: u64, header: &record::Header) {
    let Some(key) = Key::new(&header.hash, header.shard) else { return };
    match header.kind {
        Kind::Shard => {
            if let Ok(offset) = u32::try_from(offset) {
                index.insert(key, Loc::new(volume, offset, header.len, header.policy));
            }
        }
        Kind::Tombstone { volume, offset } => {
            index.remove_at(&key, volume, offset);
        }
    }
}

/// Rebuilds the state from the checkpoint and the volumes (see the module doc).
pub(super) fn recover(dir: &Path) -> io::Result<State> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name.strip_suffix(".vol").and_then(|n| n.parse::<u32>().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    let mut volumes = BTreeMap::new();
    let mut sizes = HashMap::new();
    for &id in &ids {
        let path = volume_path(dir, id);
        let file = File::options().read(true).write(true).open(&path)?;
        let len = file.metadata()?.len();
        let mut head = [0u8; VOLUME_HEADER_LEN as usize];
        let whole = len >= VOLUME_HEADER_LEN && (&file).read_exact(&mut head).is_ok();
        if !whole {
            // A crash while the volume was being created: it never held a record.
            tracing::info!(volume = id, "removing a volume file that was never finished");
            drop(file);
            fs::remove_file(&path)?;
            continue;
        }
        if record::parse_volume_header(&head) != Some(id) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not volume {id} (bad header); move it away to start", path.display()),
            ));
        }
        sizes.insert(id, len);
        volumes.insert(id, Arc::new(Volume { file, path }));
    }
    let checkpoint = match File::open(dir.join(CHECKPOINT)) {
        Ok(f) => Index::read_checkpoint(f)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    // A checkpoint is usable only if every volume it covers is at least as long as
    // it says (else someone cut a file short, and only a full scan is safe).
    let checkpoint = checkpoint.filter(|(_, scanned)| {
        let ok = scanned.iter().all(|(id, &end)| sizes.get(id).is_none_or(|&len| len >= end));
        if !ok {
            tracing::error!("volume files are shorter than the checkpoint says; scanning every volume");
        }
        ok
    });
    let (mut index, scanned) = checkpoint.unwrap_or_default();
    let mut ends = BTreeMap::new();
    for (&id, volume) in &volumes {
        let from = scanned.get(&id).copied().unwrap_or(VOLUME_HEADER_LEN).max(VOLUME_HEADER_LEN);
        let end = scan(&volume.file, id, from, u64::MAX, |header, offset, _| {
            replay(&mut index, id, offset, &header);
        })?;
        ends.insert(id, end);
    }
    // Entries into volumes that are gone (an operator removed a file) cannot be served.
    let gone: Vec<u32> = scanned.keys().filter(|id| !volumes.contains_key(id)).copied().collect();
    for id in gone {
        let dropped = index.drop_volume(id);
        if dropped > 0 {
            tracing::error!(volume = id, dropped, "volume file missing; its shards are lost here");
        }
    }
    let active = ids.last().copied().unwrap_or(0);
    Ok(State { index, volumes, ends, active, poisoned: true, appended_since_checkpoint: 0 })
}

pub(super) const CHECKPOINT: &str = "index";

impl Shared {
    /// Writes the checkpoint: snapshot under the read lock, then sync and rename.
    pub(super) fn checkpoint(&self) -> io::Result<()> {
        let Ok(_one) = self.checkpointing.try_lock() else { return Ok(()) };
        let tmp = self.dir.join("index.tmp");
        let file = File::create(&tmp)?;
        {
            let state = self.read();
            state.index.write_checkpoint(&state.ends, &file)?;
        }
        file.sync_all()?;
        fs::rename(&tmp, self.dir.join(CHECKPOINT))?;
        sync_dir(&self.dir)
    }
}
