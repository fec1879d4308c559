//! The creator's and reader's side: encode a file, pin it to providers, find an object's deal and
//! best holders, and read any object back from them, verified. The gateway and the repairer read
//! through here too.
//!
//! - [`encode`]: a file into slot files and a signed manifest.
//! - [`pin`]: open a deal and upload every slot to its provider.
//! - [`holders`]: the deal behind an id prefix, and per slot the holder best placed to serve it.
//! - [`read`]: [`read::ObjectReader`] and [`read::read_object`], the one way an object is read.
//! - [`lanes`]: the pipelined shard streams a read draws from, one per holder.
//! - [`dial`]: opening a shard stream to a provider.

pub mod dial;
pub mod encode;
pub mod holders;
pub mod lanes;
pub mod pin;
pub mod read;

use crate::ledger::LedgerError;
use crate::net::NetError;
use crate::wire::WireError;
use atlas_protocol::escrow::Deal;
use atlas_protocol::manifest::VerifiedManifest;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("'{0}' is not an object or deal id: {1}")]
    BadId(String, String),
    #[error("no object or deal matches '{0}'")]
    NoMatch(String),
    #[error("'{prefix}' matches {count} objects; give more of the id")]
    Ambiguous { prefix: String, count: usize },
    #[error("the deal's manifest does not verify: {0}")]
    Manifest(String),
    #[error("a provider has an invalid peer id")]
    BadPeerId,
    #[error("cannot open a shard stream to {peer}: {reason}")]
    Stream { peer: String, reason: String },
    #[error("{0}")]
    TooFewProviders(String),
    #[error("provider refused shard {stripe} of slot {slot}: {reason}")]
    ShardRefused {
        slot: u16,
        stripe: u64,
        reason: String,
    },
    #[error("the holder {0}")]
    BadHolder(String),
    #[error("the provider is over a limit (streams or bytes in flight); try again later")]
    ProviderBusy,
    #[error("slots {0:?} were uploaded but not accepted on the ledger within 2 minutes")]
    NotAccepted(Vec<usize>),
    #[error(
        "cannot rebuild: stripe {stripe} has only {available} of the {needed} shards it needs (holders of slots {failed:?} could not serve); nothing was written"
    )]
    Unreadable {
        stripe: u64,
        available: usize,
        needed: usize,
        failed: Vec<usize>,
    },
    #[error(transparent)]
    Decode(#[from] atlas_protocol::erasure::DecodeError),
    #[error(transparent)]
    SlotDir(#[from] atlas_storage::slot_dir::SlotDirError),
    #[error(transparent)]
    Tree(#[from] atlas_protocol::tree::TreeError),
    #[error("encoding: {0}")]
    Encode(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("a worker task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A deal's manifest, its signature checked.
pub fn manifest_of(d: &Deal) -> Result<VerifiedManifest> {
    d.terms
        .manifest
        .verify()
        .map_err(|e| ClientError::Manifest(e.to_string()))
}
