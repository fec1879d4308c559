//! The ledger: the devnet sequencer that hosts the escrow rules (`atlas ledger run`), and the
//! typed client and settlement boundary every other service reaches it through.
//!
//! It validates each submitted transaction against the state the next block will have and orders the
//! accepted ones into a block every `block_time`; every `epoch_blocks` blocks it settles an epoch.
//! It keeps one state, changed in place; a block writes only the state records it changed, with the
//! block, in one synced RocksDB batch before anyone is told their transaction is in it. Accepted
//! transactions are written to a durable mempool before `Enqueue` is answered, so an acknowledged
//! transaction survives a crash, and a restart resumes at the same height with the same state and
//! queue. Headers are signed and published on gossipsub.

//!
//! - [`sequencer`]: the state machine: accept, queue durably, cut and persist blocks.
//! - [`query`]: answering requests from the next block's state, page by page.
//! - [`service`]: the task that owns the sequencer and serves the network.
//! - [`client`]: [`LedgerClient`], one typed method per query.
//! - [`settlement`]: [`Settlement`], what services need from wherever deals settle.

pub mod client;
mod metrics;
mod query;
pub mod sequencer;
mod service;
pub mod settlement;

pub use client::{parse_ledger_addr, LedgerClient, LedgerError, Sent};
pub use sequencer::Ledger;
pub use service::run;
pub use settlement::Settlement;

use std::time::Duration;

/// Most transactions waiting for the next block; more are refused until it is cut.
pub(crate) const MAX_PENDING_TXS: usize = 20_000;
/// The least time between a restart and the first block it cuts.
pub(crate) const RESUME_GRACE: Duration = Duration::from_secs(1);
/// Largest single faucet grant on a devnet ledger.
pub const FAUCET_CAP: u128 = 1_000_000_000_000;

/// Chain settings chosen at genesis.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    pub block_time: Duration,
    pub epoch_blocks: u64,
    pub faucet: bool,
}

/// Why the sequencer failed.
#[derive(Debug, thiserror::Error)]
pub enum SequencerError {
    #[error("the ledger database: {0}")]
    Store(#[from] atlas_storage::ledger_store::LedgerStoreError),
    #[error("{0} holds a chain written by an older version of the ledger, which cannot be resumed; start the chain in an empty directory")]
    OldChain(String),
    #[error("no randomness for the genesis salt: {0}")]
    Randomness(String),
    #[error("the newest block is missing from the ledger database")]
    MissingHead,
    #[error("a storage worker failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
}
