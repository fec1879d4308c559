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
    /// Validate and queue a transaction; answered as soon as it is accepted for the next block
    /// (for high-rate submitters like provers, which track their own nonces).
    Enqueue(SignedTx),
    /// Deals in which this provider holds (or is assigned) a slot.
    HeldBy(PublicKey),
    /// Deals whose object id or deal id starts with this lowercase hex prefix.
    Find(String),
    /// Live deals with at least one freed slot waiting for a repairer.
    Repairable,
    /// One page of registered providers, in key order, after `after`.
    ProviderPage {
        after: Option<PublicKey>,
    },
    /// One page of the deals `query` selects, in id order, after `after`.
    DealPage {
        query: DealQuery,
        after: Option<DealId>,
    },
}

/// The requests that list an unbounded number of records (`Providers`, `DealsOf`, `HeldBy`,
/// `Find`, `Repairable`) are retired: a ledger answers them with an error. Their paged forms
/// answer at most [`MAX_PAGE_ITEMS`] records and about [`MAX_PAGE_BYTES`] a request.
pub const MAX_PAGE_ITEMS: usize = 256;
/// Roughly the most record bytes in one page (a page stops after the record that crosses it).
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// Which deals a [`LedgerRequest::DealPage`] lists: live ones only (an ended deal leaves the
/// live state; [`LedgerRequest::Deal`] still answers it by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DealQuery {
    /// Live deals a creator opened.
    OfCreator(PublicKey),
    /// Live deals in which this provider holds (or is assigned) a slot.
    HeldBy(PublicKey),
    /// Live deals with at least one freed slot waiting for a repairer.
    Repairable,
    /// Live deals whose object id or deal id starts with this lowercase hex prefix.
    Matching(String),
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
    /// The chain's id: what every transaction for it must name.
    pub chain: crate::escrow::ChainId,
    /// The beacon of epoch 0, from which anyone can rebuild the genesis state and check the id.
    pub genesis_beacon: [u8; 32],
}

/// The ledger's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerResponse {
    /// The transaction is in block `height`.
    Included {
        height: u64,
        tx_id: [u8; 32],
    },
    /// Retired: refusals are sent as [`LedgerResponse::Refused`], which programs can act on.
    Rejected(String),
    Status(Box<ChainStatus>),
    Account(Account),
    Provider(Option<Provider>),
    Providers(Vec<(PublicKey, Provider)>),
    Deal(Option<Deal>),
    Deals(Vec<(DealId, Deal)>),
    Block(Option<Block>),
    /// The request could not be served.
    Error(String),
    /// The transaction is accepted for the next block.
    Accepted {
        tx_id: [u8; 32],
    },
    /// A page of providers; `next` is the cursor for the following page, `None` at the end.
    ProviderPage {
        items: Vec<(PublicKey, Provider)>,
        next: Option<PublicKey>,
    },
    /// A page of deals; `next` is the cursor for the following page, `None` at the end.
    DealPage {
        items: Vec<(DealId, Deal)>,
        next: Option<DealId>,
    },
    /// The transaction was refused, and why.
    Refused(Refusal),
}

/// Why a ledger refused a transaction: typed, so a client decides on the variant (a stale nonce
/// is retried, a broken rule is not); its `Display` is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The settlement rules refused it.
    #[error("{0}")]
    Escrow(crate::escrow::EscrowError),
    /// The signed envelope did not verify (size, encoding, signature).
    #[error("{0}")]
    Envelope(String),
    /// The ledger's queue for the next block is full.
    #[error("the ledger is busy; retry after the next block")]
    Busy,
}

/// Largest shard-protocol header frame.
pub const MAX_SHARD_HEADER: usize = 64 * 1024;

/// A request on an `/atlas/shard/1` stream. Several may follow each other on one stream; each is
/// answered with one [`ShardResponse`] before the next is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardRequest {
    /// Store shard `stripe` of `slot` of `deal`; `len` raw bytes follow this frame.
    Put {
        deal: DealId,
        slot: u16,
        stripe: u64,
        len: u64,
        siblings: Vec<crate::tree::Cv>,
    },
    /// Send shard `stripe` of `slot` of `object`, with the sibling CVs that prove it.
    Get {
        object: crate::id::ObjectId,
        slot: u16,
        stripe: u64,
    },
}

/// The answer on an `/atlas/shard/1` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShardResponse {
    /// Stored; `complete` when it was the slot's last shard (the provider then accepts the slot).
    Stored { complete: bool },
    /// `len` raw bytes follow this frame.
    Shard {
        len: u64,
        siblings: Vec<crate::tree::Cv>,
    },
    /// Refused; the reason is for people.
    Error(String),
    /// Over a limit (streams or bytes in flight from this peer, or in all), or unable to tell
    /// yet whether the request may be served (the provider cannot reach the ledger); nothing
    /// was read past the request's header and the stream is closed. Try again later.
    Busy,
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
