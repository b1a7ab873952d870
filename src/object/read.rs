//! The read path: find a holder of the content's shards and stream the bytes asked
//! for, moving to another holder — from the same offset — when one fails, even in
//! the middle of a body.
//!
//! The recorded placement is tried first (no bus traffic on the normal path); only
//! when no recorded holder can serve does the read ask the bus, and then it records
//! the placement it found. A read never serves wrong bytes: data servers verify
//! every block, and a stream that breaks is resumed elsewhere or ended with an
//! error, which aborts the client's response.

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::{ObjectError, ObjectService};
use crate::content::{Placement, ShardIndex};
use crate::meta::ContentRecord;
use crate::range::ByteRange;

/// Chunks buffered between the data server and the client.
const READ_AHEAD: usize = 8;

/// The verified bytes of a read, as they arrive.
pub type ObjectStream = tokio_stream::wrappers::ReceiverStream<Result<Bytes, std::io::Error>>;

/// A holder to try: which shard on which server.
type Candidate = (ShardIndex, String);

impl ObjectService {
    /// Streams bytes `range` of `content`.
    ///
    /// Fails before the first byte when no holder can be opened; after that a broken
    /// stream ends with an error item.
    pub async fn read(&self, content: &ContentRecord, range: ByteRange) -> Result<ObjectStream, ObjectError> {
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        if range.is_empty() {
            return Ok(ObjectStream::new(rx));
        }
        let mut candidates = self.ordered(&content.placement);
        let mut reasons = Vec::new();
        let mut response = self.open_first(content, range, &mut candidates, &mut reasons).await;
        if response.is_none() {
            // The recorded placement failed us: ask the bus who holds the shards now.
            let located = self.locate(content).await?;
            if !located.is_empty() && located != content.placement {
                if let Err(e) = self.meta.set_placement(&content.hash, &located).await {
                    tracing::warn!(error = %e, hash = %content.hash, "could not record the located placement");
                }
            }
            candidates = self.ordered(&located);
            response = self.open_first(content, range, &mut candidates, &mut reasons).await;
        }
        let Some(first) = response else {
            if reasons.is_empty() {
                reasons.push("no data server holds a shard".into());
            }
            return Err(ObjectError::Unavailable { hash: content.hash, reasons: reasons.join("; ") });
        };
        let service = self.clone();
        let content = content.clone();
        tokio::spawn(async move { service.pump(first, content, range, candidates, tx).await });
        Ok(ObjectStream::new(rx))
    }

    /// Holders in the order to try them: live servers first.
    fn ordered(&self, placement: &Placement) -> Vec<Candidate> {
        let (mut live, dead): (Vec<Candidate>, Vec<Candidate>) =
            placement.iter().map(|(s, a)| (*s, a.clone())).partition(|(_, addr)| self.membership.is_live(addr));
        live.extend(dead);
        // Popped from the back.
        live.reverse();
        live
    }

    /// Opens the first candidate that answers, consuming the ones that failed.
    async fn open_first(
        &self,
        content: &ContentRecord,
        range: ByteRange,
        candidates: &mut Vec<Candidate>,
        reasons: &mut Vec<String>,
    ) -> Option<reqwest::Response> {
        let whole = range.start == 0 && range.end == content.size;
        while let Some((shard, addr)) = candidates.pop() {
            match self.client.read(&addr, &content.hash, shard, (!whole).then_some(range)).await {
                Ok(resp) => return Some(resp),
                Err(e) => {
                    tracing::warn!(error = %e, "shard read failed; trying another holder");
                    reasons.push(e.to_string());
                }
            }
        }
        None
    }

    /// Forwards `first`'s body to `tx`, resuming from the next candidate at the same
    /// offset when a stream breaks or ends short.
    async fn pump(
        &self,
        first: reqwest::Response,
        content: ContentRecord,
        range: ByteRange,
        mut candidates: Vec<Candidate>,
        tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) {
        let mut pos = range.start;
        let mut response = first;
        loop {
            let mut body = response.bytes_stream();
            let mut failure = None;
            while let Some(chunk) = body.next().await {
                match chunk {
                    Ok(bytes) => {
                        let room = (range.end - pos) as usize;
                        let bytes = if bytes.len() > room { bytes.slice(..room) } else { bytes };
                        pos += bytes.len() as u64;
                        if tx.send(Ok(bytes)).await.is_err() {
                            return; // the client went away
                        }
                        if pos == range.end {
                            return;
                        }
                    }
                    Err(e) => {
                        failure = Some(super::client::error_chain(&e));
                        break;
                    }
                }
            }
            if pos == range.end {
                return;
            }
            let reason = failure.unwrap_or_else(|| "stream ended short".into());
            tracing::warn!(hash = %content.hash, offset = pos, %reason, "shard stream broke; resuming from another holder");
            let rest = ByteRange { start: pos, end: range.end };
            let mut reasons = vec![reason];
            match self.open_first(&content, rest, &mut candidates, &mut reasons).await {
                Some(next) => response = next,
                None => {
                    let msg = format!("content {} unreadable at byte {pos}: {}", content.hash, reasons.join("; "));
                    tracing::error!("{msg}");
                    let _ = tx.send(Err(std::io::Error::other(msg))).await;
                    return;
                }
            }
        }
    }
}

/// Collects a stream into memory: for tests and small objects.
pub async fn collect(
    mut stream: impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}
