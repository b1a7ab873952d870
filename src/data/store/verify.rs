//! The shard store's read path: opening a committed shard in either home, checking
//! it against what a reader expects, and the scrubber's checks of one file or
//! record. Part of [`super`]; the data server's GET handler and [`crate::data::scrub`]
//! call it.

use std::io;

use super::{ShardStore, StoreError};
use crate::content::{ContentHash, Policy, ShardIndex};
use crate::data::shardfile::{ShardFileError, ShardReader};
use crate::data::volume::{Record, VolumeError};

/// A stored shard, opened for reading: a verified record from a volume, or a shard
/// file whose blocks are verified as they are read.
pub enum StoredShard {
    /// A small shard, read whole and verified.
    Record(Record),
    /// A shard file, header verified.
    File(ShardReader),
}

impl StoredShard {
    /// The shard's data length in bytes.
    pub fn data_len(&self) -> u64 {
        match self {
            StoredShard::Record(r) => r.data.len() as u64,
            StoredShard::File(f) => f.data_len(),
        }
    }

    /// The policy the shard was cut under, when its writer said.
    pub fn policy(&self) -> Option<Policy> {
        match self {
            StoredShard::Record(r) => r.policy,
            StoredShard::File(f) => f.policy(),
        }
    }

    /// Calls `sink` with the verified bytes of `[start, end)` (see
    /// [`ShardReader::read_range`]); a record's come in one piece.
    pub fn read_range(
        &mut self,
        start: u64,
        end: u64,
        mut sink: impl FnMut(Vec<u8>) -> bool,
    ) -> Result<(), ShardFileError> {
        match self {
            StoredShard::Record(r) => {
                let end = end.min(r.data.len() as u64);
                if start < end {
                    sink(r.data[start as usize..end as usize].to_vec());
                }
                Ok(())
            }
            StoredShard::File(f) => f.read_range(start, end, sink),
        }
    }
}

impl ShardStore {
    /// Opens a committed shard for reading: a volume record read whole and verified,
    /// or a shard file with its header verified.
    pub fn open_shard(&self, hash: &ContentHash, shard: ShardIndex) -> Result<StoredShard, StoreError> {
        if let Some(volumes) = &self.small {
            match volumes.get(hash, shard) {
                Ok(Some(record)) => return Ok(StoredShard::Record(record)),
                Ok(None) => {}
                Err(source) => return Err(StoreError::Volume { hash: *hash, shard, source }),
            }
        }
        self.open_file(hash, shard).map(StoredShard::File)
    }

    /// Opens a committed shard file for reading, verifying its header.
    fn open_file(&self, hash: &ContentHash, shard: ShardIndex) -> Result<ShardReader, StoreError> {
        ShardReader::open(&self.shard_path(hash, shard)).map_err(|source| match source {
            ShardFileError::Io(e) if e.kind() == io::ErrorKind::NotFound => {
                StoreError::NoSuchShard { hash: *hash, shard }
            }
            source => StoreError::Corrupt { hash: *hash, shard, source },
        })
    }

    /// Reads and verifies a shard file's data from `start`, about `max_bytes` of it
    /// (whole blocks), for the scrubber.
    pub fn verify_file(
        &self,
        hash: &ContentHash,
        shard: ShardIndex,
        start: u64,
        max_bytes: u64,
    ) -> Result<FileCheck, StoreError> {
        let mut reader = match self.open_file(hash, shard) {
            Ok(r) => r,
            Err(StoreError::NoSuchShard { .. }) => return Ok(FileCheck::Gone),
            Err(StoreError::Corrupt { source, .. }) => return Ok(FileCheck::Corrupt(source.to_string())),
            Err(e) => return Err(e),
        };
        let data_len = reader.data_len();
        let end = start.saturating_add(max_bytes.max(1)).min(data_len);
        match reader.read_range(start, end, |_| true) {
            Ok(()) => Ok(FileCheck::Good { data_len, end }),
            Err(ShardFileError::Io(e)) if e.kind() != io::ErrorKind::UnexpectedEof => Err(e.into()),
            Err(e) => Ok(FileCheck::Corrupt(e.to_string())),
        }
    }

    /// Reads and verifies a volume record (header, hash, both checksums), for the
    /// scrubber.
    pub fn verify_record(&self, hash: &ContentHash, shard: ShardIndex) -> Result<RecordCheck, StoreError> {
        let Some(volumes) = &self.small else { return Ok(RecordCheck::Gone) };
        match volumes.get(hash, shard) {
            Ok(Some(r)) => Ok(RecordCheck::Good { len: r.data.len() as u64 }),
            Ok(None) => Ok(RecordCheck::Gone),
            Err(e @ (VolumeError::Corrupt { .. } | VolumeError::Misplaced { .. })) => {
                Ok(RecordCheck::Corrupt(e.to_string()))
            }
            Err(source) => Err(StoreError::Volume { hash: *hash, shard, source }),
        }
    }
}

/// What verifying part of a shard file found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileCheck {
    /// `[start, end)` checks; the shard holds `data_len` bytes.
    Good {
        /// The shard's data length.
        data_len: u64,
        /// Verified up to here.
        end: u64,
    },
    /// The header or a block fails its check: why.
    Corrupt(String),
    /// No such file (deleted or moved since it was listed).
    Gone,
}

/// What verifying a volume record found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordCheck {
    /// It checks; `len` bytes.
    Good {
        /// Its data length.
        len: u64,
    },
    /// It fails a check: why.
    Corrupt(String),
    /// Not in the index (deleted since it was listed).
    Gone,
}

/// Checks a stored shard against what a reader expects: the same data length when
/// `expected_len` is given, the same policy when both sides know it.
pub fn check_identity(
    hash: &ContentHash,
    shard: ShardIndex,
    stored: &StoredShard,
    expected_len: Option<u64>,
    expected_policy: Option<Policy>,
) -> Result<(), StoreError> {
    let len_differs = expected_len.is_some_and(|l| l != stored.data_len());
    let policy_differs = matches!((expected_policy, stored.policy()), (Some(e), Some(s)) if e != s);
    if len_differs || policy_differs {
        return Err(StoreError::IdentityMismatch {
            hash: *hash,
            shard,
            stored_len: stored.data_len(),
            stored_policy: stored.policy(),
            expected_len,
            expected_policy,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{store, write_temp_as, P12, P42};
    use super::*;

    #[test]
    fn identity_checks_compare_what_both_sides_know() {
        let (_dir, store) = store();
        let hash = ContentHash::of(b"id");
        let id = write_temp_as(&store, b"12345", Some(P42));
        store.commit(id, &hash, 0, 5, Some(P42)).unwrap();
        let r = store.open_shard(&hash, 0).unwrap();
        assert!(check_identity(&hash, 0, &r, None, None).is_ok());
        assert!(check_identity(&hash, 0, &r, Some(5), Some(P42)).is_ok());
        let err = check_identity(&hash, 0, &r, Some(6), None).unwrap_err();
        assert!(err.to_string().contains("5 bytes") && err.to_string().contains("6 bytes"), "{err}");
        let err = check_identity(&hash, 0, &r, Some(5), Some(P12)).unwrap_err();
        assert!(err.to_string().contains("4+2") && err.to_string().contains("1+2"), "{err}");
        // A shard that does not know its policy matches any.
        let id = write_temp_as(&store, b"12345", None);
        store.commit(id, &hash, 1, 5, None).unwrap();
        let r = store.open_shard(&hash, 1).unwrap();
        assert!(check_identity(&hash, 1, &r, Some(5), Some(P12)).is_ok());
    }
}
