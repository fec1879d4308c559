//! The public randomness that epoch challenges are drawn from, for committed epoch proofs.
//!
//! ```text
//! beacon(e) = keccak("atlas/beacon/v2" ‖ e_be64 ‖ beacon(e-1) ‖ mix(e-1) ‖ entropy(e-1))
//! mix(x)    = XOR of the reveals included during epoch x (0 if none)
//! ```
//!
//! `entropy(x)` is fixed at the start of epoch x, before any reveal of x exists: on a chain, the hash
//! of epoch x's first block; on the devnet, step x of a hash chain ([`HashChain`]) whose tip is part
//! of the genesis, so the sequencer cannot choose it after the fact. Each provider's reveal for x is
//! committed to in its commit of x-1 and shown in its commit of x; neither the sequencer nor one
//! provider can steer the beacon without every other provider that committed. The last reveal of an
//! epoch can still be withheld, which biases one bit at the price of a missed commit.
//!
//! Reveals are derived from a node's secret and the epoch ([`reveal`]), so a node that restarts
//! shows the same value it committed to without having stored it.

use crate::commit::{keccak, Hash32};

const BEACON_TAG: &[u8] = b"atlas/beacon/v2";
const REVEAL_TAG: &[u8] = b"atlas/reveal/v1";
const CHAIN_TAG: &[u8] = b"atlas/entropy-chain/v1";

/// The beacon of epoch `epoch`, from the previous epoch's beacon, mix and entropy.
pub fn next_beacon(epoch: u64, previous: &Hash32, mix: &Hash32, entropy: &Hash32) -> Hash32 {
    keccak(&[BEACON_TAG, &epoch.to_be_bytes(), previous, mix, entropy])
}

/// The value a node reveals in epoch `epoch`'s commit, derived from its secret (32 bytes it keeps,
/// e.g. derived from its key) and the chain it runs on.
pub fn reveal(secret: &Hash32, chain: &Hash32, epoch: u64) -> Hash32 {
    keccak(&[REVEAL_TAG, secret, chain, &epoch.to_be_bytes()])
}

/// What a node commits to one epoch ahead of revealing `reveal`.
pub fn reveal_commitment(reveal: &Hash32) -> Hash32 {
    keccak(&[reveal])
}

/// The XOR of every reveal included within one epoch. The order of inclusion does not matter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mix(pub Hash32);

impl Mix {
    /// Mixes in a reveal. The reveal itself, not its hash: its hash is the commitment published
    /// an epoch earlier, which would make the mix known before anything is revealed.
    pub fn add(&mut self, reveal: &Hash32) {
        for (m, b) in self.0.iter_mut().zip(reveal) {
            *m ^= b;
        }
    }
}

/// A hash chain a devnet sequencer fixes at genesis: `step(x)` for `x` in `0..=len`, with
/// `H(step(x)) == step(x-1)`, where `step(0)` (the *tip*) is published in the genesis and
/// `step(len)` is derived from a secret seed. Epoch x's entropy is `step(x)`: anyone checks it
/// against the previous epoch's with [`HashChain::follows`], and nobody without the seed can
/// compute it before the sequencer shows it.
///
/// The chain is walked from the seed once; every `CHECKPOINT`-th step is kept, so any step costs at
/// most `CHECKPOINT` hashes and the whole chain `len / CHECKPOINT` × 32 bytes of memory.
#[derive(Debug, Clone)]
pub struct HashChain {
    len: u64,
    /// `checkpoints[i]` is `step(i * CHECKPOINT)`, and the last one is `step(len)`.
    checkpoints: Vec<Hash32>,
}

/// Steps between kept values of a [`HashChain`].
pub const CHECKPOINT: u64 = 4096;

fn down(h: &Hash32) -> Hash32 {
    keccak(&[CHAIN_TAG, h])
}

impl HashChain {
    /// The chain of `len` steps below `seed`'s image: `step(len) = keccak(tag ‖ seed)`.
    pub fn new(seed: &Hash32, len: u64) -> Self {
        let top = down(seed);
        let mut kept = vec![top];
        let mut h = top;
        // Walk from step(len) down to step(0), keeping each step whose number is a multiple of
        // CHECKPOINT.
        for x in (0..len).rev() {
            h = down(&h);
            if x % CHECKPOINT == 0 {
                kept.push(h);
            }
        }
        kept.reverse();
        // Now kept[i] = step(i * CHECKPOINT) for every multiple below len, then step(len) last.
        Self {
            len,
            checkpoints: kept,
        }
    }

    /// Number of steps after the tip: the epochs this chain gives entropy for.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `step(0)`, the value the genesis fixes.
    pub fn tip(&self) -> Hash32 {
        self.checkpoints[0]
    }

    /// `step(x)`, or `None` past the end of the chain.
    pub fn step(&self, x: u64) -> Option<Hash32> {
        if x > self.len {
            return None;
        }
        let above = x.div_ceil(CHECKPOINT);
        let (mut h, mut at) = match self.checkpoints.get(above as usize) {
            Some(c) if above * CHECKPOINT <= self.len => (*c, above * CHECKPOINT),
            _ => (*self.checkpoints.last().expect("a checkpoint"), self.len),
        };
        while at > x {
            h = down(&h);
            at -= 1;
        }
        Some(h)
    }

    /// Whether `next` is the step after `previous`: what a replica checks of each epoch's entropy.
    pub fn follows(previous: &Hash32, next: &Hash32) -> bool {
        &down(next) == previous
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_hashes_to_the_one_before_and_the_tip_is_step_zero() {
        for len in [
            0,
            1,
            5,
            CHECKPOINT - 1,
            CHECKPOINT,
            CHECKPOINT + 1,
            3 * CHECKPOINT + 7,
        ] {
            let chain = HashChain::new(&[9; 32], len);
            assert_eq!(chain.step(0), Some(chain.tip()));
            assert_eq!(chain.step(len), Some(down(&[9; 32])), "len {len}");
            assert_eq!(chain.step(len + 1), None);
            // Steps near the start, around each checkpoint and at the end.
            let near = |c: u64| c.saturating_sub(2)..=(c + 2).min(len);
            let xs = std::iter::once(1..=len.min(6))
                .chain((1..=len / CHECKPOINT).map(|i| near(i * CHECKPOINT)))
                .chain(std::iter::once(near(len)))
                .flatten()
                .filter(|&x| x >= 1);
            for x in xs {
                let (previous, next) = (
                    chain.step(x - 1).expect("within the chain"),
                    chain.step(x).expect("within the chain"),
                );
                assert!(HashChain::follows(&previous, &next), "len {len} step {x}");
            }
        }
        assert_ne!(
            HashChain::new(&[9; 32], 10).tip(),
            HashChain::new(&[8; 32], 10).tip()
        );
    }

    #[test]
    fn a_step_cannot_be_passed_off_as_another() {
        let chain = HashChain::new(&[1; 32], 100);
        let (s1, s2, s3) = (
            chain.step(1).expect("within the chain"),
            chain.step(2).expect("within the chain"),
            chain.step(3).expect("within the chain"),
        );
        assert!(HashChain::follows(&s1, &s2));
        assert!(!HashChain::follows(&s1, &s3));
        assert!(!HashChain::follows(&s2, &s1));
        assert!(!HashChain::follows(&s1, &s1));
    }

    #[test]
    fn the_mix_is_independent_of_order_and_every_input_moves_the_beacon() {
        let reveals: Vec<Hash32> = (0u8..5).map(|i| reveal(&[i; 32], &[7; 32], 3)).collect();
        let mut forward = Mix::default();
        reveals.iter().for_each(|r| forward.add(r));
        let mut backward = Mix::default();
        reveals.iter().rev().for_each(|r| backward.add(r));
        assert_eq!(forward, backward);
        let mut fewer = Mix::default();
        reveals[1..].iter().for_each(|r| fewer.add(r));
        assert_ne!(forward, fewer);

        let b = next_beacon(4, &[1; 32], &forward.0, &[2; 32]);
        assert_ne!(b, next_beacon(5, &[1; 32], &forward.0, &[2; 32]));
        assert_ne!(b, next_beacon(4, &[3; 32], &forward.0, &[2; 32]));
        assert_ne!(b, next_beacon(4, &[1; 32], &fewer.0, &[2; 32]));
        assert_ne!(b, next_beacon(4, &[1; 32], &forward.0, &[3; 32]));
    }

    #[test]
    fn reveals_are_fixed_by_secret_chain_and_epoch_and_match_their_commitment() {
        let r = reveal(&[1; 32], &[2; 32], 10);
        assert_eq!(r, reveal(&[1; 32], &[2; 32], 10));
        assert_ne!(r, reveal(&[1; 32], &[2; 32], 11));
        assert_ne!(r, reveal(&[1; 32], &[3; 32], 10));
        assert_ne!(r, reveal(&[4; 32], &[2; 32], 10));
        assert_eq!(reveal_commitment(&r), keccak(&[&r]));
    }
}
