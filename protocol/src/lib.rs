//! # atlas-protocol
//!
//! The pure core of Atlas: identifiers, the signed manifest, the `rs-gf8-v1` erasure layout with its
//! streaming encoder and range decoder, the BLAKE3 slot tree with its inclusion and shard proofs, and
//! storage challenges, with the keccak commitment to an epoch's samples and the beacon they are
//! drawn from.
//!
//! This crate is sans-IO: it never touches the network, a database or an async runtime. It works on
//! byte slices and on `std::io::{Read, Write}` handed to it, so the same rules run in a provider, a
//! client, a test or a verifier anywhere.

pub mod beacon;
pub mod chain;
pub mod challenge;
pub mod commit;
pub mod erasure;
pub mod escrow;
pub mod id;
pub mod layout;
pub mod manifest;
pub mod sign;
pub mod tree;
pub mod wire;

pub use challenge::{Challenge, StorageProof};
pub use id::{DealId, IdPrefix, ObjectId};
pub use layout::Layout;
pub use manifest::{Manifest, SignedManifest, VerifiedManifest};
pub use sign::{Keypair, PublicKey};
