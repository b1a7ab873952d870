//! Prototype measurement for issue 9 (a storage engine for small shards): durable
//! small-shard writes from N concurrent writer threads, each acknowledged only once
//! durable, three ways:
//!   files  - today's: a file per shard (create, write, fsync, rename, dir fsync)
//!   volume - one append-only file, a committer batching records: one write and one
//!            fdatasync per batch (Haystack / SeaweedFS volumes)
//!   redb   - one redb write transaction (durable commit) per batch
//! Each record carries a header (magic, hash and shard key, policy, length) and a
//! CRC-32C over header and payload, as the engine's would. Not part of the
//! workspace (it would add redb to every build): run it by hand to compare designs.
//!
//! Usage: cargo run --release -- MODE DIR WRITERS SECONDS SIZE
//! (DIR is created and removed; disk/op counts allocated blocks, `du --block-size=1`).
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const T: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("shards");

struct Req {
    key: [u8; 36],
    data: Vec<u8>,
    done: Sender<()>,
}

fn record(key: &[u8; 36], data: &[u8]) -> Vec<u8> {
    // header: magic u32 | key 36 | policy 2 | len u32 | crc32c(header+payload) u32
    let mut r = Vec::with_capacity(50 + data.len());
    r.extend_from_slice(b"CSR1");
    r.extend_from_slice(key);
    r.extend_from_slice(&[1, 2]);
    r.extend_from_slice(&(data.len() as u32).to_le_bytes());
    r.extend_from_slice(data);
    let crc = crc32c::crc32c(&r);
    r.extend_from_slice(&crc.to_le_bytes());
    r
}

fn committer_volume(dir: PathBuf, rx: Receiver<Req>, syncs: Arc<AtomicU64>) {
    let mut f = OpenOptions::new().create(true).append(true).open(dir.join("volume")).unwrap();
    let mut index = std::collections::HashMap::new();
    let mut off = 0u64;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut buf = Vec::new();
        for r in &batch {
            let rec = record(&r.key, &r.data);
            index.insert(r.key, (off + buf.len() as u64, rec.len() as u32));
            buf.extend_from_slice(&rec);
        }
        f.write_all(&buf).unwrap();
        rustix::fs::fdatasync(&f).unwrap();
        off += buf.len() as u64;
        syncs.fetch_add(1, Ordering::Relaxed);
        for r in batch {
            let _ = r.done.send(());
        }
    }
}

fn committer_redb(dir: PathBuf, rx: Receiver<Req>, syncs: Arc<AtomicU64>) {
    let db = redb::Database::create(dir.join("shards.redb")).unwrap();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            for r in &batch {
                let rec = record(&r.key, &r.data);
                t.insert(&r.key[..], &rec[..]).unwrap();
            }
        }
        tx.commit().unwrap();
        syncs.fetch_add(1, Ordering::Relaxed);
        for r in batch {
            let _ = r.done.send(());
        }
    }
}

fn write_file(dir: &Path, key: &[u8; 36], data: &[u8], n: u64) {
    let temp = dir.join("temp").join(format!("{n}"));
    let mut f = File::create(&temp).unwrap();
    f.write_all(&record(key, data)).unwrap();
    f.sync_all().unwrap();
    let sub = dir.join("objects").join(format!("{:02x}", key[0]));
    let target = sub.join(format!("{n}"));
    fs::rename(&temp, &target).unwrap();
    File::open(&sub).unwrap().sync_all().unwrap();
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (mode, dir, writers, secs, size) = (
        a[1].clone(),
        PathBuf::from(&a[2]),
        a[3].parse::<usize>().unwrap(),
        a[4].parse::<u64>().unwrap(),
        a[5].parse::<usize>().unwrap(),
    );
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("temp")).unwrap();
    for i in 0..256 {
        fs::create_dir_all(dir.join("objects").join(format!("{i:02x}"))).unwrap();
    }
    let syncs = Arc::new(AtomicU64::new(0));
    let (tx, rx) = channel::<Req>();
    let committer = match mode.as_str() {
        "volume" => {
            let (d, s) = (dir.clone(), syncs.clone());
            Some(std::thread::spawn(move || committer_volume(d, rx, s)))
        }
        "redb" => {
            let (d, s) = (dir.clone(), syncs.clone());
            Some(std::thread::spawn(move || committer_redb(d, rx, s)))
        }
        _ => None,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (tx, stop, counter, lat, dir, mode, syncs) =
                (tx.clone(), stop.clone(), counter.clone(), lat.clone(), dir.clone(), mode.clone(), syncs.clone());
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                let data = vec![w as u8; size];
                while !stop.load(Ordering::Relaxed) {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let mut key = [0u8; 36];
                    key[..8].copy_from_slice(&n.to_le_bytes());
                    key[0] = (n % 256) as u8;
                    let t = Instant::now();
                    if mode == "files" {
                        write_file(&dir, &key, &data, n);
                        syncs.fetch_add(2, Ordering::Relaxed);
                    } else {
                        let (dtx, drx) = channel();
                        tx.send(Req { key, data: data.clone(), done: dtx }).unwrap();
                        drx.recv().unwrap();
                    }
                    mine.push(t.elapsed());
                }
                lat.lock().unwrap().extend(mine);
            })
        })
        .collect();
    drop(tx);
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(c) = committer {
        let _ = c.join();
    }
    let mut l = lat.lock().unwrap().clone();
    l.sort();
    let ops = l.len();
    let p = |q: f64| l[((ops as f64 * q) as usize).min(ops - 1)].as_secs_f64() * 1000.0;
    let du = std::process::Command::new("du").args(["-s", "--block-size=1"]).arg(&dir).output().unwrap();
    let bytes: u64 = String::from_utf8_lossy(&du.stdout).split_whitespace().next().unwrap().parse().unwrap();
    println!(
        "{mode:6} writers={writers:3} size={size:6} ops/s={:8.0} syncs/op={:.3} p50={:.2}ms p99={:.2}ms disk/op={}B",
        ops as f64 / elapsed,
        syncs.load(Ordering::Relaxed) as f64 / ops as f64,
        p(0.5),
        p(0.99),
        bytes / ops as u64
    );
    let _ = fs::remove_dir_all(&dir);
}
