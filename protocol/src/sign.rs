//! Ed25519 keys and domain-separated signatures.
//!
//! Every signed payload is `tag || bytes`, where the tag names what is signed and its version
//! (`atlas/manifest/v1`), so a signature made for one kind of message can never be replayed as another.

use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Why a key or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("'{0}' is not a public key (expected 64 hex digits)")]
    BadPublicKey(String),
    #[error("secret key must be 32 bytes as 64 hex digits")]
    BadSecretKey,
    #[error("signature does not match the signed bytes and public key")]
    BadSignature,
}

/// Signing domains. Each is a distinct, versioned tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Manifest,
    Transaction,
    Block,
}

impl Domain {
    pub fn tag(self) -> &'static [u8] {
        match self {
            Domain::Manifest => b"atlas/manifest/v1",
            Domain::Transaction => b"atlas/tx/v1",
            Domain::Block => b"atlas/block/v1",
        }
    }
}

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The libp2p peer id of this ed25519 key, as bytes: the identity multihash (code 0x00,
    /// length 36) of the key's protobuf encoding (field 1 `KeyType = Ed25519`, field 2 the 32
    /// key bytes). A provider's registered peer id must be this, so nobody can register another
    /// node's peer id as their own.
    pub fn peer_id_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(38);
        out.extend_from_slice(&[0x00, 36, 0x08, 0x01, 0x12, 32]);
        out.extend_from_slice(&self.0);
        out
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(&self.0[..6]))
    }
}

impl FromStr for PublicKey {
    type Err = SignError;
    fn from_str(s: &str) -> Result<Self, SignError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut out)
            .map_err(|_| SignError::BadPublicKey(s.to_string()))?;
        ed25519_dalek::VerifyingKey::from_bytes(&out)
            .map_err(|_| SignError::BadPublicKey(s.to_string()))?;
        Ok(Self(out))
    }
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}..)", hex::encode(&self.0[..6]))
    }
}

impl Serialize for Signature {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature, E> {
                let bytes: [u8; 64] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Signature(bytes))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// An ed25519 signing key. Its `Debug` never prints the secret.
#[derive(Clone)]
pub struct Keypair(ed25519_dalek::SigningKey);

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({:?})", self.public())
    }
}

impl Keypair {
    /// A key from 32 secret bytes (the caller draws them from the OS's randomness).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&secret))
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, SignError> {
        let mut secret = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut secret).map_err(|_| SignError::BadSecretKey)?;
        Ok(Self::from_secret(secret))
    }

    /// The 32 secret bytes (for handing the same key to the network layer).
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    pub fn secret_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// Signs `domain.tag() || bytes`.
    pub fn sign(&self, domain: Domain, bytes: &[u8]) -> Signature {
        Signature(self.0.sign(&domain_message(domain, bytes)).to_bytes())
    }
}

/// Verifies a signature made by [`Keypair::sign`] in the same domain.
pub fn verify(
    key: &PublicKey,
    domain: Domain,
    bytes: &[u8],
    sig: &Signature,
) -> Result<(), SignError> {
    let vk =
        ed25519_dalek::VerifyingKey::from_bytes(&key.0).map_err(|_| SignError::BadSignature)?;
    let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
    vk.verify_strict(&domain_message(domain, bytes), &sig)
        .map_err(|_| SignError::BadSignature)
}

fn domain_message(domain: Domain, bytes: &[u8]) -> Vec<u8> {
    let tag = domain.tag();
    let mut msg = Vec::with_capacity(tag.len() + 1 + bytes.len());
    msg.extend_from_slice(tag);
    msg.push(0);
    msg.extend_from_slice(bytes);
    msg
}
