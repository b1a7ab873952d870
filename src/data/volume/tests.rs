//! Tests of the volume store: group commit, restarts with and without a
//! checkpoint, torn and rotted records, deletes and compaction.

use super::record::{RecordError, HEADER_LEN, VOLUME_HEADER_LEN};
use super::recovery::CHECKPOINT;
use super::*;

const P12: Option<Policy> = Some(Policy { k: 1, m: 2 });

fn small_config() -> VolumeConfig {
    VolumeConfig { volume_size: 64 * 1024, checkpoint_every: u64::MAX, ..VolumeConfig::default() }
}

fn open(dir: &Path) -> VolumeStore {
    VolumeStore::open(dir, small_config(), None).unwrap()
}

fn content(i: u32) -> (ContentHash, Vec<u8>) {
    let data: Vec<u8> = format!("object number {i} ").bytes().cycle().take(100 + (i as usize * 37) % 900).collect();
    (ContentHash::of(&data), data)
}

fn put(store: &VolumeStore, i: u32) -> PutOutcome {
    let (hash, data) = content(i);
    store.put_blocking(hash, 0, P12, Bytes::from(data)).unwrap()
}

fn assert_readable(store: &VolumeStore, i: u32) {
    let (hash, data) = content(i);
    let record = store.get(&hash, 0).unwrap().unwrap_or_else(|| panic!("object {i} is missing"));
    assert_eq!(record.data, data, "object {i}");
    assert_eq!(record.policy, P12);
}

fn volume_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some("vol".as_ref()))
        .collect();
    files.sort();
    files
}

fn disk_bytes(dir: &Path) -> u64 {
    volume_files(dir).iter().map(|p| fs::metadata(p).unwrap().len()).sum()
}

#[test]
fn a_put_reads_back_and_a_second_put_is_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(put(&store, 1), PutOutcome::New);
    assert_eq!(put(&store, 1), PutOutcome::AlreadyStored);
    assert_readable(&store, 1);
    let (hash, _) = content(1);
    assert_eq!(store.shards_of(&hash), vec![0]);
    assert_eq!(store.identity(&hash, 0), Some((content(1).1.len() as u64, P12)));
    // Another length under the same name replaces it.
    assert_eq!(store.put_blocking(hash, 0, P12, Bytes::from_static(b"other")).unwrap(), PutOutcome::Replaced);
    assert_eq!(store.get(&hash, 0).unwrap().unwrap().data, "other");
    assert_eq!(store.stats().shards, 1);
    assert!(store.get(&ContentHash::of(b"absent"), 0).unwrap().is_none());
}

#[test]
fn concurrent_writers_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = VolumeStore::open(dir.path(), VolumeConfig::default(), None).unwrap();
    let writers: Vec<_> = (0..16)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    assert_eq!(put(&store, w * 1000 + i), PutOutcome::New);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.shards, 800);
    assert_eq!(stats.synced_ops, 800);
    assert!(stats.syncs < 800, "{} fdatasyncs for 800 puts: no group commit", stats.syncs);
    for w in 0..16 {
        assert_readable(&store, w * 1000 + 49);
    }
}

#[test]
fn a_restart_finds_everything_with_or_without_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for i in 0..300 {
            put(&store, i);
        }
        store.checkpoint().unwrap();
        // Written after the checkpoint: found by scanning the tail.
        for i in 300..400 {
            put(&store, i);
        }
        let (hash, _) = content(7);
        assert!(store.delete_blocking(&hash, 0).unwrap());
    }
    for with_checkpoint in [true, false] {
        if !with_checkpoint {
            fs::remove_file(dir.path().join(CHECKPOINT)).unwrap();
        }
        let store = open(dir.path());
        assert_eq!(store.stats().shards, 399, "checkpoint: {with_checkpoint}");
        for i in (0..400).filter(|&i| i != 7) {
            assert_readable(&store, i);
        }
        assert!(store.get(&content(7).0, 0).unwrap().is_none(), "the deleted shard stays deleted");
    }
    assert!(volume_files(dir.path()).len() > 2, "64 KiB volumes were rolled");
}

#[test]
fn a_torn_tail_at_any_byte_loses_only_the_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for i in 0..3 {
            put(&store, i);
        }
    }
    let files = volume_files(dir.path());
    let last = files.last().unwrap().clone();
    let whole = fs::read(&last).unwrap();
    let last_len = content(2).1.len();
    let padding = record::record_len(last_len as u32) as usize - HEADER_LEN - last_len;
    let record_start = whole.len() - padding - HEADER_LEN - last_len;
    let keep = dir.path().join("keep");
    fs::create_dir(&keep).unwrap();
    // Cuts anywhere from the record's first byte to its last (a cut in the padding
    // after it leaves it whole).
    for cut in record_start..whole.len() - padding {
        // Each cut in a fresh copy of the store, as a crash would leave it.
        let trial = tempfile::tempdir().unwrap();
        for f in &files {
            fs::copy(f, trial.path().join(f.file_name().unwrap())).unwrap();
        }
        fs::write(trial.path().join(last.file_name().unwrap()), &whole[..cut]).unwrap();
        let store = open(trial.path());
        assert_readable(&store, 0);
        assert_readable(&store, 1);
        assert!(store.get(&content(2).0, 0).unwrap().is_none(), "cut at {cut}: a torn record is not served");
        // New writes go to a new volume and survive the next restart.
        put(&store, 9);
        drop(store);
        let store = open(trial.path());
        assert_readable(&store, 9);
        assert_eq!(store.stats().shards, 3);
    }
}

#[test]
fn a_rotted_record_is_never_served_and_hides_nothing_after_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for i in 0..5 {
            put(&store, i);
        }
    }
    let file = volume_files(dir.path()).last().unwrap().clone();
    // Flip a payload byte of record 2 and, in a copy, a header byte of it.
    let offset = |n: u32| {
        VOLUME_HEADER_LEN as usize
            + (0..n).map(|i| record::record_len(content(i).1.len() as u32) as usize).sum::<usize>()
    };
    let at = offset(2);
    let _ = fs::remove_file(dir.path().join(CHECKPOINT));
    {
        // The index as a checkpoint from before the rot: record 2 is in it.
        let store = open(dir.path());
        store.checkpoint().unwrap();
    }
    let mut bytes = fs::read(&file).unwrap();
    bytes[at + HEADER_LEN + 10] ^= 0x01;
    fs::write(&file, &bytes).unwrap();
    let store = open(dir.path());
    let err = store.get(&content(2).0, 0).unwrap_err();
    assert!(matches!(err, VolumeError::Corrupt { reason: RecordError::PayloadChecksum, .. }), "{err}");
    for i in [0, 1, 3, 4] {
        assert_readable(&store, i);
    }
    drop(store);
    // Without a checkpoint a scan meets the bad record: it skips it and finds the rest.
    bytes[at + 20] ^= 0x01;
    fs::write(&file, &bytes).unwrap();
    fs::remove_file(dir.path().join(CHECKPOINT)).unwrap();
    let store = open(dir.path());
    assert!(store.get(&content(2).0, 0).unwrap().is_none());
    for i in [0, 1, 3, 4] {
        assert_readable(&store, i);
    }
}

#[test]
fn compaction_frees_the_dead_and_keeps_the_live() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..1000 {
        put(&store, i);
    }
    for i in (0..1000).filter(|i| i % 10 != 0) {
        assert!(store.delete_blocking(&content(i).0, 0).unwrap());
    }
    let live: u64 = store.stats().volumes.iter().map(|v| v.live_bytes).sum();
    let before = disk_bytes(dir.path());
    let done = store.compact_due().unwrap();
    assert!(!done.is_empty());
    // One round: the active volume, mostly tombstones, was sealed and compacted too.
    let after = disk_bytes(dir.path());
    assert!(after < before / 3, "{before} bytes before, {after} after");
    let headers = VOLUME_HEADER_LEN * volume_files(dir.path()).len() as u64;
    assert!((after - headers) as f64 <= live as f64 * 1.15, "{after} bytes on disk for {live} live");
    assert!(store.compact_due().unwrap().is_empty(), "nothing left to do");
    for i in (0..1000).step_by(10) {
        assert_readable(&store, i);
    }
    drop(store);
    for with_checkpoint in [true, false] {
        if !with_checkpoint {
            let _ = fs::remove_file(dir.path().join(CHECKPOINT));
        }
        let store = open(dir.path());
        assert_eq!(store.stats().shards, 100, "checkpoint: {with_checkpoint}");
        for i in (0..1000).step_by(10) {
            assert_readable(&store, i);
        }
        assert!(store.get(&content(11).0, 0).unwrap().is_none(), "deleted shards stay deleted");
    }
}

#[test]
fn a_crash_before_the_old_volume_is_unlinked_loses_and_resurrects_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for i in 0..200 {
            put(&store, i);
        }
        for i in (0..200).filter(|i| i % 2 == 0) {
            store.delete_blocking(&content(i).0, 0).unwrap();
        }
        for f in volume_files(dir.path()) {
            fs::copy(&f, saved.path().join(f.file_name().unwrap())).unwrap();
        }
        store.compact_due().unwrap();
    }
    // Put the compacted volumes back, as if the crash came after the copies were
    // durable and before the unlink.
    for f in volume_files(saved.path()) {
        let target = dir.path().join(f.file_name().unwrap());
        if !target.exists() {
            fs::copy(&f, target).unwrap();
        }
    }
    for with_checkpoint in [true, false] {
        if !with_checkpoint {
            let _ = fs::remove_file(dir.path().join(CHECKPOINT));
        }
        let store = open(dir.path());
        assert_eq!(store.stats().shards, 100, "checkpoint: {with_checkpoint}");
        for i in (0..200).filter(|i| i % 2 == 1) {
            assert_readable(&store, i);
        }
        assert!(store.get(&content(4).0, 0).unwrap().is_none());
    }
}

#[test]
fn reads_and_writes_carry_on_during_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..600 {
        put(&store, i);
    }
    for i in (0..600).filter(|i| i % 3 != 0) {
        store.delete_blocking(&content(i).0, 0).unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                for i in (0..600).step_by(3) {
                    assert_readable(&store, i);
                    reads += 1;
                }
            }
            reads
        })
    };
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 1000..1300 {
                put(&store, i);
            }
        })
    };
    store.compact_due().unwrap();
    writer.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    for i in (0..600).step_by(3).chain(1000..1300) {
        assert_readable(&store, i);
    }
}

#[test]
fn a_checkpoint_longer_than_its_volumes_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for i in 0..20 {
            put(&store, i);
        }
        store.checkpoint().unwrap();
    }
    // Someone cuts the volume short behind the store's back.
    let file = volume_files(dir.path()).last().unwrap().clone();
    let len = fs::metadata(&file).unwrap().len();
    let cut = len - record::record_len(content(19).1.len() as u32);
    File::options().write(true).open(&file).unwrap().set_len(cut).unwrap();
    let store = open(dir.path());
    assert!(store.get(&content(19).0, 0).unwrap().is_none());
    assert_readable(&store, 18);
}

#[test]
fn a_failed_write_fails_its_batch_and_the_next_goes_to_a_new_volume() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        put(&store, 1);
        store.shared.fail_next_write.store(true, Ordering::Relaxed);
        let (hash, data) = content(2);
        let err = store.put_blocking(hash, 0, P12, Bytes::from(data)).unwrap_err();
        assert!(matches!(&err, VolumeError::Io(e) if e.kind() == io::ErrorKind::StorageFull), "{err}");
        assert!(store.get(&hash, 0).unwrap().is_none(), "a failed write is not visible");
        assert_eq!(put(&store, 3), PutOutcome::New);
        let volumes = store.stats().volumes;
        assert_eq!(volumes.len(), 2, "the failed volume was sealed: {volumes:?}");
        assert!(volumes[1].active && volumes[1].live_records == 1);
        // The failed volume was cut back: none of the failed batch is on disk.
        let first = volume_files(dir.path())[0].clone();
        assert_eq!(fs::metadata(&first).unwrap().len(), volumes[0].size);
        // Written again, it lands.
        assert_eq!(put(&store, 2), PutOutcome::New);
    }
    let store = open(dir.path());
    for i in 1..=3 {
        assert_readable(&store, i);
    }
    assert_eq!(store.stats().shards, 3);
}

#[test]
fn the_commit_delay_grows_with_the_writers_and_spares_one_or_two() {
    use super::committer::commit_delay;
    use super::MAX_COMMIT_DELAY;
    let ms = Duration::from_millis;
    assert_eq!(commit_delay(ms(1), 0), None);
    assert_eq!(commit_delay(ms(1), 1), None, "a lone writer never waits");
    assert_eq!(commit_delay(ms(1), 2), None, "nor two");
    assert_eq!(commit_delay(ms(1), 3), Some(ms(2)));
    assert_eq!(commit_delay(ms(1), 4), Some(ms(3)));
    assert_eq!(commit_delay(ms(1), 50), Some(MAX_COMMIT_DELAY), "capped");
    assert_eq!(commit_delay(Duration::MAX, usize::MAX), Some(MAX_COMMIT_DELAY), "no overflow");
    assert_eq!(commit_delay(Duration::ZERO, 50), None, "zero turns it off");
}
