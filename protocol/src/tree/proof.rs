//! Proofs of inclusion: a chunk with its siblings, and a shard verified against its slot root.

use super::*;

/// Proof that one 1 KiB chunk belongs to a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkProof {
    pub index: u64,
    #[serde(with = "serde_bytes_vec")]
    pub chunk: Vec<u8>,
    pub siblings: Vec<Cv>,
}

impl ChunkProof {
    /// Builds the proof of chunk `index` from its 16 KiB group's bytes and the siblings above the
    /// group (read from an outboard with [`TreeShape::sibling_nodes`] at [`GROUP_LOG`]).
    pub fn build(
        shape: &TreeShape,
        index: u64,
        group: &[u8],
        upper_siblings: Vec<Cv>,
    ) -> Result<Self, TreeError> {
        if index >= shape.chunks() {
            return Err(TreeError::OutOfRange { level: 0, index });
        }
        if group.len() as u64 != GROUP_LEN {
            return Err(TreeError::BadChunkLength(group.len()));
        }
        let group_index = index >> GROUP_LOG;
        let base = group_index << GROUP_LOG;
        let mut level: Vec<Cv> = group
            .chunks(CHUNK_LEN as usize)
            .enumerate()
            .map(|(i, c)| subtree_cv((base + i as u64) * CHUNK_LEN, c))
            .collect();
        let mut siblings = Vec::with_capacity(GROUP_LOG as usize + upper_siblings.len());
        let mut local = (index - base) as usize;
        for _ in 0..GROUP_LOG {
            siblings.push(level[local ^ 1]);
            level = next_level(&level);
            local >>= 1;
        }
        siblings.extend(upper_siblings);
        let start = (index * CHUNK_LEN - base * CHUNK_LEN) as usize;
        Ok(Self {
            index,
            chunk: group[start..start + CHUNK_LEN as usize].to_vec(),
            siblings,
        })
    }

    /// Checks the chunk against the slot root.
    pub fn verify(&self, shape: &TreeShape, root: &blake3::Hash) -> Result<(), TreeError> {
        if self.chunk.len() as u64 != CHUNK_LEN {
            return Err(TreeError::BadChunkLength(self.chunk.len()));
        }
        if self.index >= shape.chunks() {
            return Err(TreeError::OutOfRange {
                level: 0,
                index: self.index,
            });
        }
        let cv = subtree_cv(self.index * CHUNK_LEN, &self.chunk);
        let got = shape.fold_to_root(0, self.index, cv, &self.siblings)?;
        if &got == root {
            Ok(())
        } else {
            Err(TreeError::RootMismatch)
        }
    }

    /// Serialized size on the wire.
    pub fn wire_len(&self) -> usize {
        postcard::experimental::serialized_size(self).unwrap_or(usize::MAX)
    }
}

/// Checks a whole shard (shard `index` of size `shard_size`, a power of two) against the slot root
/// with its sibling CVs.
pub fn verify_shard(
    shape: &TreeShape,
    root: &blake3::Hash,
    shard_size: u64,
    index: u64,
    bytes: &[u8],
    siblings: &[Cv],
) -> Result<(), TreeError> {
    if !shard_size.is_power_of_two() || shard_size < MIN_SLOT_LEN {
        return Err(TreeError::BadSlotLength(shard_size));
    }
    let level = shard_level(shard_size);
    if bytes.len() as u64 != shard_size || index >= shape.width(level) {
        return Err(TreeError::OutOfRange { level, index });
    }
    let got = if level == shape.height() {
        // A one-shard slot: the shard is the whole tree.
        if !siblings.is_empty() {
            return Err(TreeError::WrongSiblingCount {
                got: siblings.len(),
                want: 0,
            });
        }
        blake3::hash(bytes)
    } else {
        let cv = subtree_cv(index * shard_size, bytes);
        shape.fold_to_root(level, index, cv, siblings)?
    };
    if &got == root {
        Ok(())
    } else {
        Err(TreeError::RootMismatch)
    }
}

/// A shard checked against its slot root, with the group CVs its check computed (what a store needs
/// for its outboard). Only [`VerifiedShard::verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedShard {
    root: [u8; 32],
    stripes: u64,
    stripe: u64,
    bytes: Vec<u8>,
    groups: Vec<Cv>,
}

impl VerifiedShard {
    /// Verifies shard `stripe` of a slot (`stripes` shards of `bytes.len()` bytes, a power of two)
    /// against `root` with its sibling CVs, hashing every byte once.
    pub fn verify(
        root: &blake3::Hash,
        stripes: u64,
        stripe: u64,
        bytes: Vec<u8>,
        siblings: &[Cv],
    ) -> Result<Self, TreeError> {
        let shard_size = bytes.len() as u64;
        if !shard_size.is_power_of_two() || shard_size < MIN_SLOT_LEN {
            return Err(TreeError::BadSlotLength(shard_size));
        }
        let slot_len = stripes
            .checked_mul(shard_size)
            .ok_or(TreeError::BadSlotLength(u64::MAX))?;
        let shape = TreeShape::new(slot_len)?;
        let level = shard_level(shard_size);
        if stripe >= shape.width(level) {
            return Err(TreeError::OutOfRange {
                level,
                index: stripe,
            });
        }
        let mut groups = Vec::with_capacity((shard_size / GROUP_LEN) as usize);
        group_cvs(stripe * shard_size, &bytes, &mut groups);
        let mut nodes = groups.clone();
        while nodes.len() > 2 {
            nodes = next_level(&nodes);
        }
        let got = if level == shape.height() {
            if !siblings.is_empty() {
                return Err(TreeError::WrongSiblingCount {
                    got: siblings.len(),
                    want: 0,
                });
            }
            root_of_top(&[nodes[0], nodes[1]])
        } else {
            let cv = merge_subtrees_non_root(&nodes[0], &nodes[1], Mode::Hash);
            shape.fold_to_root(level, stripe, cv, siblings)?
        };
        if &got != root {
            return Err(TreeError::RootMismatch);
        }
        Ok(Self {
            root: *root.as_bytes(),
            stripes,
            stripe,
            bytes,
            groups,
        })
    }

    /// The slot root it was verified against.
    pub fn root(&self) -> &[u8; 32] {
        &self.root
    }
    /// Shards in the slot it was verified for.
    pub fn stripes(&self) -> u64 {
        self.stripes
    }
    pub fn stripe(&self) -> u64 {
        self.stripe
    }
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The outboard group CVs of this shard, in order.
    pub fn groups(&self) -> &[Cv] {
        &self.groups
    }
}

/// The tree level whose nodes are shards of `shard_size` bytes (a power of two >= 1 KiB).
pub fn shard_level(shard_size: u64) -> u32 {
    (shard_size / CHUNK_LEN).trailing_zeros()
}

mod serde_bytes_vec {
    //! Serialize `Vec<u8>` as one byte string rather than a sequence of integers.
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(V)
    }
}
