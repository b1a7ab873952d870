//! The bus's messages as cairn sends them: the typed JSON bodies ([`Heartbeat`],
//! [`LocateRequest`], [`LocateReply`]), and the checks every message passes once,
//! where it is decoded, before the rest of cairn sees it.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{validate_addr, Delivery, InvalidAddr, MAX_REPLY_SHARDS};
use crate::content::{ContentHash, ShardIndex};
use crate::secret::{self, Refusal, Verifier};

/// A data server's periodic "I am alive", published on `apiServers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The data server's HTTP address (`host:port`), as API servers should dial it.
    pub addr: String,
    /// Free bytes on its storage root, used to weight placement.
    pub free: u64,
}

/// "Who holds shards of this content?", published on `dataServers`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocateRequest {
    /// The content asked for.
    pub hash: ContentHash,
}

/// A data server's answer to a [`LocateRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocateReply {
    /// The answering data server's HTTP address.
    pub addr: String,
    /// The shard indices of the content it holds; empty when it holds none.
    pub shards: Vec<ShardIndex>,
}

/// A locate request as a data server receives it, with what it needs to answer.
#[derive(Clone, Debug)]
pub struct IncomingLocate {
    /// The request.
    pub request: LocateRequest,
    /// The asker's reply queue.
    pub reply_to: String,
    /// The asker's correlation id, echoed in the reply.
    pub correlation_id: String,
}

/// Why a message from the bus was dropped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The body is not the JSON of the expected message.
    #[error("not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The message names a data server address that is not `host:port`.
    #[error("address is not host:port: {0}")]
    BadAddr(#[from] InvalidAddr),
    /// A locate reply lists more shard indices than [`MAX_REPLY_SHARDS`].
    #[error("locate reply lists {count} shards, more than {MAX_REPLY_SHARDS}")]
    TooManyShards {
        /// How many it listed.
        count: usize,
    },
    /// A locate reply lists the same shard index twice.
    #[error("locate reply lists shard {shard} twice")]
    DuplicateShard {
        /// The repeated index.
        shard: ShardIndex,
    },
    /// A locate request has no `reply_to` property.
    #[error("locate request without reply_to")]
    NoReplyTo,
    /// A locate request or reply has no `correlation_id` property.
    #[error("message without correlation_id")]
    NoCorrelationId,
    /// The bus has a cluster secret and the message's signature does not pass.
    #[error(transparent)]
    Unauthenticated(#[from] Refusal),
    /// The bus has no cluster secret and the message is signed (a closed cluster's).
    #[error("signed message on an open bus (a closed cluster's)")]
    SignedElsewhere,
}

impl DecodeError {
    /// The `reason` label of [`crate::telemetry::BUS_DROPPED`].
    pub fn label(&self) -> &'static str {
        match self {
            DecodeError::Unauthenticated(refusal) => refusal.as_str(),
            DecodeError::SignedElsewhere => "signed_elsewhere",
            _ => "malformed",
        }
    }
}

/// The three kinds of bus message, each signed under its own name so a signed
/// message of one kind can never pass for another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// A [`Heartbeat`].
    Heartbeat,
    /// A [`LocateRequest`].
    LocateRequest,
    /// A [`LocateReply`].
    LocateReply,
}

impl MessageKind {
    /// What a signature of this kind covers besides the JSON body: the kind's name
    /// and the properties the receiver acts on.
    pub(super) fn parts<'a>(self, reply_to: Option<&'a str>, correlation_id: Option<&'a str>) -> Vec<&'a [u8]> {
        let (reply_to, correlation_id) = (reply_to.unwrap_or("").as_bytes(), correlation_id.unwrap_or("").as_bytes());
        match self {
            MessageKind::Heartbeat => vec![b"heartbeat"],
            MessageKind::LocateRequest => vec![b"locate", reply_to, correlation_id],
            MessageKind::LocateReply => vec![b"locate-reply", correlation_id],
        }
    }
}

/// The JSON of a delivery of `kind`, once its signature checks out: with a
/// `verifier`, a valid signature is required; without one, a signed message is
/// refused ([`DecodeError::SignedElsewhere`]).
pub fn authenticate<'a>(
    verifier: Option<&Verifier>,
    kind: MessageKind,
    d: &'a Delivery,
) -> Result<&'a [u8], DecodeError> {
    let (signature, json) = secret::open_envelope(&d.body)?;
    match (verifier, signature) {
        (Some(verifier), Some(signature)) => {
            let mut parts = kind.parts(d.reply_to.as_deref(), d.correlation_id.as_deref());
            parts.push(json);
            verifier.verify(signature, &parts)?;
            Ok(json)
        }
        (Some(_), None) => Err(Refusal::Missing.into()),
        (None, Some(_)) => Err(DecodeError::SignedElsewhere),
        (None, None) => Ok(json),
    }
}

/// Decodes and checks a heartbeat body: JSON of a [`Heartbeat`] whose `addr` passes
/// [`validate_addr`].
pub fn decode_heartbeat(body: &[u8]) -> Result<Heartbeat, DecodeError> {
    let hb: Heartbeat = serde_json::from_slice(body)?;
    validate_addr(&hb.addr)?;
    Ok(hb)
}

/// Decodes and checks a locate reply body: JSON of a [`LocateReply`] whose `addr`
/// passes [`validate_addr`] and whose `shards` are at most [`MAX_REPLY_SHARDS`]
/// distinct indices. Whether the indices fit the content's policy and the address
/// belongs to a live member is for the asker to check.
pub fn decode_locate_reply(body: &[u8]) -> Result<LocateReply, DecodeError> {
    let reply: LocateReply = serde_json::from_slice(body)?;
    validate_addr(&reply.addr)?;
    if reply.shards.len() > MAX_REPLY_SHARDS {
        return Err(DecodeError::TooManyShards { count: reply.shards.len() });
    }
    let mut seen = HashSet::with_capacity(reply.shards.len());
    if let Some(&shard) = reply.shards.iter().find(|s| !seen.insert(**s)) {
        return Err(DecodeError::DuplicateShard { shard });
    }
    Ok(reply)
}

/// Decodes a locate request as a data server receives it (`json`: its body's JSON).
pub(super) fn decode_locate_request(d: &Delivery, json: &[u8]) -> Result<IncomingLocate, DecodeError> {
    let request: LocateRequest = serde_json::from_slice(json)?;
    let reply_to = d.reply_to.clone().ok_or(DecodeError::NoReplyTo)?;
    let correlation_id = d.correlation_id.clone().ok_or(DecodeError::NoCorrelationId)?;
    Ok(IncomingLocate { request, reply_to, correlation_id })
}
