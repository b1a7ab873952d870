//! Shard files as read back from disk (`cairn::data::shardfile::ShardReader`): the
//! input is the file. Its first byte says whether the harness makes the header's
//! magic and checksum right (so the fuzzer reaches the checks behind them), and
//! where a second, partial read starts and ends. Opening and reading never panic,
//! and never serve more than the header's data length.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use cairn::data::shardfile::ShardReader;
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("shard");
        (dir, path)
    });
    path
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let mut file = rest.to_vec();
    if flags & 1 == 1 && file.len() >= 28 {
        file[..8].copy_from_slice(b"CAIRNSH1");
        let crc = crc32c::crc32c(&file[..24]);
        file[24..28].copy_from_slice(&crc.to_le_bytes());
    }
    let path = scratch();
    std::fs::write(path, &file).expect("scratch file written");
    let Ok(mut reader) = ShardReader::open(path) else { return };
    let data_len = reader.data_len();
    let mut served = 0u64;
    let _ = reader.read_range(0, u64::MAX, |b| {
        served += b.len() as u64;
        true
    });
    assert!(served <= data_len && served <= file.len() as u64);
    let (a, b) = (u64::from(flags >> 1) * 4099, u64::from(flags >> 4) * 65537);
    let mut partial = 0u64;
    let _ = reader.read_range(a, b, |chunk| {
        partial += chunk.len() as u64;
        true
    });
    assert!(partial <= b.saturating_sub(a));
});
