//! Streaming Reed-Solomon encoder and range decoder for the `rs-gf8-v1` layout.
//!
//! The encoder reads a file of any size once, stripe by stripe, with memory bounded by a few stripes.
//! For each slot it writes the shard bytes and the slot's outboard group level (see [`crate::tree`]),
//! and it returns the slot roots and the file's BLAKE3 hash, all computed on the way.
//!
//! The decoder rebuilds any byte range from whatever verified shards a [`ShardSource`] can supply: data
//! shards straight through (the code is systematic), and parity plus Reed-Solomon reconstruction only for
//! the stripes where a needed data shard is missing.

mod decode;
mod encode;

pub use decode::{decode_range, decode_range_with, rebuild_slot, DecodeError, DecodeStats};
pub use encode::{encode, EncodeError, Encoded, SlotOutput};

use std::io;

/// Supplies verified shards to the decoder.
pub trait ShardSource {
    /// Fills `buf` (one shard long) with shard `(stripe, slot)` and returns `true` only if those bytes
    /// were verified against the slot root. `false` means "not available": missing, unreachable or bad.
    fn read_verified(&mut self, stripe: u64, slot: usize, buf: &mut [u8]) -> io::Result<bool>;

    /// Checks a data shard that was rebuilt from parity against its slot root. `false` means the
    /// object's slots are not one consistent code (a creator signed mismatched parity).
    fn check_rebuilt(&mut self, stripe: u64, slot: usize, bytes: &[u8]) -> io::Result<bool>;

    /// A hint that `(stripe, slot)` will be read soon, so a source that fetches over a network can
    /// start early. Sources that read locally ignore it.
    fn prefetch(&mut self, _stripe: u64, _slot: usize) {}
}
