//! A provider's commitment to one epoch's storage proofs: one keccak-256 root over every sample leaf
//! it owes, in strict key order.
//!
//! A provider holding n slots owes `samples` leaves per slot per epoch. It publishes the leaves to the
//! network and sends the settlement layer only the root and the leaf count, so what settlement
//! stores and checks per epoch does not grow with n. Watchers fetch leaves and check them against
//! the root; a bad one is disputed with its path ([`verify_path`]), a missing one with its two
//! neighbours ([`verify_gap`]): the keys are strictly increasing, so two adjacent leaves that bracket
//! a key prove the key was left out, and no key can appear twice.
//!
//! Hashes are keccak-256 so that an EVM contract can check paths for the price of a few hundred gas
//! each. The chunk a leaf carries is still checked against the slot's BLAKE3 root.
//!
//! ```text
//! digest = keccak(chunk ‖ sibling CVs...)
//! leaf   = keccak(0x00 ‖ deal ‖ slot_be16 ‖ epoch_be64 ‖ k_be16 ‖ index_be64 ‖ digest)
//! node   = keccak(0x01 ‖ left ‖ right)     // left-complete: a last node without a partner moves up
//! empty  = 32 zero bytes                   // the root of a commit with no leaves
//! ```

use crate::id::DealId;
use crate::tree::ChunkProof;
use serde::{Deserialize, Serialize};
use sha3::{Digest, Keccak256};
use std::cmp::Ordering;

/// A 32-byte keccak-256 hash.
pub type Hash32 = [u8; 32];

/// Root of a commitment with no leaves.
pub const EMPTY_ROOT: Hash32 = [0; 32];
/// Most leaves one commitment may hold (a tree at most 24 levels deep).
pub const MAX_LEAVES: u32 = 1 << 24;

const LEAF_TAG: u8 = 0x00;
const NODE_TAG: u8 = 0x01;

/// keccak-256 of the concatenation of `parts`.
pub fn keccak(parts: &[&[u8]]) -> Hash32 {
    let mut h = Keccak256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Which sample a leaf answers: sample `k` of `slot` of `deal`. Leaves are ordered by key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeafKey {
    pub deal: DealId,
    pub slot: u16,
    pub k: u16,
}

/// What a leaf hash is over, without the chunk: enough to place a leaf in the tree and to prove a
/// gap, 82 bytes instead of ~1.7 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafHeader {
    pub key: LeafKey,
    /// The chunk index the sample claims to answer.
    pub index: u64,
    /// keccak of the chunk and its sibling CVs.
    pub digest: Hash32,
}

impl LeafHeader {
    /// The leaf's hash in the commitment for `epoch`.
    pub fn hash(&self, epoch: u64) -> Hash32 {
        keccak(&[
            &[LEAF_TAG],
            self.key.deal.as_bytes(),
            &self.key.slot.to_be_bytes(),
            &epoch.to_be_bytes(),
            &self.key.k.to_be_bytes(),
            &self.index.to_be_bytes(),
            &self.digest,
        ])
    }
}

/// One sample of a provider's epoch proof: which sample it is, and the 1 KiB chunk with the
/// sibling CVs that lead from it to the slot's BLAKE3 root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleLeaf {
    pub key: LeafKey,
    pub proof: ChunkProof,
}

impl SampleLeaf {
    /// keccak of the chunk and its sibling CVs.
    pub fn digest(&self) -> Hash32 {
        let mut h = Keccak256::new();
        h.update(&self.proof.chunk);
        for s in &self.proof.siblings {
            h.update(s);
        }
        h.finalize().into()
    }

    pub fn header(&self) -> LeafHeader {
        LeafHeader {
            key: self.key,
            index: self.proof.index,
            digest: self.digest(),
        }
    }

    /// The leaf's hash in the commitment for `epoch`.
    pub fn hash(&self, epoch: u64) -> Hash32 {
        self.header().hash(epoch)
    }
}

/// Why a commitment could not be built, or a path or gap was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    #[error("leaf {position} is not after the leaf before it (keys must be strictly increasing)")]
    Unsorted { position: u32 },
    #[error("{0} leaves are more than a commitment may hold")]
    TooMany(usize),
    #[error("position {position} is outside a commitment of {count} leaves")]
    OutOfRange { position: u32, count: u32 },
    #[error("path has {got} hashes, position {position} of {count} leaves needs {want}")]
    WrongPathLength {
        position: u32,
        count: u32,
        got: usize,
        want: usize,
    },
    #[error("path does not lead to the committed root")]
    RootMismatch,
    #[error("the neighbours given are not adjacent in the commitment")]
    NotAdjacent,
    #[error("the key lies outside the neighbours given, so they do not show it missing")]
    NotBracketed,
}

/// The keccak tree over one provider's leaves for one epoch. Every level is kept, so paths are
/// answered without hashing.
#[derive(Debug, Clone)]
pub struct EpochTree {
    epoch: u64,
    /// `levels[0]` holds the leaf hashes; the last level holds the root alone.
    levels: Vec<Vec<Hash32>>,
}

impl EpochTree {
    /// Builds the tree over `headers`, which must be in strictly increasing key order.
    pub fn build(epoch: u64, headers: &[LeafHeader]) -> Result<Self, CommitError> {
        if headers.len() > MAX_LEAVES as usize {
            return Err(CommitError::TooMany(headers.len()));
        }
        for (i, pair) in headers.windows(2).enumerate() {
            if pair[0].key >= pair[1].key {
                return Err(CommitError::Unsorted {
                    position: i as u32 + 1,
                });
            }
        }
        let mut levels = vec![headers.iter().map(|h| h.hash(epoch)).collect::<Vec<_>>()];
        while levels.last().is_some_and(|l| l.len() > 1) {
            let below = levels.last().expect("a level");
            let above = below
                .chunks(2)
                .map(|pair| match pair {
                    [l, r] => node(l, r),
                    [only] => *only,
                    _ => unreachable!("chunks(2)"),
                })
                .collect();
            levels.push(above);
        }
        Ok(Self { epoch, levels })
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of leaves.
    pub fn count(&self) -> u32 {
        self.levels[0].len() as u32
    }

    /// The root settlement records; [`EMPTY_ROOT`] for no leaves.
    pub fn root(&self) -> Hash32 {
        match self.levels.last().and_then(|l| l.first()) {
            Some(r) if self.count() > 0 => *r,
            _ => EMPTY_ROOT,
        }
    }

    /// The sibling hashes, bottom up, from leaf `position` to the root. A level where the node has
    /// no partner (the last node of an odd level) contributes nothing.
    pub fn path(&self, position: u32) -> Result<Vec<Hash32>, CommitError> {
        let count = self.count();
        if position >= count {
            return Err(CommitError::OutOfRange { position, count });
        }
        let mut path = Vec::new();
        let mut i = position as usize;
        for level in &self.levels[..self.levels.len() - 1] {
            if let Some(sibling) = level.get(i ^ 1) {
                path.push(*sibling);
            }
            i >>= 1;
        }
        Ok(path)
    }
}

fn node(left: &Hash32, right: &Hash32) -> Hash32 {
    keccak(&[&[NODE_TAG], left, right])
}

/// Number of hashes in the path of `position` in a tree of `count` leaves.
pub fn path_len(position: u32, count: u32) -> usize {
    let (mut i, mut width, mut len) = (position as u64, count as u64, 0);
    while width > 1 {
        if (i ^ 1) < width {
            len += 1;
        }
        i >>= 1;
        width = width.div_ceil(2);
    }
    len
}

/// Checks that `leaf` (a leaf hash) sits at `position` under `root` in a tree of `count` leaves.
pub fn verify_path(
    root: &Hash32,
    count: u32,
    position: u32,
    leaf: Hash32,
    path: &[Hash32],
) -> Result<(), CommitError> {
    if position >= count {
        return Err(CommitError::OutOfRange { position, count });
    }
    let want = path_len(position, count);
    if path.len() != want {
        return Err(CommitError::WrongPathLength {
            position,
            count,
            got: path.len(),
            want,
        });
    }
    let (mut i, mut width, mut acc) = (position as u64, count as u64, leaf);
    let mut siblings = path.iter();
    while width > 1 {
        if (i ^ 1) < width {
            let s = siblings.next().expect("length checked");
            acc = if i & 1 == 0 {
                node(&acc, s)
            } else {
                node(s, &acc)
            };
        }
        i >>= 1;
        width = width.div_ceil(2);
    }
    if &acc == root {
        Ok(())
    } else {
        Err(CommitError::RootMismatch)
    }
}

/// A leaf header with its position and path, as a gap proof carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    pub position: u32,
    pub header: LeafHeader,
    pub path: Vec<Hash32>,
}

impl Placed {
    fn verify(&self, root: &Hash32, count: u32, epoch: u64) -> Result<(), CommitError> {
        verify_path(
            root,
            count,
            self.position,
            self.header.hash(epoch),
            &self.path,
        )
    }
}

/// Checks that the commitment `(root, count)` for `epoch` does not hold `key`: `left` and `right`
/// are adjacent leaves with `left.key < key < right.key`, or the first leaf (no `left`) is above
/// `key`, or the last (no `right`) is below it, or the commitment is empty. Two adjacent leaves out
/// of order also prove the commitment broken, whatever `key` is: nothing can be checked in it.
pub fn verify_gap(
    root: &Hash32,
    count: u32,
    epoch: u64,
    key: &LeafKey,
    left: Option<&Placed>,
    right: Option<&Placed>,
) -> Result<(), CommitError> {
    match (left, right) {
        (None, None) => {
            if count == 0 && root == &EMPTY_ROOT {
                Ok(())
            } else {
                Err(CommitError::NotAdjacent)
            }
        }
        (None, Some(r)) => {
            r.verify(root, count, epoch)?;
            if r.position != 0 {
                return Err(CommitError::NotAdjacent);
            }
            bracket(None, key, Some(&r.header.key))
        }
        (Some(l), None) => {
            l.verify(root, count, epoch)?;
            if l.position + 1 != count {
                return Err(CommitError::NotAdjacent);
            }
            bracket(Some(&l.header.key), key, None)
        }
        (Some(l), Some(r)) => {
            l.verify(root, count, epoch)?;
            r.verify(root, count, epoch)?;
            if l.position.checked_add(1) != Some(r.position) {
                return Err(CommitError::NotAdjacent);
            }
            if l.header.key >= r.header.key {
                return Ok(());
            }
            bracket(Some(&l.header.key), key, Some(&r.header.key))
        }
    }
}

fn bracket(
    left: Option<&LeafKey>,
    key: &LeafKey,
    right: Option<&LeafKey>,
) -> Result<(), CommitError> {
    let above_left = left.is_none_or(|l| l.cmp(key) == Ordering::Less);
    let below_right = right.is_none_or(|r| key.cmp(r) == Ordering::Less);
    if above_left && below_right {
        Ok(())
    } else {
        Err(CommitError::NotBracketed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(deal: u8, slot: u16, k: u16) -> LeafHeader {
        LeafHeader {
            key: LeafKey {
                deal: DealId([deal; 32]),
                slot,
                k,
            },
            index: u64::from(k) * 7,
            digest: keccak(&[&[deal], &slot.to_be_bytes(), &k.to_be_bytes()]),
        }
    }

    #[test]
    fn one_leaf_is_its_own_root_and_an_empty_commitment_is_zero() {
        let h = header(1, 0, 0);
        let t = EpochTree::build(5, &[h]).expect("sorted leaves");
        assert_eq!(t.root(), h.hash(5));
        assert_eq!(t.path(0).expect("sorted leaves"), Vec::<Hash32>::new());
        let empty = EpochTree::build(5, &[]).expect("sorted leaves");
        assert_eq!((empty.root(), empty.count()), (EMPTY_ROOT, 0));
        let key = h.key;
        assert_eq!(verify_gap(&EMPTY_ROOT, 0, 5, &key, None, None), Ok(()));
    }

    #[test]
    fn the_epoch_is_part_of_every_leaf() {
        let hs = [header(1, 0, 0), header(1, 0, 1)];
        let a = EpochTree::build(5, &hs).expect("sorted leaves");
        let b = EpochTree::build(6, &hs).expect("sorted leaves");
        assert_ne!(a.root(), b.root());
        let path = a.path(1).expect("sorted leaves");
        assert_eq!(
            verify_path(&a.root(), 2, 1, hs[1].hash(6), &path),
            Err(CommitError::RootMismatch)
        );
    }

    #[test]
    fn duplicate_or_unsorted_keys_are_refused() {
        let hs = [header(1, 0, 0), header(1, 0, 0)];
        assert_eq!(
            EpochTree::build(1, &hs).expect_err("refused"),
            CommitError::Unsorted { position: 1 }
        );
        let hs = [header(1, 0, 1), header(1, 0, 0)];
        assert!(EpochTree::build(1, &hs).is_err());
    }
}
