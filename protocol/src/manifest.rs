//! The manifest: what an object is, how it is encoded, and who pinned it.
//!
//! A manifest has one canonical byte encoding (postcard of [`Manifest`], with decoding refusing any
//! input that does not re-encode to the same bytes). The creator signs `atlas/manifest/v1 || bytes`;
//! the object id is `BLAKE3("atlas/object/v1" || bytes)`. A [`SignedManifest`] read from disk or the
//! network is untrusted until [`SignedManifest::verify`] turns it into a [`VerifiedManifest`].

use crate::id::ObjectId;
use crate::layout::{Layout, LayoutError, ENCODING_RS_GF8_V1};
use crate::sign::{self, Domain, Keypair, PublicKey, SignError, Signature};
use serde::{Deserialize, Serialize};

/// Current manifest format version.
pub const MANIFEST_VERSION: u8 = 1;
/// Largest canonical manifest accepted, in bytes.
pub const MAX_MANIFEST_SIZE: usize = 16 * 1024;
/// Largest name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Largest media type, in bytes.
pub const MAX_MEDIA_TYPE_LEN: usize = 127;
/// Magic at the start of a manifest file.
pub const MANIFEST_FILE_MAGIC: &[u8; 8] = b"ATLASMF1";
const OBJECT_ID_TAG: &[u8] = b"atlas/object/v1";

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {0} bytes, more than the {MAX_MANIFEST_SIZE} allowed")]
    TooLarge(usize),
    #[error("manifest bytes do not decode: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("manifest bytes are not in canonical form")]
    NotCanonical,
    #[error("manifest version {0} is not supported (this build reads version {MANIFEST_VERSION})")]
    UnsupportedVersion(u8),
    #[error("encoding '{0}' is not supported (this build reads {ENCODING_RS_GF8_V1})")]
    UnsupportedEncoding(String),
    #[error("manifest has {got} slot roots, its layout has {want} slots")]
    SlotCountMismatch { got: usize, want: usize },
    #[error("{field} is longer than {max} bytes")]
    FieldTooLong { field: &'static str, max: usize },
    #[error("manifest layout: {0}")]
    Layout(#[from] LayoutError),
    #[error("manifest signature: {0}")]
    Signature(#[from] SignError),
    #[error("not a manifest file (bad magic)")]
    BadMagic,
}

/// The signed description of one object. Field order is part of the format: never reorder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u8,
    pub encoding: String,
    pub name: String,
    pub media_type: String,
    pub size: u64,
    /// BLAKE3 of the whole file.
    pub file_hash: [u8; 32],
    pub data_shards: u16,
    pub parity_shards: u16,
    pub shard_size: u64,
    pub stripes: u64,
    /// Plain BLAKE3 of each slot's bytes, `n` of them.
    pub slot_roots: Vec<[u8; 32]>,
    pub creator: PublicKey,
    /// Unix seconds.
    pub created_at: u64,
}

impl Manifest {
    /// The layout this manifest describes, checked for consistency.
    pub fn layout(&self) -> Result<Layout, ManifestError> {
        if self.version != MANIFEST_VERSION {
            return Err(ManifestError::UnsupportedVersion(self.version));
        }
        if self.encoding != ENCODING_RS_GF8_V1 {
            return Err(ManifestError::UnsupportedEncoding(self.encoding.clone()));
        }
        if self.name.len() > MAX_NAME_LEN {
            return Err(ManifestError::FieldTooLong {
                field: "name",
                max: MAX_NAME_LEN,
            });
        }
        if self.media_type.len() > MAX_MEDIA_TYPE_LEN {
            return Err(ManifestError::FieldTooLong {
                field: "media type",
                max: MAX_MEDIA_TYPE_LEN,
            });
        }
        let layout = Layout::new(
            self.data_shards as usize,
            self.parity_shards as usize,
            self.shard_size,
            self.size,
        )?;
        if layout.stripes() != self.stripes {
            return Err(LayoutError::StripeMismatch {
                got: self.stripes,
                want: layout.stripes(),
                size: self.size,
            }
            .into());
        }
        if self.slot_roots.len() != layout.total_shards() {
            return Err(ManifestError::SlotCountMismatch {
                got: self.slot_roots.len(),
                want: layout.total_shards(),
            });
        }
        Ok(layout)
    }

    /// The canonical bytes.
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("serializing to a Vec cannot fail")
    }

    /// Decodes canonical bytes, refusing anything that would not re-encode identically.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let manifest: Manifest = postcard::from_bytes(bytes)?;
        if manifest.to_canonical_bytes() != bytes {
            return Err(ManifestError::NotCanonical);
        }
        manifest.layout()?;
        Ok(manifest)
    }

    /// Signs the manifest with the creator's key (which must match `creator`).
    pub fn sign(self, key: &Keypair) -> Result<VerifiedManifest, ManifestError> {
        self.layout()?;
        let bytes = self.to_canonical_bytes();
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        if key.public() != self.creator {
            return Err(SignError::BadSignature.into());
        }
        let signature = key.sign(Domain::Manifest, &bytes);
        Ok(VerifiedManifest {
            id: object_id(&bytes),
            manifest: self,
            signed: SignedManifest { bytes, signature },
        })
    }
}

/// The object id of canonical manifest bytes.
pub fn object_id(canonical: &[u8]) -> ObjectId {
    let mut h = blake3::Hasher::new();
    h.update(OBJECT_ID_TAG);
    h.update(&[0]);
    h.update(canonical);
    ObjectId(*h.finalize().as_bytes())
}

/// A manifest as it travels: the exact signed bytes and the signature. Untrusted until verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    pub bytes: Vec<u8>,
    pub signature: Signature,
}

impl SignedManifest {
    /// Checks encoding, layout and signature.
    pub fn verify(&self) -> Result<VerifiedManifest, ManifestError> {
        let manifest = Manifest::from_canonical_bytes(&self.bytes)?;
        sign::verify(
            &manifest.creator,
            Domain::Manifest,
            &self.bytes,
            &self.signature,
        )?;
        Ok(VerifiedManifest {
            id: object_id(&self.bytes),
            manifest,
            signed: self.clone(),
        })
    }

    /// The manifest file format: magic, then postcard of this struct.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut out = MANIFEST_FILE_MAGIC.to_vec();
        out.extend(postcard::to_stdvec(self).expect("serializing to a Vec cannot fail"));
        out
    }

    /// Parses the manifest file format (does not verify).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let body = bytes
            .strip_prefix(MANIFEST_FILE_MAGIC.as_slice())
            .ok_or(ManifestError::BadMagic)?;
        if body.len() > MAX_MANIFEST_SIZE + 128 {
            return Err(ManifestError::TooLarge(body.len()));
        }
        Ok(postcard::from_bytes(body)?)
    }
}

/// A manifest whose encoding, layout and signature have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedManifest {
    id: ObjectId,
    manifest: Manifest,
    signed: SignedManifest,
}

impl VerifiedManifest {
    pub fn id(&self) -> ObjectId {
        self.id
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn signed(&self) -> &SignedManifest {
        &self.signed
    }
    pub fn layout(&self) -> Layout {
        self.manifest
            .layout()
            .expect("a verified manifest has a valid layout")
    }
    pub fn slot_root(&self, slot: usize) -> blake3::Hash {
        blake3::Hash::from_bytes(self.manifest.slot_roots[slot])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &Keypair) -> Manifest {
        let layout = Layout::new(4, 2, 65536, 300_000).expect("valid");
        Manifest {
            version: MANIFEST_VERSION,
            encoding: ENCODING_RS_GF8_V1.into(),
            name: "clip.mp4".into(),
            media_type: "video/mp4".into(),
            size: layout.size(),
            file_hash: [7; 32],
            data_shards: 4,
            parity_shards: 2,
            shard_size: 65536,
            stripes: layout.stripes(),
            slot_roots: vec![[1; 32]; 6],
            creator: key.public(),
            created_at: 1_700_000_000,
        }
    }

    #[test]
    fn signed_manifest_round_trips_and_verifies() {
        let key = Keypair::from_secret([5; 32]);
        let v = sample(&key).sign(&key).expect("signs");
        let file = v.signed().to_file_bytes();
        let back = SignedManifest::from_file_bytes(&file)
            .expect("parses")
            .verify()
            .expect("verifies");
        assert_eq!(back, v);
        assert_eq!(back.id(), object_id(&v.signed().bytes));
    }

    #[test]
    fn a_manifest_edited_after_signing_fails() {
        let key = Keypair::from_secret([5; 32]);
        let v = sample(&key).sign(&key).expect("signs");
        let mut edited = v.manifest().clone();
        edited.size += 1;
        edited.stripes = edited
            .layout()
            .map(|l| l.stripes())
            .unwrap_or(edited.stripes);
        let forged = SignedManifest {
            bytes: edited.to_canonical_bytes(),
            signature: v.signed().signature,
        };
        assert!(matches!(
            forged.verify(),
            Err(ManifestError::Signature(SignError::BadSignature))
        ));
        // Flipping any single byte of the signed bytes is refused one way or another.
        for i in 0..v.signed().bytes.len() {
            let mut bytes = v.signed().bytes.clone();
            bytes[i] ^= 0x01;
            let s = SignedManifest {
                bytes,
                signature: v.signed().signature,
            };
            assert!(s.verify().is_err(), "byte {i} flipped");
        }
    }

    #[test]
    fn non_canonical_and_inconsistent_manifests_are_refused() {
        let key = Keypair::from_secret([5; 32]);
        let mut m = sample(&key);
        m.slot_roots.pop();
        assert!(matches!(
            m.clone().sign(&key),
            Err(ManifestError::SlotCountMismatch { .. })
        ));
        let mut bytes = sample(&key).to_canonical_bytes();
        bytes.push(0);
        assert!(Manifest::from_canonical_bytes(&bytes).is_err());
    }
}
