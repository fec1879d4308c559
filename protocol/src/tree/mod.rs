//! The BLAKE3 tree of a slot, and proofs of inclusion in it.
//!
//! A slot's root is the plain BLAKE3 hash of its bytes. BLAKE3 hashes 1 KiB chunks and merges their
//! chaining values (CVs) in a left-complete binary tree. Atlas slots are always a multiple of 64 KiB, so
//! every 1 KiB chunk, every 16 KiB *group* and every shard is a whole subtree: it is verified with its
//! sibling CVs alone.
//!
//! Nodes are named by `(level, index)`: level 0 holds one node per chunk, level `l + 1` merges pairs of
//! level `l` left to right, and a last node without a partner is carried up unchanged. This pairwise
//! construction yields exactly BLAKE3's tree (the left subtree always holds the largest power of two
//! chunks below the total), which the tests check against `blake3::hash`.
//!
//! The *outboard* is every node from the group level (level 4) up to the two children of the root, level
//! after level. It costs 32 B per 16 KiB group (about 0.4% of the slot with the upper levels) and lets
//! a provider answer a chunk challenge by reading one 16 KiB group and a few CVs, never the whole slot.

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};
use serde::{Deserialize, Serialize};

mod outboard;
mod proof;

pub use outboard::Outboard;
pub use proof::{shard_level, verify_shard, ChunkProof, VerifiedShard};

/// A 32-byte BLAKE3 chaining value of a non-root subtree.
pub type Cv = [u8; 32];

/// Bytes in a BLAKE3 chunk, the leaf of a storage proof.
pub const CHUNK_LEN: u64 = blake3::CHUNK_LEN as u64;
/// Log2 of the chunks in an outboard group.
pub const GROUP_LOG: u32 = 4;
/// Bytes in an outboard group (16 KiB).
pub const GROUP_LEN: u64 = CHUNK_LEN << GROUP_LOG;
/// The smallest slot: one 64 KiB shard.
pub const MIN_SLOT_LEN: u64 = 64 * 1024;

/// Why a proof or a slot geometry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("slot length {0} is not a positive multiple of 64 KiB")]
    BadSlotLength(u64),
    #[error("node {index} is outside level {level} of this slot's tree")]
    OutOfRange { level: u32, index: u64 },
    #[error("proof has {got} sibling values, the path needs {want}")]
    WrongSiblingCount { got: usize, want: usize },
    #[error("chunk is {0} bytes, a proof chunk is 1024")]
    BadChunkLength(usize),
    #[error("proof does not lead to the slot root")]
    RootMismatch,
    #[error("outboard is {got} bytes, this slot's outboard is {want}")]
    BadOutboardLength { got: u64, want: u64 },
}

/// The shape of the tree over a slot of a given length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeShape {
    slot_len: u64,
    chunks: u64,
    height: u32,
}

impl TreeShape {
    /// The tree of a slot of `slot_len` bytes (a positive multiple of 64 KiB).
    pub fn new(slot_len: u64) -> Result<Self, TreeError> {
        if slot_len == 0 || !slot_len.is_multiple_of(MIN_SLOT_LEN) {
            return Err(TreeError::BadSlotLength(slot_len));
        }
        let chunks = slot_len / CHUNK_LEN;
        let height = u64::BITS - (chunks - 1).leading_zeros();
        Ok(Self {
            slot_len,
            chunks,
            height,
        })
    }

    pub fn slot_len(&self) -> u64 {
        self.slot_len
    }

    /// Number of 1 KiB chunks (level-0 nodes).
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// The level of the root. Level `height - 1` always has exactly two nodes.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Number of nodes at `level`.
    pub fn width(&self, level: u32) -> u64 {
        if level >= 64 {
            return 1;
        }
        let span = 1u64 << level;
        self.chunks.div_ceil(span)
    }

    /// Number of outboard groups (nodes at [`GROUP_LOG`]).
    pub fn groups(&self) -> u64 {
        self.width(GROUP_LOG)
    }

    /// Byte offset of node `(level, index)` in the outboard (levels `GROUP_LOG..height`).
    pub fn outboard_offset(&self, level: u32, index: u64) -> Result<u64, TreeError> {
        if level < GROUP_LOG || level >= self.height || index >= self.width(level) {
            return Err(TreeError::OutOfRange { level, index });
        }
        let before: u64 = (GROUP_LOG..level).map(|l| self.width(l)).sum();
        Ok((before + index) * 32)
    }

    /// Total outboard bytes for this slot.
    pub fn outboard_len(&self) -> u64 {
        (GROUP_LOG..self.height).map(|l| self.width(l)).sum::<u64>() * 32
    }

    /// The sibling nodes, bottom up, on the path from `(level, index)` to the root.
    pub fn sibling_nodes(&self, level: u32, index: u64) -> Result<Vec<(u32, u64)>, TreeError> {
        if level >= self.height || index >= self.width(level) {
            return Err(TreeError::OutOfRange { level, index });
        }
        let mut out = Vec::with_capacity((self.height - level) as usize);
        let (mut l, mut i) = (level, index);
        while l < self.height {
            if (i ^ 1) < self.width(l) {
                out.push((l, i ^ 1));
            }
            l += 1;
            i >>= 1;
        }
        Ok(out)
    }

    /// Folds the CV of node `(level, index)` with its siblings up to the root hash.
    pub fn fold_to_root(
        &self,
        level: u32,
        index: u64,
        cv: Cv,
        siblings: &[Cv],
    ) -> Result<blake3::Hash, TreeError> {
        let want = self.sibling_nodes(level, index)?.len();
        if siblings.len() != want {
            return Err(TreeError::WrongSiblingCount {
                got: siblings.len(),
                want,
            });
        }
        let mut siblings = siblings.iter();
        let (mut l, mut i, mut cv) = (level, index, cv);
        loop {
            if (i ^ 1) < self.width(l) {
                let sibling = siblings.next().expect("sibling count checked above");
                let (left, right) = if i & 1 == 0 {
                    (&cv, sibling)
                } else {
                    (sibling, &cv)
                };
                if l + 1 == self.height {
                    return Ok(merge_subtrees_root(left, right, Mode::Hash));
                }
                cv = merge_subtrees_non_root(left, right, Mode::Hash);
            }
            l += 1;
            i >>= 1;
        }
    }
}

/// CV of the subtree of `bytes` that starts at byte `offset` of the slot. `bytes` must be a whole,
/// aligned, non-root subtree (a chunk, a group or a shard of a multi-shard slot).
pub fn subtree_cv(offset: u64, bytes: &[u8]) -> Cv {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(bytes);
    hasher.finalize_non_root()
}

/// Appends the group CVs of `bytes` (a multiple of 16 KiB) that start at byte `offset` of the slot.
pub fn group_cvs(offset: u64, bytes: &[u8], out: &mut Vec<Cv>) {
    debug_assert_eq!(offset % GROUP_LEN, 0);
    debug_assert_eq!(bytes.len() as u64 % GROUP_LEN, 0);
    for (i, group) in bytes.chunks(GROUP_LEN as usize).enumerate() {
        out.push(subtree_cv(offset + i as u64 * GROUP_LEN, group));
    }
}

/// Merges one level into the next: pairs left to right, a last odd node carried up. Not for the
/// root level (use [`root_of_top`] on the final two nodes).
pub fn next_level(level: &[Cv]) -> Vec<Cv> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [left, right] => merge_subtrees_non_root(left, right, Mode::Hash),
            [single] => *single,
            _ => unreachable!("chunks(2) yields one or two items"),
        })
        .collect()
}

/// The root hash from the two nodes of level `height - 1`.
pub fn root_of_top(top: &[Cv; 2]) -> blake3::Hash {
    merge_subtrees_root(&top[0], &top[1], Mode::Hash)
}

/// Streams nodes of one level, left to right, into the root hash with `O(log n)` memory: the same
/// lazy merging BLAKE3's own hasher does, so the last merge is the root one.
#[derive(Debug, Clone, Default)]
pub struct CvStack {
    stack: Vec<Cv>,
    pushed: u64,
}

impl CvStack {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next node of the level.
    pub fn push(&mut self, cv: Cv) {
        // Merge the completed subtrees of everything pushed so far, but never the last pair: whether
        // that merge is the root depends on what comes next.
        while self.stack.len() > self.pushed.count_ones() as usize {
            let right = self.stack.pop().expect("len > popcount >= 0");
            let left = self.stack.pop().expect("len > popcount >= 1 after pop");
            self.stack
                .push(merge_subtrees_non_root(&left, &right, Mode::Hash));
        }
        self.stack.push(cv);
        self.pushed += 1;
    }

    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// The root, if at least two nodes were pushed (a single node is not a root CV).
    pub fn finish(mut self) -> Option<blake3::Hash> {
        if self.pushed < 2 {
            return None;
        }
        let mut right = self.stack.pop().expect("two or more pushed");
        while self.stack.len() > 1 {
            let left = self.stack.pop().expect("len > 1");
            right = merge_subtrees_non_root(&left, &right, Mode::Hash);
        }
        let left = self.stack.pop().expect("one left");
        Some(merge_subtrees_root(&left, &right, Mode::Hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 10) as u8)
            .collect()
    }

    #[test]
    fn outboard_root_equals_plain_blake3_for_many_lengths() {
        for n in [1u64, 2, 3, 5, 6, 7, 8, 9, 13, 16, 17, 31, 33] {
            let data = slot((n * MIN_SLOT_LEN) as usize, n as u8);
            let ob = Outboard::from_slot(&data).expect("valid length");
            assert_eq!(ob.root(), blake3::hash(&data), "slot of {n} x 64 KiB");
            assert_eq!(ob.to_bytes().len() as u64, ob.shape().outboard_len());
            let back = Outboard::from_bytes(ob.shape(), &ob.to_bytes()).expect("round trip");
            assert_eq!(back, ob);
            let mut stack = CvStack::new();
            for g in 0..ob.shape().groups() {
                stack.push(ob.node(GROUP_LOG, g).expect("group exists"));
            }
            assert_eq!(stack.finish(), Some(blake3::hash(&data)));
        }
    }

    #[test]
    fn every_chunk_proof_verifies_in_an_odd_sized_slot() {
        let data = slot(5 * MIN_SLOT_LEN as usize, 9);
        let ob = Outboard::from_slot(&data).expect("valid length");
        let root = blake3::hash(&data);
        let shape = ob.shape();
        for index in 0..shape.chunks() {
            let g = index >> GROUP_LOG;
            let group = &data[(g * GROUP_LEN) as usize..((g + 1) * GROUP_LEN) as usize];
            let proof = ChunkProof::build(
                &shape,
                index,
                group,
                ob.siblings(GROUP_LOG, g).expect("in range"),
            )
            .expect("in range");
            proof.verify(&shape, &root).expect("honest proof verifies");
        }
    }

    #[test]
    fn shard_proofs_verify_and_reject_other_shards() {
        let shard = 64 * 1024u64;
        let data = slot(6 * shard as usize, 3);
        let ob = Outboard::from_slot(&data).expect("valid length");
        let root = blake3::hash(&data);
        let shape = ob.shape();
        let level = shard_level(shard);
        for s in 0..6u64 {
            let bytes = &data[(s * shard) as usize..((s + 1) * shard) as usize];
            let sib = ob.siblings(level, s).expect("in range");
            verify_shard(&shape, &root, shard, s, bytes, &sib).expect("honest shard");
            let v = VerifiedShard::verify(&root, 6, s, bytes.to_vec(), &sib).expect("honest shard");
            assert_eq!(v.groups().len(), 4);
            assert!(VerifiedShard::verify(&root, 6, (s + 1) % 6, bytes.to_vec(), &sib).is_err());
            let other = (s + 1) % 6;
            assert!(verify_shard(&shape, &root, shard, other, bytes, &sib).is_err());
        }
        let one = slot(shard as usize, 1);
        let shape1 = TreeShape::new(shard).expect("valid");
        verify_shard(&shape1, &blake3::hash(&one), shard, 0, &one, &[]).expect("one-shard slot");
        VerifiedShard::verify(&blake3::hash(&one), 1, 0, one.clone(), &[]).expect("one-shard slot");
    }
}
