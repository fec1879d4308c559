//! The slot store: where a provider keeps the slots it holds.
//!
//! A slot is created with its expected root and geometry, which reserves its full length against the
//! store's capacity. Shards arrive one by one, already verified against the root
//! ([`VerifiedShard`]); a shard is durable once `put_shard` returns. When the last shard lands the
//! store completes the slot's outboard, and from then on it answers storage challenges by reading a
//! 16 KiB group per sampled chunk plus a few CVs, never the whole slot.

use atlas_protocol::challenge::{Challenge, StorageProof};
use atlas_protocol::tree::{Cv, TreeError, TreeShape, VerifiedShard};
use atlas_protocol::ObjectId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::PathBuf;

/// One slot of one object.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SlotKey {
    pub object: ObjectId,
    pub slot: u16,
}

impl SlotKey {
    pub fn new(object: ObjectId, slot: u16) -> Self {
        Self { object, slot }
    }

    /// Fixed-width big-endian database key: object id then slot index.
    pub fn to_db_key(&self) -> [u8; 34] {
        let mut k = [0u8; 34];
        k[..32].copy_from_slice(self.object.as_bytes());
        k[32..].copy_from_slice(&self.slot.to_be_bytes());
        k
    }

    pub fn from_db_key(bytes: &[u8]) -> Option<Self> {
        let object: [u8; 32] = bytes.get(..32)?.try_into().ok()?;
        let slot: [u8; 2] = bytes.get(32..34)?.try_into().ok()?;
        Some(Self::new(ObjectId(object), u16::from_be_bytes(slot)))
    }
}

impl fmt::Display for SlotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.object.short(), self.slot)
    }
}

impl fmt::Debug for SlotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SlotKey({self})")
    }
}

/// What a slot must hold: its root and its geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotSpec {
    pub root: [u8; 32],
    pub shard_size: u64,
    pub stripes: u64,
}

impl SlotSpec {
    pub fn len(&self) -> u64 {
        self.shard_size * self.stripes
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn root(&self) -> blake3::Hash {
        blake3::Hash::from_bytes(self.root)
    }

    pub fn shape(&self) -> Result<TreeShape, TreeError> {
        TreeShape::new(self.len())
    }

    pub(crate) fn check(&self) -> Result<TreeShape, StoreError> {
        let len = self.shard_size.checked_mul(self.stripes);
        match len {
            Some(len)
                if self.shard_size.is_power_of_two()
                    && self.shard_size >= 64 * 1024
                    && self.stripes > 0 =>
            {
                Ok(TreeShape::new(len)?)
            }
            _ => Err(StoreError::Tree(TreeError::BadSlotLength(
                self.shard_size.saturating_mul(self.stripes),
            ))),
        }
    }
}

/// A slot's state in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub spec: SlotSpec,
    /// Shards stored so far.
    pub present: u64,
}

impl SlotInfo {
    pub fn complete(&self) -> bool {
        self.present == self.spec.stripes
    }
}

/// Space accounting, in bytes of slot data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// The most the store may hold.
    pub capacity: u64,
    /// Full lengths of every slot created (what new slots are checked against).
    pub reserved: u64,
    /// Bytes of shards actually stored.
    pub stored: u64,
}

impl Usage {
    pub fn free(&self) -> u64 {
        self.capacity.saturating_sub(self.reserved)
    }

    /// Refuses a new slot `key` of `len` bytes that would not fit.
    pub fn check_room(&self, key: SlotKey, len: u64) -> Result<(), StoreError> {
        if len > self.free() {
            return Err(StoreError::CapacityExceeded {
                key,
                need: len,
                free: self.free(),
                capacity: self.capacity,
            });
        }
        Ok(())
    }
}

/// What `put_shard` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored; more shards are still missing.
    Stored,
    /// Stored, and it was the last one: the slot is complete and provable.
    Completed,
    /// That shard was already stored; nothing changed.
    AlreadyStored,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "not enough space for slot {key}: it needs {need} bytes, {free} of {capacity} are free"
    )]
    CapacityExceeded {
        key: SlotKey,
        need: u64,
        free: u64,
        capacity: u64,
    },
    #[error("not enough disk for slot {key}: it needs {need} bytes and {available} are free, of which {floor} stay free for the store's database")]
    DiskFull {
        key: SlotKey,
        need: u64,
        available: u64,
        floor: u64,
    },
    #[error("slot {0} is not in this store")]
    UnknownSlot(SlotKey),
    #[error("slot {0} already exists with a different root or geometry")]
    Conflict(SlotKey),
    #[error("shard is {got} bytes, slot {key} has {want}-byte shards")]
    ShardSize { key: SlotKey, got: u64, want: u64 },
    #[error("shard was verified for another slot than {0}")]
    WrongSlot(SlotKey),
    #[error("slot {key}: bytes {offset}..{end} include shards not stored yet")]
    NotStored { key: SlotKey, offset: u64, end: u64 },
    #[error("slot {key} is not complete: {present} of {stripes} shards stored")]
    Incomplete {
        key: SlotKey,
        present: u64,
        stripes: u64,
    },
    #[error("bytes {offset}..{end} are outside slot {key} of {len} bytes")]
    OutOfRange {
        key: SlotKey,
        offset: u64,
        end: u64,
        len: u64,
    },
    #[error("a read of {len} bytes from slot {key} is more than the {MAX_READ} allowed at once")]
    ReadTooLarge { key: SlotKey, len: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} does not hold slot {key}: {why}")]
    BadImport {
        key: SlotKey,
        path: PathBuf,
        why: String,
    },
    #[error("database: {0}")]
    Db(String),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Tree(#[from] TreeError),
}

/// A provider's slot store. Every method is synchronous and may block on disk: async callers run it
/// on a blocking thread.
pub trait SlotStore: Send + Sync {
    /// Creates an empty slot, reserving its full length. Creating the same slot with the same spec
    /// again is a no-op; with another spec it is a [`StoreError::Conflict`].
    fn create_slot(&self, key: SlotKey, spec: SlotSpec) -> Result<(), StoreError>;

    /// Stores one verified shard; durable when this returns `Ok`.
    fn put_shard(&self, key: SlotKey, shard: &VerifiedShard) -> Result<PutOutcome, StoreError>;

    /// Stores several verified shards of one slot, as `put_shard` on each would, but made durable
    /// together (a store on disk syncs once for all of them). The outcome is `Completed` if they
    /// completed the slot, `Stored` if any was new, else `AlreadyStored`.
    fn put_shards(&self, key: SlotKey, shards: &[VerifiedShard]) -> Result<PutOutcome, StoreError> {
        // Check the whole batch first, so a bad shard refuses it all.
        let spec = self.info(key)?.ok_or(StoreError::UnknownSlot(key))?.spec;
        for shard in shards {
            check_shard(key, &spec, shard)?;
        }
        let mut outcome = PutOutcome::AlreadyStored;
        for shard in shards {
            match self.put_shard(key, shard)? {
                PutOutcome::AlreadyStored => {}
                PutOutcome::Completed => outcome = PutOutcome::Completed,
                PutOutcome::Stored if outcome == PutOutcome::AlreadyStored => {
                    outcome = PutOutcome::Stored
                }
                PutOutcome::Stored => {}
            }
        }
        Ok(outcome)
    }

    /// Takes a whole slot from the file at `path` (say, one a repairer rebuilt): its bytes are
    /// hashed and must match the slot root, then the store keeps them, complete and provable. A
    /// store on disk moves the file into place (so `path` must be on the same file system);
    /// otherwise the file is left as it was. Fails with `Conflict` if the slot exists.
    fn import_slot(
        &self,
        key: SlotKey,
        spec: SlotSpec,
        path: &std::path::Path,
    ) -> Result<(), StoreError> {
        let outboard = outboard_of_file(key, &spec, path)?;
        if self.info(key)?.is_some() {
            return Err(StoreError::Conflict(key));
        }
        self.create_slot(key, spec)?;
        let file = std::fs::File::open(path).map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let c = spec.shard_size;
        let level = atlas_protocol::tree::shard_level(c);
        let per_batch = ((32 << 20) / c).max(1);
        let mut batch = Vec::new();
        for stripe in 0..spec.stripes {
            let mut buf = vec![0u8; c as usize];
            std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, stripe * c).map_err(
                |source| StoreError::Io {
                    path: path.to_path_buf(),
                    source,
                },
            )?;
            let siblings = if level == outboard.shape().height() {
                Vec::new()
            } else {
                outboard.siblings(level, stripe)?
            };
            batch.push(VerifiedShard::verify(
                &spec.root(),
                spec.stripes,
                stripe,
                buf,
                &siblings,
            )?);
            if batch.len() as u64 == per_batch || stripe + 1 == spec.stripes {
                self.put_shards(key, &batch)?;
                batch.clear();
            }
        }
        Ok(())
    }

    /// The slot's state, if the store has it.
    fn info(&self, key: SlotKey) -> Result<Option<SlotInfo>, StoreError>;

    /// Every slot held, in key order.
    fn list(&self) -> Result<Vec<(SlotKey, SlotInfo)>, StoreError>;

    /// Reads `len` bytes of the slot from `offset`; every shard touched must be stored.
    fn read(&self, key: SlotKey, offset: u64, len: u64) -> Result<Vec<u8>, StoreError>;

    /// An outboard CV of a complete slot (`level >= GROUP_LOG`).
    fn node(&self, key: SlotKey, level: u32, index: u64) -> Result<Cv, StoreError>;

    /// Removes the slot and its bytes, releasing its reservation. `false` if it was not there.
    fn delete_slot(&self, key: SlotKey) -> Result<bool, StoreError>;

    /// Current space accounting.
    fn usage(&self) -> Usage;

    /// The sibling CVs that prove shard `stripe` of a complete slot.
    fn shard_siblings(&self, key: SlotKey, stripe: u64) -> Result<Vec<Cv>, StoreError> {
        let info = self.info(key)?.ok_or(StoreError::UnknownSlot(key))?;
        let shape = info.spec.check()?;
        let level = atlas_protocol::tree::shard_level(info.spec.shard_size);
        if level == shape.height() {
            return Ok(Vec::new());
        }
        shape
            .sibling_nodes(level, stripe)?
            .into_iter()
            .map(|(l, i)| self.node(key, l, i))
            .collect()
    }

    /// Answers a storage challenge for a complete slot.
    fn prove(&self, key: SlotKey, challenge: &Challenge) -> Result<StorageProof, StoreError> {
        let info = self.info(key)?.ok_or(StoreError::UnknownSlot(key))?;
        if !info.complete() {
            return Err(StoreError::Incomplete {
                key,
                present: info.present,
                stripes: info.spec.stripes,
            });
        }
        let shape = info.spec.check()?;
        let group_len = atlas_protocol::tree::GROUP_LEN;
        StorageProof::build(
            challenge,
            &shape,
            |g| self.read(key, g * group_len, group_len),
            |l, i| self.node(key, l, i),
        )
    }
}

/// Shared checks for `put_shard`.
/// Hashes a whole slot file into its outboard and checks it against the slot's length and root.
pub(crate) fn outboard_of_file(
    key: SlotKey,
    spec: &SlotSpec,
    path: &std::path::Path,
) -> Result<atlas_protocol::tree::Outboard, StoreError> {
    use std::io::Read;
    let shape = spec.check()?;
    let bad = |why: String| StoreError::BadImport {
        key,
        path: path.to_path_buf(),
        why,
    };
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len != spec.len() {
        return Err(bad(format!(
            "it is {len} bytes, the slot is {}",
            spec.len()
        )));
    }
    let mut groups = Vec::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut offset = 0;
    while offset < len {
        let n = buf.len().min((len - offset) as usize);
        file.read_exact(&mut buf[..n]).map_err(io)?;
        atlas_protocol::tree::group_cvs(offset, &buf[..n], &mut groups);
        offset += n as u64;
    }
    let outboard = atlas_protocol::tree::Outboard::from_groups(shape, groups)?;
    if outboard.root() != spec.root() {
        return Err(bad("its bytes do not hash to the slot root".into()));
    }
    Ok(outboard)
}

pub(crate) fn check_shard(
    key: SlotKey,
    spec: &SlotSpec,
    shard: &VerifiedShard,
) -> Result<(), StoreError> {
    if shard.bytes().len() as u64 != spec.shard_size {
        return Err(StoreError::ShardSize {
            key,
            got: shard.bytes().len() as u64,
            want: spec.shard_size,
        });
    }
    if shard.root() != &spec.root || shard.stripes() != spec.stripes {
        return Err(StoreError::WrongSlot(key));
    }
    if shard.stripe() >= spec.stripes {
        return Err(StoreError::OutOfRange {
            key,
            offset: shard.stripe() * spec.shard_size,
            end: (shard.stripe() + 1) * spec.shard_size,
            len: spec.len(),
        });
    }
    Ok(())
}

/// Largest single read: four of the largest shards.
pub const MAX_READ: u64 = 16 * 1024 * 1024;

/// Shared range check for `read`.
pub(crate) fn check_range(
    key: SlotKey,
    spec: &SlotSpec,
    offset: u64,
    len: u64,
) -> Result<std::ops::Range<u64>, StoreError> {
    let end = offset.saturating_add(len);
    if len > MAX_READ {
        return Err(StoreError::ReadTooLarge { key, len });
    }
    if end > spec.len() {
        return Err(StoreError::OutOfRange {
            key,
            offset,
            end,
            len: spec.len(),
        });
    }
    if len == 0 {
        return Ok(0..0);
    }
    Ok(offset / spec.shard_size..(end - 1) / spec.shard_size + 1)
}
