//! Blocks of the ledger: ordered transactions, chained by hash, signed by the sequencer.
//!
//! Epoch `e` covers heights `e * epoch_blocks ..= (e + 1) * epoch_blocks - 1`. The block that opens
//! an epoch first settles the previous one; the beacon of epoch `e` is the hash of the last block
//! before it (the header hash of height `e * epoch_blocks - 1`; genesis has a fixed beacon).

use crate::escrow::SignedTx;
use crate::sign::{self, Domain, Keypair, PublicKey, SignError, Signature};
use serde::{Deserialize, Serialize};

/// The header every node can check and follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockHeader {
    /// The chain this block belongs to (its genesis id), so a header of one chain is never
    /// taken for another's.
    pub chain: crate::escrow::ChainId,
    pub height: u64,
    pub epoch: u64,
    /// Hash of the previous header (zeros for the first block).
    pub prev: [u8; 32],
    /// Milliseconds since the Unix epoch, by the sequencer's clock.
    pub time_ms: u64,
    /// BLAKE3 over the ids of the block's transactions, in order.
    pub txs_root: [u8; 32],
    /// BLAKE3 of the canonical encoding of the escrow state after this block.
    pub state_root: [u8; 32],
    pub sequencer: PublicKey,
}

impl BlockHeader {
    pub fn to_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("serializing to a Vec cannot fail")
    }

    /// The header's hash: what the next block chains to and what beacons are made of.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"atlas/header/v1\0");
        h.update(&self.to_bytes());
        *h.finalize().as_bytes()
    }

    pub fn sign(self, key: &Keypair) -> SignedHeader {
        let signature = key.sign(Domain::Block, &self.to_bytes());
        SignedHeader {
            header: self,
            signature,
        }
    }
}

/// A header with the sequencer's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHeader {
    pub header: BlockHeader,
    pub signature: Signature,
}

impl SignedHeader {
    /// Checks the signature against the sequencer the header names (and, if given, the one the
    /// caller trusts).
    pub fn verify(&self, trusted: Option<&PublicKey>) -> Result<(), SignError> {
        if let Some(t) = trusted {
            if t != &self.header.sequencer {
                return Err(SignError::BadSignature);
            }
        }
        sign::verify(
            &self.header.sequencer,
            Domain::Block,
            &self.header.to_bytes(),
            &self.signature,
        )
    }
}

/// A block: its signed header and the transactions it ordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub header: SignedHeader,
    pub txs: Vec<SignedTx>,
}

/// The root of a block's transactions.
pub fn txs_root(txs: &[SignedTx]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"atlas/txs/v1\0");
    for tx in txs {
        h.update(&tx.id());
    }
    *h.finalize().as_bytes()
}

/// The beacon of the genesis epoch. `salt` is chosen at random when the chain starts and kept with
/// it, so two chains of the same sequencer key (a devnet started afresh) are different chains and
/// nothing signed for one replays on the other.
pub fn genesis_beacon(sequencer: &PublicKey, salt: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"atlas/genesis/v2\0");
    h.update(&sequencer.0);
    h.update(salt);
    *h.finalize().as_bytes()
}
