//! # atlas-storage
//!
//! Every byte Atlas keeps on disk goes through this crate:
//!
//! - [`SlotStore`]: a provider's slots, behind one trait with a durable implementation
//!   ([`RocksSlotStore`]: slot files indexed in RocksDB) and an in-memory twin ([`MemSlotStore`]);
//!   one conformance suite (`tests/conformance`) runs against both, one test per check.
//! - [`slot_dir`]: the encoded-object directory that `atlas encode` writes and `decode`/`verify` read.
//!
//! It builds on `atlas-protocol` for hashing, proofs and the erasure code, and never touches the
//! network.

pub mod ledger_store;
pub mod mem;
pub mod outboard_file;
pub mod rocks;
pub mod slot_dir;
pub mod slot_store;

pub use mem::MemSlotStore;
pub use rocks::RocksSlotStore;
pub use slot_store::{PutOutcome, SlotInfo, SlotKey, SlotSpec, SlotStore, StoreError, Usage};
