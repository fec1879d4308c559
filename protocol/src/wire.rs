//! Messages on the wire. One format, postcard, each message behind a 4-byte big-endian length that
//! is checked against the message type's cap before anything is allocated.
//!
//! Enum variants are never reordered: new ones are appended, retired ones stay.

use crate::chain::{Block, SignedHeader};
use crate::escrow::{Account, Deal, Params, Provider, SignedTx};
use crate::id::DealId;
use crate::sign::PublicKey;
use serde::{Deserialize, Serialize};

/// Ledger queries and submissions (request-response).
pub const LEDGER_PROTOCOL: &str = "/atlas/ledger/1";
/// Shard bytes (raw streams).
pub const SHARD_PROTOCOL: &str = "/atlas/shard/1";
/// Gossipsub topic for new block headers.
pub const BLOCKS_TOPIC: &str = "atlas/blocks/1";

/// Largest ledger request (a transaction with a manifest and a proof fits easily).
pub const MAX_LEDGER_REQUEST: usize = 256 * 1024;
/// Largest ledger response (a block or a list of deals).
pub const MAX_LEDGER_RESPONSE: usize = 16 * 1024 * 1024;

/// A question or a submission to the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerRequest {
    /// Order this transaction; answered once it is in a persisted block, or refused.
    Submit(SignedTx),
    Status,
    Account(PublicKey),
    Provider(PublicKey),
    Providers,
    Deal(DealId),
    /// Deals a creator opened.
    DealsOf(PublicKey),
    Block(u64),
}

/// Where the chain stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainStatus {
    pub height: u64,
    pub epoch: u64,
    pub beacon: [u8; 32],
    pub epoch_blocks: u64,
    pub block_time_ms: u64,
    pub params: Params,
    pub head: Option<SignedHeader>,
    pub sequencer: PublicKey,
}

/// The ledger's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerResponse {
    /// The transaction is in block `height`.
    Included {
        height: u64,
        tx_id: [u8; 32],
    },
    /// The transaction was refused; the reason is for people.
    Rejected(String),
    Status(ChainStatus),
    Account(Account),
    Provider(Option<Provider>),
    Providers(Vec<(PublicKey, Provider)>),
    Deal(Option<Deal>),
    Deals(Vec<(DealId, Deal)>),
    Block(Option<Block>),
    /// The request could not be served.
    Error(String),
}

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("message of {len} bytes is over the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
}

/// Encodes a message body (without the length prefix).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_stdvec(msg).expect("serializing to a Vec cannot fail")
}

/// Decodes a message body, refusing anything over `max` bytes.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], max: usize) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    Ok(postcard::from_bytes(bytes)?)
}
