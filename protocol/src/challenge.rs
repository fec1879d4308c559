//! Storage challenges: which chunks a provider must prove for a slot in an epoch, and checking the
//! answer.
//!
//! `seed = BLAKE3("atlas/challenge/v1" || beacon || deal || slot || epoch)`; its extendable output is
//! read as little-endian `u64`s, each reduced to a chunk index without modulo bias, keeping the first
//! `s` distinct ones. Anyone with the slot root and length can check an answer; nobody can produce one
//! without the bytes.

use crate::id::DealId;
use crate::tree::{ChunkProof, Cv, TreeError, TreeShape, GROUP_LOG};
use serde::{Deserialize, Serialize};

/// Default number of sampled chunks per slot per epoch.
pub const DEFAULT_SAMPLES: usize = 16;
/// Largest number of samples a verifier accepts.
pub const MAX_SAMPLES: usize = 256;
const CHALLENGE_TAG: &[u8] = b"atlas/challenge/v1";

/// One slot's challenge for one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub indices: Vec<u64>,
}

impl Challenge {
    /// Derives `samples` distinct chunk indices (all of them if the slot has fewer chunks).
    pub fn derive(
        beacon: &[u8; 32],
        deal: &DealId,
        slot: u16,
        epoch: u64,
        chunks: u64,
        samples: usize,
    ) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(CHALLENGE_TAG);
        h.update(&[0]);
        h.update(beacon);
        h.update(deal.as_bytes());
        h.update(&slot.to_be_bytes());
        h.update(&epoch.to_be_bytes());
        let mut xof = h.finalize_xof();
        let want = samples.min(chunks as usize).min(MAX_SAMPLES);
        // Largest multiple of `chunks` that fits: draws at or above it are rejected (no modulo bias).
        let zone = u64::MAX - (u64::MAX % chunks.max(1));
        let mut indices = Vec::with_capacity(want);
        while indices.len() < want {
            let mut word = [0u8; 8];
            xof.fill(&mut word);
            let draw = u64::from_le_bytes(word);
            if draw >= zone {
                continue;
            }
            let index = draw % chunks;
            if !indices.contains(&index) {
                indices.push(index);
            }
        }
        Self { indices }
    }
}

/// Why an answer to a challenge was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("answer has {got} chunk proofs, the challenge asked for {want}")]
    WrongCount { got: usize, want: usize },
    #[error("proof {position} is for chunk {got}, the challenge asked for chunk {want}")]
    WrongIndex {
        position: usize,
        got: u64,
        want: u64,
    },
    #[error("proof of chunk {index}: {source}")]
    Chunk { index: u64, source: TreeError },
}

/// A provider's answer to one slot's challenge: one inclusion proof per sampled chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageProof {
    pub chunks: Vec<ChunkProof>,
}

impl StorageProof {
    /// Answers `challenge` for a complete slot. `read_group(g)` returns the bytes of 16 KiB group `g`;
    /// `read_node(level, index)` returns an outboard CV (`level >= GROUP_LOG`).
    pub fn build<E>(
        challenge: &Challenge,
        shape: &TreeShape,
        mut read_group: impl FnMut(u64) -> Result<Vec<u8>, E>,
        mut read_node: impl FnMut(u32, u64) -> Result<Cv, E>,
    ) -> Result<Self, E>
    where
        E: From<TreeError>,
    {
        let chunks = challenge
            .indices
            .iter()
            .map(|&index| {
                let group = index >> GROUP_LOG;
                let siblings = shape
                    .sibling_nodes(GROUP_LOG, group)?
                    .into_iter()
                    .map(|(l, i)| read_node(l, i))
                    .collect::<Result<Vec<_>, E>>()?;
                Ok(ChunkProof::build(
                    shape,
                    index,
                    &read_group(group)?,
                    siblings,
                )?)
            })
            .collect::<Result<_, E>>()?;
        Ok(Self { chunks })
    }

    /// Checks that this answers `challenge` for the slot with `root` and `shape`.
    pub fn verify(
        &self,
        challenge: &Challenge,
        shape: &TreeShape,
        root: &blake3::Hash,
    ) -> Result<(), ProofError> {
        if self.chunks.len() != challenge.indices.len() {
            return Err(ProofError::WrongCount {
                got: self.chunks.len(),
                want: challenge.indices.len(),
            });
        }
        for (position, (proof, &want)) in self.chunks.iter().zip(&challenge.indices).enumerate() {
            if proof.index != want {
                return Err(ProofError::WrongIndex {
                    position,
                    got: proof.index,
                    want,
                });
            }
            proof
                .verify(shape, root)
                .map_err(|source| ProofError::Chunk {
                    index: want,
                    source,
                })?;
        }
        Ok(())
    }

    /// Bytes on the wire.
    pub fn wire_len(&self) -> usize {
        postcard::experimental::serialized_size(self).unwrap_or(usize::MAX)
    }
}

/// Domain tag of the per-sample challenge that committed epoch proofs answer.
const SAMPLE_TAG: &[u8] = b"atlas/challenge/v2";

/// The chunk that sample `k` of `slot` of `deal` must answer in `epoch` under `beacon`, for committed
/// epoch proofs ([`crate::commit`]):
/// `uint256(keccak("atlas/challenge/v2" ‖ beacon ‖ deal ‖ slot_be16 ‖ epoch_be64 ‖ k_be16)) mod chunks`.
///
/// Each sample is drawn on its own, with replacement, so a contract recomputes one index with one
/// keccak and one `mod` and no loop; the bias of reducing 256 bits modulo at most 2^34 chunks is
/// below 2^-220.
pub fn sample_index(
    beacon: &[u8; 32],
    deal: &DealId,
    slot: u16,
    epoch: u64,
    k: u16,
    chunks: u64,
) -> u64 {
    let draw = crate::commit::keccak(&[
        SAMPLE_TAG,
        beacon,
        deal.as_bytes(),
        &slot.to_be_bytes(),
        &epoch.to_be_bytes(),
        &k.to_be_bytes(),
    ]);
    mod_be(&draw, chunks.max(1))
}

/// A big-endian 256-bit number modulo `n`.
fn mod_be(x: &[u8; 32], n: u64) -> u64 {
    let n = u128::from(n);
    x.chunks(8).fold(0u128, |r, limb| {
        let limb = u64::from_be_bytes(limb.try_into().expect("8 bytes"));
        ((r << 64) | u128::from(limb)) % n
    }) as u64
}

/// Why a committed sample leaf does not answer its challenge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleError {
    #[error("sample {k} is beyond the {samples} samples a slot owes per epoch")]
    NoSuchSample { k: u16, samples: u16 },
    #[error("sample is for chunk {got}, the challenge asked for chunk {want}")]
    WrongIndex { got: u64, want: u64 },
    #[error("chunk {index}: {source}")]
    Chunk { index: u64, source: TreeError },
}

/// Checks that `leaf` answers its challenge in `epoch`: its sample number is one of the `samples`
/// owed, its chunk index is [`sample_index`] and its chunk leads to the slot's BLAKE3 `root`.
pub fn verify_sample(
    leaf: &crate::commit::SampleLeaf,
    beacon: &[u8; 32],
    epoch: u64,
    samples: u16,
    shape: &TreeShape,
    root: &blake3::Hash,
) -> Result<(), SampleError> {
    let key = &leaf.key;
    if key.k >= samples {
        return Err(SampleError::NoSuchSample { k: key.k, samples });
    }
    let want = sample_index(beacon, &key.deal, key.slot, epoch, key.k, shape.chunks());
    if leaf.proof.index != want {
        return Err(SampleError::WrongIndex {
            got: leaf.proof.index,
            want,
        });
    }
    leaf.proof
        .verify(shape, root)
        .map_err(|source| SampleError::Chunk {
            index: want,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_deterministic_distinct_and_in_range() {
        let deal = DealId([3; 32]);
        let a = Challenge::derive(&[1; 32], &deal, 2, 7, 1 << 20, 16);
        let b = Challenge::derive(&[1; 32], &deal, 2, 7, 1 << 20, 16);
        assert_eq!(a, b);
        assert_eq!(a.indices.len(), 16);
        let mut sorted = a.indices.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 16);
        assert!(a.indices.iter().all(|&i| i < 1 << 20));
        for other in [
            Challenge::derive(&[2; 32], &deal, 2, 7, 1 << 20, 16),
            Challenge::derive(&[1; 32], &DealId([4; 32]), 2, 7, 1 << 20, 16),
            Challenge::derive(&[1; 32], &deal, 3, 7, 1 << 20, 16),
            Challenge::derive(&[1; 32], &deal, 2, 8, 1 << 20, 16),
        ] {
            assert_ne!(a, other);
        }
        let small = Challenge::derive(&[1; 32], &deal, 0, 0, 5, 16);
        assert_eq!(small.indices.len(), 5);
    }

    #[test]
    fn sample_indices_are_the_keccak_draw_modulo_the_chunks() {
        let deal = DealId([3; 32]);
        let draw = crate::commit::keccak(&[
            SAMPLE_TAG,
            &[1; 32],
            deal.as_bytes(),
            &2u16.to_be_bytes(),
            &7u64.to_be_bytes(),
            &5u16.to_be_bytes(),
        ]);
        // The same reduction as an EVM's `uint256 % chunks`, done by long division on bytes.
        for chunks in [1u64, 64, 1 << 20, (1 << 34) - 3, u64::MAX] {
            let mut r: u128 = 0;
            for byte in draw {
                r = ((r << 8) | u128::from(byte)) % u128::from(chunks);
            }
            assert_eq!(sample_index(&[1; 32], &deal, 2, 7, 5, chunks), r as u64);
        }
        let a = sample_index(&[1; 32], &deal, 2, 7, 5, 1 << 40);
        for other in [
            sample_index(&[2; 32], &deal, 2, 7, 5, 1 << 40),
            sample_index(&[1; 32], &DealId([4; 32]), 2, 7, 5, 1 << 40),
            sample_index(&[1; 32], &deal, 3, 7, 5, 1 << 40),
            sample_index(&[1; 32], &deal, 2, 8, 5, 1 << 40),
            sample_index(&[1; 32], &deal, 2, 7, 6, 1 << 40),
        ] {
            assert_ne!(a, other);
        }
    }
}
