//! The volume store's recovery from disk (`cairn::data::volume`): record headers
//! on their own, then a whole store opened over a crafted volume file or a crafted
//! index checkpoint (its checksum made right by the harness, so the fuzzer reaches
//! what it guards), every record it then lists read back. Nothing panics; what is
//! served matches its record's checksum.
#![no_main]

use cairn::content::ContentHash;
use cairn::data::volume::record;
use cairn::data::volume::{VolumeConfig, VolumeStore};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if let Ok(h) = record::decode_header(rest) {
        let _ = record::check_payload(&h, rest.get(record::HEADER_LEN..).unwrap_or(&[]));
    }
    let _ = record::parse_volume_header(rest);

    let dir = tempfile::tempdir().expect("temp dir");
    let vol = dir.path().join("0000000001.vol");
    match mode % 3 {
        0 => {
            let mut file = record::volume_header(1).to_vec();
            file.extend_from_slice(rest);
            std::fs::write(&vol, file).unwrap();
        }
        1 => {
            let mut file = record::volume_header(1).to_vec();
            record::encode_shard(&mut file, &ContentHash::of(b"x"), 0, None, b"payload");
            std::fs::write(&vol, file).unwrap();
            let mut checkpoint = b"CAIRNIX1".to_vec();
            checkpoint.extend_from_slice(rest);
            let crc = crc32c::crc32c(&checkpoint);
            checkpoint.extend_from_slice(&crc.to_le_bytes());
            std::fs::write(dir.path().join("index"), checkpoint).unwrap();
        }
        _ => std::fs::write(&vol, rest).unwrap(),
    }
    let config = VolumeConfig { volume_size: 1 << 20, ..VolumeConfig::default() };
    let Ok(store) = VolumeStore::open(dir.path(), config, None) else { return };
    for listed in store.records_after(None, 64) {
        let _ = store.shards_of(&listed.hash);
        let _ = store.get(&listed.hash, listed.shard);
        let _ = store.raw(&listed.hash, listed.shard);
    }
    let _ = store.stats();
});
