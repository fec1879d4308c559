//! The `rs-gf8-v1` layout: where every byte of a file sits among stripes, shards and slots.
//!
//! With `k` data shards, `m` parity shards and shard size `c`, stripe `s` holds file bytes
//! `[s*k*c, (s+1)*k*c)`; data shard `j` of it is `[s*k*c + j*c, +c)`; the last stripe is zero-padded.
//! Slot `j` is shard `j` of stripe 0, then of stripe 1, ... so shard `(s, j)` sits at byte `s*c` of slot
//! `j`. An empty file still has one (all-zero) stripe, so every slot is at least one shard long.

use std::ops::Range;

/// The encoding tag in manifests.
pub const ENCODING_RS_GF8_V1: &str = "rs-gf8-v1";
/// Smallest allowed shard size.
pub const MIN_SHARD_SIZE: u64 = 64 * 1024;
/// Largest allowed shard size.
pub const MAX_SHARD_SIZE: u64 = 4 * 1024 * 1024;
/// GF(2^8) allows at most 256 shards per stripe.
pub const MAX_SHARDS: usize = 256;
/// Largest object: 1 PiB. Keeps every offset and slot length far from `u64` overflow.
pub const MAX_OBJECT_SIZE: u64 = 1 << 50;

/// Why a layout was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("data shards must be at least 1")]
    NoDataShards,
    #[error("parity shards must be at least 1")]
    NoParityShards,
    #[error("{0} shards per stripe is more than the 256 that rs-gf8-v1 allows")]
    TooManyShards(usize),
    #[error("shard size {0} must be a power of two between 64KiB and 4MiB")]
    BadShardSize(u64),
    #[error("{0} bytes is more than the 1 PiB an object may hold")]
    TooLarge(u64),
    #[error("stripe count {got} does not fit a {size}-byte file (expected {want})")]
    StripeMismatch { got: u64, want: u64, size: u64 },
}

/// Geometry of one encoded object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    k: usize,
    m: usize,
    shard_size: u64,
    size: u64,
}

/// Where a file byte lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub stripe: u64,
    /// The data slot (`< k`).
    pub slot: usize,
    /// Byte offset inside the shard.
    pub offset: u64,
}

impl Layout {
    pub fn new(k: usize, m: usize, shard_size: u64, size: u64) -> Result<Self, LayoutError> {
        if k == 0 {
            return Err(LayoutError::NoDataShards);
        }
        if m == 0 {
            return Err(LayoutError::NoParityShards);
        }
        if k + m > MAX_SHARDS {
            return Err(LayoutError::TooManyShards(k + m));
        }
        if !shard_size.is_power_of_two() || !(MIN_SHARD_SIZE..=MAX_SHARD_SIZE).contains(&shard_size)
        {
            return Err(LayoutError::BadShardSize(shard_size));
        }
        if size > MAX_OBJECT_SIZE {
            return Err(LayoutError::TooLarge(size));
        }
        Ok(Self {
            k,
            m,
            shard_size,
            size,
        })
    }

    pub fn data_shards(&self) -> usize {
        self.k
    }
    pub fn parity_shards(&self) -> usize {
        self.m
    }
    /// `n = k + m`, the number of slots.
    pub fn total_shards(&self) -> usize {
        self.k + self.m
    }
    pub fn shard_size(&self) -> u64 {
        self.shard_size
    }
    /// File size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// File bytes per stripe, `k * c`.
    pub fn stripe_len(&self) -> u64 {
        self.k as u64 * self.shard_size
    }
    /// Number of stripes; at least one.
    pub fn stripes(&self) -> u64 {
        self.size.div_ceil(self.stripe_len()).max(1)
    }
    /// Bytes in each slot, `stripes * c`.
    pub fn slot_len(&self) -> u64 {
        self.stripes() * self.shard_size
    }

    /// Where file byte `offset` lives (`offset < size`).
    pub fn locate(&self, offset: u64) -> Position {
        let stripe = offset / self.stripe_len();
        let within = offset % self.stripe_len();
        Position {
            stripe,
            slot: (within / self.shard_size) as usize,
            offset: within % self.shard_size,
        }
    }

    /// The file byte range held by data shard `(stripe, slot)`, clipped to the file (may be empty
    /// for padding).
    pub fn shard_file_range(&self, stripe: u64, slot: usize) -> Range<u64> {
        debug_assert!(slot < self.k);
        let start = stripe * self.stripe_len() + slot as u64 * self.shard_size;
        start.min(self.size)..(start + self.shard_size).min(self.size)
    }

    /// Byte offset of shard `(stripe, _)` inside its slot.
    pub fn shard_offset_in_slot(&self, stripe: u64) -> u64 {
        stripe * self.shard_size
    }

    /// The stripes that hold any byte of `range` (clipped to the file).
    pub fn stripes_for(&self, range: Range<u64>) -> Range<u64> {
        let end = range.end.min(self.size);
        if range.start >= end {
            return 0..0;
        }
        range.start / self.stripe_len()..(end - 1) / self.stripe_len() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_ranges_agree() {
        let l = Layout::new(4, 2, 65536, 1_000_000).expect("valid");
        assert_eq!(l.stripe_len(), 262144);
        assert_eq!(l.stripes(), 4);
        assert_eq!(l.slot_len(), 4 * 65536);
        for off in [0u64, 1, 65535, 65536, 262143, 262144, 999_999] {
            let p = l.locate(off);
            let r = l.shard_file_range(p.stripe, p.slot);
            assert!(r.contains(&off), "offset {off} in {r:?}");
            assert_eq!(r.start + p.offset, off);
        }
        assert_eq!(l.stripes_for(0..1), 0..1);
        assert_eq!(l.stripes_for(262143..262145), 0..2);
        assert_eq!(l.stripes_for(0..u64::MAX), 0..4);
        assert_eq!(l.stripes_for(5..5), 0..0);
        let empty = Layout::new(4, 2, 65536, 0).expect("valid");
        assert_eq!(empty.stripes(), 1);
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert_eq!(Layout::new(0, 2, 65536, 1), Err(LayoutError::NoDataShards));
        assert_eq!(
            Layout::new(4, 0, 65536, 1),
            Err(LayoutError::NoParityShards)
        );
        assert!(Layout::new(200, 57, 65536, 1).is_err());
        assert!(Layout::new(4, 2, 100_000, 1).is_err());
        assert!(Layout::new(4, 2, 32768, 1).is_err());
        assert!(Layout::new(4, 2, 8 << 20, 1).is_err());
        assert_eq!(
            Layout::new(1, 1, 65536, u64::MAX),
            Err(LayoutError::TooLarge(u64::MAX))
        );
    }
}
