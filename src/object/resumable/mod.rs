//! Resumable uploads (the object side of tus 1.0, [`crate::api::tus`]): an upload
//! is built of parts, each stored as content like any other and appended to the
//! upload's record in the metadata store, until its last byte arrives and it
//! becomes a version.
//!
//! The API tier keeps nothing: the upload's offset, its parts and the running
//! SHA-256 of its bytes ([`ResumableSha256`]) live in the metadata store, its bytes
//! in the data tier, so any API server can take the next PATCH, and a restart loses
//! nothing acknowledged.
//!
//! - A PATCH body is cut into parts of at most [`UploadSettings::part_size`]; each
//!   part is [`store`](ObjectService::store)d (erasure coded, to its write quorum,
//!   deduped) and then appended in one metadata transaction with a compare-and-set
//!   on the offset: of two PATCHes racing at one offset, the loser gets
//!   [`ResumableError::OffsetConflict`]. Without a checksum every part is appended
//!   as soon as it is stored, so a connection that breaks keeps every byte it
//!   delivered (its last, shorter part included, as tus recommends). With a
//!   checksum the PATCH's parts are appended together once the whole body matched,
//!   and not at all otherwise (the stored parts are orphans for the collector).
//! - Completion (offset == length) is synchronous inside the request that brings
//!   the last byte: the hash is known from the running state; a mismatch with the
//!   digest given at creation removes the upload; otherwise the parts are read back
//!   in order through the read path into one new content (nothing is copied when
//!   content with that hash is already stored) and, in one transaction, the version
//!   is added and the upload marked finished (its part rows dropped, their content
//!   left to the collector). A crash in between leaves the upload complete but
//!   unfinished; the next HEAD or PATCH finishes it. The cost: the last PATCH of a
//!   large upload answers only after a full read and write of the object.
//!
//! Memory stays bounded by configuration: one part streams at a time, through the
//! write path's own bounded buffers. The upload's running SHA-256 and a PATCH's
//! checksum are updated inline as each body chunk passes (a chunk is at most a
//! connection read, so each update is tens of microseconds of the runtime's time);
//! the write path hashes each part again on its own thread, as it does for a PUT.
//!
//! This file holds the settings, errors and records of an upload and its
//! creation, lookup and termination; the append path (a PATCH cut into parts) is
//! in `patch.rs`, completion (parts read back into one version) in `finish.rs`.

mod finish;
mod patch;

use std::time::Duration;

use sha2::digest::DynDigest;

use super::resumable_hash::{BadHashState, ResumableSha256};
use super::{ObjectError, ObjectService};
use crate::clock::now_ms;
use crate::content::ContentHash;
use crate::meta::{AppendOutcome, MetaError, UploadAppend, UploadRecord};

/// How resumable uploads behave; set once per API server (`--upload-*` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadSettings {
    /// An upload untouched for this long expires (creation and every PATCH count).
    pub expiry: Duration,
    /// A PATCH body is stored as parts of at most this many bytes: what a broken
    /// connection can lose at most is one part's worth of work (with no checksum,
    /// not even that: the shorter last part is kept).
    pub part_size: u64,
    /// The largest upload accepted (`Tus-Max-Size`).
    pub max_size: u64,
}

impl Default for UploadSettings {
    /// 24 hours, 16 MiB parts, 5 TiB.
    fn default() -> Self {
        UploadSettings { expiry: Duration::from_secs(24 * 3600), part_size: 16 << 20, max_size: 5 << 40 }
    }
}

/// Parts fetched from the store per step while a finished upload is read back.
const PARTS_STEP: usize = 64;

/// Why an upload request failed, each a fact the tus handlers map to a status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResumableError {
    /// No such upload, or it expired.
    #[error("no such upload")]
    NoSuchUpload,
    /// The request's offset is not the upload's, or another PATCH moved it first.
    #[error("the upload is at offset {offset}, not {asked}")]
    OffsetConflict {
        /// Where the upload is.
        offset: u64,
        /// What the request said.
        asked: u64,
    },
    /// The body runs past the upload's length (or the largest upload).
    #[error("the body runs past the upload's length of {limit} bytes")]
    TooLarge {
        /// The length it may not pass.
        limit: u64,
    },
    /// A length was given for an upload that has one, or is below its offset.
    #[error("Upload-Length {asked} refused: {why}")]
    BadLength {
        /// The length asked for.
        asked: u64,
        /// Why.
        why: &'static str,
    },
    /// The PATCH body does not match its `Upload-Checksum`; nothing was appended.
    #[error("the body does not match its {algorithm} Upload-Checksum")]
    ChecksumMismatch {
        /// The algorithm.
        algorithm: ChecksumAlgorithm,
    },
    /// The finished upload does not hash to the digest given at its creation; the
    /// upload was removed and nothing became visible.
    #[error("the upload's SHA-256 is {actual}, its creation's digest header said {expected}; the upload was removed")]
    DigestMismatch {
        /// The digest given at creation.
        expected: ContentHash,
        /// What the bytes hash to.
        actual: ContentHash,
    },
    /// The stored hash state is unreadable.
    #[error("upload {id}: {source}")]
    BadState {
        /// The upload.
        id: String,
        /// What is wrong with it.
        source: BadHashState,
    },
    /// The front door's [`FinishGate`] refused to let the upload become a version
    /// (its key was deleted or narrowed since the upload began); nothing changed.
    #[error("the upload may not be finished: {reason}")]
    FinishRefused {
        /// Why, in the door's words.
        reason: String,
    },
    /// The object paths failed (data tier, metadata store, the client's body).
    #[error(transparent)]
    Object(#[from] ObjectError),
}

/// Asked just before an upload whose bytes are all in becomes a version, after
/// however long its last PATCH streamed: the front door checks again that whoever
/// drives the upload may still finish it, and says why not otherwise
/// ([`ResumableError::FinishRefused`]). The object paths know nothing of keys.
#[async_trait::async_trait]
pub trait FinishGate: Send + Sync {
    /// `Ok` to let `upload` become a version.
    async fn may_finish(&self, upload: &UploadRecord) -> Result<(), String>;
}

impl From<MetaError> for ResumableError {
    fn from(e: MetaError) -> Self {
        ResumableError::Object(ObjectError::Meta(e))
    }
}

/// The algorithms `Upload-Checksum` may name (tus `Tus-Checksum-Algorithm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// MD5.
    Md5,
}

impl ChecksumAlgorithm {
    /// Every supported algorithm, as `Tus-Checksum-Algorithm` lists them.
    pub const ALL: &'static str = "sha1,sha256,md5";

    /// The algorithm of a tus name (`sha1`, `sha256`, `md5`), case-insensitively.
    pub fn from_name(name: &str) -> Option<ChecksumAlgorithm> {
        match name.to_ascii_lowercase().as_str() {
            "sha1" => Some(ChecksumAlgorithm::Sha1),
            "sha256" => Some(ChecksumAlgorithm::Sha256),
            "md5" => Some(ChecksumAlgorithm::Md5),
            _ => None,
        }
    }

    fn hasher(self) -> Box<dyn DynDigest + Send> {
        match self {
            ChecksumAlgorithm::Sha1 => Box::new(sha1::Sha1::default()),
            ChecksumAlgorithm::Sha256 => Box::new(sha2::Sha256::default()),
            ChecksumAlgorithm::Md5 => Box::new(md5::Md5::default()),
        }
    }
}

impl std::fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChecksumAlgorithm::Sha1 => "sha1",
            ChecksumAlgorithm::Sha256 => "sha256",
            ChecksumAlgorithm::Md5 => "md5",
        })
    }
}

/// A PATCH's `Upload-Checksum`: the algorithm and the digest its body must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checksum {
    /// The algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// The digest the body must have.
    pub digest: Vec<u8>,
}

/// A new upload ([`ObjectService::create_upload`]).
#[derive(Clone, Debug)]
pub struct NewUpload {
    /// The bucket of the object it becomes.
    pub bucket: String,
    /// The object's (validated) name.
    pub name: String,
    /// Its length, `None` when deferred.
    pub length: Option<u64>,
    /// `Upload-Metadata` as sent, kept for HEAD.
    pub metadata: String,
    /// The SHA-256 the finished upload must have, if the client named one.
    pub expected: Option<ContentHash>,
}

/// A PATCH ([`ObjectService::append_to_upload`]).
#[derive(Clone, Debug)]
pub struct Patch {
    /// The offset the client says the upload is at (`Upload-Offset`).
    pub offset: u64,
    /// A length for a deferred upload (`Upload-Length`).
    pub length: Option<u64>,
    /// The body's checksum, if the client sent one.
    pub checksum: Option<Checksum>,
    /// The body's `Content-Length`, if declared: one that would run past the
    /// upload's length is refused before a byte is read.
    pub declared: Option<u64>,
}

/// Where an upload stands after a request: its record, and the version it became
/// once finished.
#[derive(Clone, Debug)]
pub struct UploadState {
    /// The upload's record as the store holds it now.
    pub upload: UploadRecord,
    /// The version the upload became, once finished.
    pub version: Option<u64>,
    /// The finished object's hash, when this request finished it.
    pub hash: Option<ContentHash>,
}

impl UploadState {
    fn of(upload: UploadRecord) -> UploadState {
        let version = upload.finished_version;
        UploadState { upload, version, hash: None }
    }
}

fn expiry_after(settings: &UploadSettings, now: i64) -> i64 {
    now.saturating_add(i64::try_from(settings.expiry.as_millis()).unwrap_or(i64::MAX))
}

/// A fresh upload id: 128 bits from the operating system's CSPRNG, as 32 hex
/// digits.
pub fn new_upload_id() -> String {
    use rand::rngs::OsRng;
    use rand::TryRngCore;
    let mut bytes = [0u8; 16];
    // The OS RNG failing is a broken host; fall back to the thread RNG (a CSPRNG
    // seeded from the OS) rather than refuse the upload.
    if OsRng.try_fill_bytes(&mut bytes).is_err() {
        rand::fill(&mut bytes);
    }
    hex::encode(bytes)
}

/// Whether `id` has the shape [`new_upload_id`] gives (anything else is not
/// looked up at all).
pub fn valid_upload_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl ObjectService {
    /// Records a new upload; one of length 0 is finished at once.
    pub async fn create_upload(
        &self,
        new: NewUpload,
        settings: &UploadSettings,
        gate: &dyn FinishGate,
    ) -> Result<UploadState, ResumableError> {
        let now = now_ms();
        let upload = UploadRecord {
            id: new_upload_id(),
            bucket: new.bucket,
            name: new.name,
            length: new.length,
            offset: 0,
            metadata: new.metadata,
            expected: new.expected,
            hasher: ResumableSha256::new().to_bytes(),
            created_ms: now,
            expires_ms: expiry_after(settings, now),
            finished_version: None,
        };
        self.meta.create_upload(&upload).await?;
        self.metrics.uploads_created.increment(1);
        self.settle(upload, gate).await
    }

    /// The upload `id` as it stands, finishing it first (if `gate` agrees) if all
    /// its bytes arrived but an earlier completion did not finish (a crash, a
    /// failed data server). Unknown, malformed and expired ids are
    /// [`ResumableError::NoSuchUpload`].
    pub async fn upload_state(&self, id: &str, gate: &dyn FinishGate) -> Result<UploadState, ResumableError> {
        let upload = self.live_upload(id).await?;
        self.settle(upload, gate).await
    }

    /// The record of upload `id` as stored, changing nothing (the doors learn an
    /// upload's bucket from it before they decide whether a request may touch it).
    pub async fn upload_record(&self, id: &str) -> Result<UploadRecord, ResumableError> {
        self.live_upload(id).await
    }

    /// Removes the upload `id` (tus termination). Its parts' content is left to
    /// the collector.
    pub async fn terminate_upload(&self, id: &str) -> Result<(), ResumableError> {
        self.live_upload(id).await?;
        if !self.meta.delete_upload(id).await? {
            return Err(ResumableError::NoSuchUpload);
        }
        Ok(())
    }

    /// One append; a lost compare-and-set is the client's offset conflict.
    async fn append(&self, id: &str, append: UploadAppend<'_>, asked: u64) -> Result<u64, ResumableError> {
        let bytes: u64 = append.parts.iter().map(|p| p.size).sum();
        match self.meta.append_upload(id, append).await? {
            AppendOutcome::Appended { offset } => {
                self.metrics.upload_bytes.increment(bytes);
                Ok(offset)
            }
            AppendOutcome::Conflict { offset } => Err(ResumableError::OffsetConflict { offset, asked }),
            AppendOutcome::Gone => Err(ResumableError::NoSuchUpload),
        }
    }

    /// The upload `id` if it exists and has not expired.
    async fn live_upload(&self, id: &str) -> Result<UploadRecord, ResumableError> {
        if !valid_upload_id(id) {
            return Err(ResumableError::NoSuchUpload);
        }
        match self.meta.upload(id).await? {
            Some(upload) if upload.expires_ms > now_ms() => Ok(upload),
            _ => Err(ResumableError::NoSuchUpload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_hex_of_128_bits() {
        let (a, b) = (new_upload_id(), new_upload_id());
        assert!(valid_upload_id(&a) && valid_upload_id(&b));
        assert_ne!(a, b);
        assert!(!valid_upload_id(&a[..31]));
        assert!(!valid_upload_id(&a.to_uppercase().replace(|c: char| c.is_ascii_digit(), "A")));
        assert!(!valid_upload_id("../../etc/passwd"));
    }

    #[test]
    fn checksum_names() {
        assert_eq!(ChecksumAlgorithm::from_name("SHA1"), Some(ChecksumAlgorithm::Sha1));
        assert_eq!(ChecksumAlgorithm::from_name("md5"), Some(ChecksumAlgorithm::Md5));
        assert_eq!(ChecksumAlgorithm::from_name("crc32"), None);
    }
}
