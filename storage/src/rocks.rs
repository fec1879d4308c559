//! The durable slot store: slot bytes in flat files, everything else in RocksDB.
//!
//! Layout under the store's directory (see `docs/design/storage.md` for why):
//!
//! ```text
//! db/                         RocksDB: column families `slots` and `shards`
//! slots/<object>.<slot>.data  the slot's bytes at their slot offsets (sparse until filled)
//! slots/<object>.<slot>.obao  the slot's outboard (group level first, upper levels on completion)
//! ```
//!
//! Write order makes every acknowledged shard durable and every crash recoverable: bytes and group CVs
//! are written and `fdatasync`ed first, then one synced RocksDB batch records the shard. A crash before
//! that batch leaves bytes nobody counts (overwritten by the retry); a crash after it loses nothing.
//! Slot files without a record (a crash during create or delete) are removed at open; a slot whose last
//! shard landed but whose outboard was not finished is finished at open.

use crate::outboard_file::write_upper_levels;
use crate::slot_store::{
    check_range, check_shard, outboard_of_file, PutOutcome, SlotInfo, SlotKey, SlotSpec, SlotStore,
    StoreError, Usage,
};
use atlas_protocol::tree::{Cv, VerifiedShard, GROUP_LEN, GROUP_LOG};
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

const CF_SLOTS: &str = "slots";
const CF_SHARDS: &str = "shards";

/// A slot's persisted record. Versioned: new fields mean a new variant, never a reordering.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum SlotRecord {
    V1 {
        spec: SlotSpec,
        present: u64,
        /// The outboard's upper levels are written: the slot is provable.
        sealed: bool,
    },
}

/// RocksDB-backed slot store.
#[derive(Debug)]
pub struct RocksSlotStore {
    db: DB,
    slots_dir: PathBuf,
    /// Guards the in-memory usage totals and serializes the capacity check with the record write.
    /// Held only for a record read and one batch write, never across I/O on slot bytes.
    usage: Mutex<Usage>,
    /// One lock per slot, held for a whole create, put, seal or delete of that slot, so operations
    /// on one slot never interleave while different slots proceed in parallel. Entries are kept
    /// (a few dozen bytes per slot ever touched): removing one while another thread holds a clone
    /// would let two threads lock different mutexes for the same slot.
    slot_locks: Mutex<HashMap<SlotKey, Arc<Mutex<()>>>>,
}

fn db_err(e: rocksdb::Error) -> StoreError {
    StoreError::Db(e.into_string())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl RocksSlotStore {
    /// Opens (or creates) the store in `dir` with the given capacity in bytes.
    pub fn open(dir: &Path, capacity: u64) -> Result<Self, StoreError> {
        let slots_dir = dir.join("slots");
        fs::create_dir_all(&slots_dir).map_err(io_err(&slots_dir))?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Values here are small records; slot bytes never enter RocksDB.
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        let cfs =
            [CF_SLOTS, CF_SHARDS].map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir.join("db"), cfs).map_err(db_err)?;
        let store = Self {
            db,
            slots_dir,
            usage: Mutex::new(Usage {
                capacity,
                ..Usage::default()
            }),
            slot_locks: Mutex::new(HashMap::new()),
        };
        store.recover()?;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Usage> {
        // Usage is plain numbers updated after a successful write: still consistent if poisoned.
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot_lock(&self, key: SlotKey) -> Arc<Mutex<()>> {
        self.slot_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone()
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    fn synced() -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        w
    }

    fn data_path(&self, key: SlotKey) -> PathBuf {
        self.slots_dir
            .join(format!("{}.{}.data", key.object, key.slot))
    }

    fn outboard_path(&self, key: SlotKey) -> PathBuf {
        self.slots_dir
            .join(format!("{}.{}.obao", key.object, key.slot))
    }

    fn shard_key(key: SlotKey, stripe: u64) -> [u8; 42] {
        let mut k = [0u8; 42];
        k[..34].copy_from_slice(&key.to_db_key());
        k[34..].copy_from_slice(&stripe.to_be_bytes());
        k
    }

    fn record(&self, key: SlotKey) -> Result<Option<(SlotSpec, u64, bool)>, StoreError> {
        let Some(bytes) = self
            .db
            .get_cf(self.cf(CF_SLOTS), key.to_db_key())
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let SlotRecord::V1 {
            spec,
            present,
            sealed,
        } = postcard::from_bytes(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("slot record {key}: {e}")))?;
        Ok(Some((spec, present, sealed)))
    }

    fn put_record(
        batch: &mut WriteBatch,
        cf: &rocksdb::ColumnFamily,
        key: SlotKey,
        rec: &SlotRecord,
    ) {
        let bytes = postcard::to_stdvec(rec).expect("serializing to a Vec cannot fail");
        batch.put_cf(cf, key.to_db_key(), bytes);
    }

    fn has_shard(&self, key: SlotKey, stripe: u64) -> Result<bool, StoreError> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_SHARDS), Self::shard_key(key, stripe))
            .map_err(db_err)?
            .is_some())
    }

    /// Rebuilds usage from the records, removes orphan files, seals slots whose last shard landed
    /// just before a crash.
    fn recover(&self) -> Result<(), StoreError> {
        let mut reserved = 0;
        let mut stored = 0;
        let mut known = std::collections::HashSet::new();
        let mut to_seal = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_SLOTS), IteratorMode::Start) {
            let (k, _) = item.map_err(db_err)?;
            let key = SlotKey::from_db_key(&k)
                .ok_or_else(|| StoreError::Corrupt(format!("slot key of {} bytes", k.len())))?;
            let (spec, present, sealed) = self.record(key)?.expect("key was just listed");
            reserved += spec.len();
            stored += present * spec.shard_size;
            known.insert(self.data_path(key));
            known.insert(self.outboard_path(key));
            if present == spec.stripes && !sealed {
                to_seal.push(key);
            }
        }
        {
            let mut usage = self.lock();
            usage.reserved = reserved;
            usage.stored = stored;
        }
        let entries = fs::read_dir(&self.slots_dir).map_err(io_err(&self.slots_dir))?;
        for entry in entries {
            let path = entry.map_err(io_err(&self.slots_dir))?.path();
            if !known.contains(&path) {
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
        }
        for key in to_seal {
            self.seal(key)?;
        }
        Ok(())
    }

    /// Slots whose data or outboard file is missing, not a regular file, or not the length its
    /// record says: damaged behind the store's back (truncated, replaced). Cheap (one `stat` per
    /// file), so a provider asks it at every start.
    pub fn misfiled(&self) -> Result<Vec<SlotKey>, StoreError> {
        let mut bad = Vec::new();
        for (key, info) in self.list()? {
            let shape = info.spec.check()?;
            let fits = |path: PathBuf, len: u64| {
                fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == len)
            };
            if !fits(self.data_path(key), info.spec.len())
                || !fits(self.outboard_path(key), shape.outboard_len())
            {
                bad.push(key);
            }
        }
        Ok(bad)
    }

    /// Writes the outboard's upper levels from its group level, then marks the slot sealed. The
    /// caller holds the slot's lock (or is `recover`, before anyone else can).
    fn seal(&self, key: SlotKey) -> Result<(), StoreError> {
        let (spec, present, _) = self.record(key)?.ok_or(StoreError::UnknownSlot(key))?;
        let shape = spec.check()?;
        let path = self.outboard_path(key);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        write_upper_levels(&file, &shape).map_err(io_err(&path))?;
        file.sync_data().map_err(io_err(&path))?;
        let _guard = self.lock();
        let mut batch = WriteBatch::default();
        let rec = SlotRecord::V1 {
            spec,
            present,
            sealed: true,
        };
        Self::put_record(&mut batch, self.cf(CF_SLOTS), key, &rec);
        self.db.write_opt(batch, &Self::synced()).map_err(db_err)
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        File::open(&self.slots_dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.slots_dir))
    }
}

/// Disk space a store leaves free for its database: new slots are refused below it.
pub const FREE_SPACE_FLOOR: u64 = 256 << 20;

impl RocksSlotStore {
    /// Bytes the disk holding the slots can still take for new slots: what is free on it, less
    /// the floor kept for the database.
    pub fn disk_room(&self) -> Result<u64, StoreError> {
        Ok(free_space(&self.slots_dir)?.saturating_sub(FREE_SPACE_FLOOR))
    }
}

/// Bytes free for unprivileged writers on the file system holding `path`.
fn free_space(path: &Path) -> Result<u64, StoreError> {
    let st = rustix::fs::statvfs(path).map_err(|e| io_err(path)(e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Creates `path` with `len` bytes really allocated on disk (not a sparse file that a full disk
/// fails later), and makes it durable. File systems without `fallocate` get a plain length.
fn allocate(path: &Path, len: u64) -> io::Result<()> {
    let f = File::create(path)?;
    if len > 0 {
        match rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => {}
            Err(rustix::io::Errno::OPNOTSUPP) => f.set_len(len)?,
            Err(e) => return Err(e.into()),
        }
    }
    f.sync_all()
}

impl SlotStore for RocksSlotStore {
    fn create_slot(&self, key: SlotKey, spec: SlotSpec) -> Result<(), StoreError> {
        let shape = spec.check()?;
        let slot_lock = self.slot_lock(key);
        let _slot = slot_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut usage = self.lock();
        if let Some((existing, _, _)) = self.record(key)? {
            return if existing == spec {
                Ok(())
            } else {
                Err(StoreError::Conflict(key))
            };
        }
        usage.check_room(key, spec.len())?;
        // The disk itself must have the room, beyond a floor kept free so the database can always
        // write (and so open again after a crash); the room is then really taken, not sparse.
        let need = spec.len() + shape.outboard_len();
        let available = free_space(&self.slots_dir)?;
        if available < need.saturating_add(FREE_SPACE_FLOOR) {
            return Err(StoreError::DiskFull {
                key,
                need,
                available,
                floor: FREE_SPACE_FLOOR,
            });
        }
        let files = [
            (self.data_path(key), spec.len()),
            (self.outboard_path(key), shape.outboard_len()),
        ];
        for (path, len) in &files {
            if let Err(e) = allocate(path, *len) {
                for (p, _) in &files {
                    let _ = fs::remove_file(p);
                }
                return Err(match e.raw_os_error() {
                    Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error() => {
                        StoreError::DiskFull {
                            key,
                            need,
                            available,
                            floor: FREE_SPACE_FLOOR,
                        }
                    }
                    _ => io_err(path)(e),
                });
            }
        }
        self.sync_dir()?;
        let mut batch = WriteBatch::default();
        let rec = SlotRecord::V1 {
            spec,
            present: 0,
            sealed: false,
        };
        Self::put_record(&mut batch, self.cf(CF_SLOTS), key, &rec);
        self.db.write_opt(batch, &Self::synced()).map_err(db_err)?;
        usage.reserved += spec.len();
        Ok(())
    }

    fn put_shard(&self, key: SlotKey, shard: &VerifiedShard) -> Result<PutOutcome, StoreError> {
        self.put_shards(key, std::slice::from_ref(shard))
    }

    fn put_shards(&self, key: SlotKey, shards: &[VerifiedShard]) -> Result<PutOutcome, StoreError> {
        let slot_lock = self.slot_lock(key);
        let _slot = slot_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (spec, present, sealed) = self.record(key)?.ok_or(StoreError::UnknownSlot(key))?;
        let mut new = std::collections::BTreeMap::new();
        for shard in shards {
            check_shard(key, &spec, shard)?;
            if !self.has_shard(key, shard.stripe())? {
                new.insert(shard.stripe(), shard);
            }
        }
        if new.is_empty() {
            if present == spec.stripes && !sealed {
                self.seal(key)?;
            }
            return Ok(PutOutcome::AlreadyStored);
        }
        let shape = spec.check()?;
        let data_path = self.data_path(key);
        let data = OpenOptions::new()
            .write(true)
            .open(&data_path)
            .map_err(io_err(&data_path))?;
        let ob_path = self.outboard_path(key);
        let outboard = OpenOptions::new()
            .write(true)
            .open(&ob_path)
            .map_err(io_err(&ob_path))?;
        for (&stripe, shard) in &new {
            data.write_all_at(shard.bytes(), stripe * spec.shard_size)
                .map_err(io_err(&data_path))?;
            let cvs: Vec<u8> = shard.groups().iter().flatten().copied().collect();
            let at = shape.outboard_offset(GROUP_LOG, stripe * spec.shard_size / GROUP_LEN)?;
            outboard.write_all_at(&cvs, at).map_err(io_err(&ob_path))?;
        }
        // One sync for the whole batch, then one synced record of it.
        data.sync_data().map_err(io_err(&data_path))?;
        outboard.sync_data().map_err(io_err(&ob_path))?;
        let present = present + new.len() as u64;
        {
            let mut usage = self.lock();
            let mut batch = WriteBatch::default();
            for &stripe in new.keys() {
                batch.put_cf(self.cf(CF_SHARDS), Self::shard_key(key, stripe), []);
            }
            let rec = SlotRecord::V1 {
                spec,
                present,
                sealed,
            };
            Self::put_record(&mut batch, self.cf(CF_SLOTS), key, &rec);
            self.db.write_opt(batch, &Self::synced()).map_err(db_err)?;
            usage.stored += spec.shard_size * new.len() as u64;
        }
        if present == spec.stripes {
            self.seal(key)?;
            Ok(PutOutcome::Completed)
        } else {
            Ok(PutOutcome::Stored)
        }
    }

    fn import_slot(&self, key: SlotKey, spec: SlotSpec, path: &Path) -> Result<(), StoreError> {
        // Hashed and checked before anything is locked or moved.
        let outboard = outboard_of_file(key, &spec, path)?;
        let slot_lock = self.slot_lock(key);
        let _slot = slot_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut usage = self.lock();
        if self.record(key)?.is_some() {
            return Err(StoreError::Conflict(key));
        }
        usage.check_room(key, spec.len())?;
        // Durable file first, then the record: a crash in between leaves files without a record,
        // which `recover` sweeps.
        File::open(path)
            .and_then(|f| f.sync_data())
            .map_err(io_err(path))?;
        let data_path = self.data_path(key);
        match fs::rename(path, &data_path) {
            Ok(()) => {}
            // Another file system: copy, then make the copy durable.
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
                fs::copy(path, &data_path)
                    .and_then(|_| File::open(&data_path)?.sync_data())
                    .map_err(io_err(&data_path))?;
                let _ = fs::remove_file(path);
            }
            Err(e) => return Err(io_err(&data_path)(e)),
        }
        let ob_path = self.outboard_path(key);
        let ob = File::create(&ob_path).map_err(io_err(&ob_path))?;
        ob.write_all_at(&outboard.to_bytes(), 0)
            .and_then(|()| ob.sync_data())
            .map_err(io_err(&ob_path))?;
        self.sync_dir()?;
        let mut batch = WriteBatch::default();
        for stripe in 0..spec.stripes {
            batch.put_cf(self.cf(CF_SHARDS), Self::shard_key(key, stripe), []);
        }
        let rec = SlotRecord::V1 {
            spec,
            present: spec.stripes,
            sealed: true,
        };
        Self::put_record(&mut batch, self.cf(CF_SLOTS), key, &rec);
        self.db.write_opt(batch, &Self::synced()).map_err(db_err)?;
        usage.reserved += spec.len();
        usage.stored += spec.len();
        Ok(())
    }

    fn info(&self, key: SlotKey) -> Result<Option<SlotInfo>, StoreError> {
        Ok(self
            .record(key)?
            .map(|(spec, present, _)| SlotInfo { spec, present }))
    }

    fn list(&self) -> Result<Vec<(SlotKey, SlotInfo)>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_SLOTS), IteratorMode::Start) {
            let (k, v) = item.map_err(db_err)?;
            let key = SlotKey::from_db_key(&k)
                .ok_or_else(|| StoreError::Corrupt(format!("slot key of {} bytes", k.len())))?;
            let SlotRecord::V1 { spec, present, .. } = postcard::from_bytes(&v)
                .map_err(|e| StoreError::Corrupt(format!("slot record {key}: {e}")))?;
            out.push((key, SlotInfo { spec, present }));
        }
        Ok(out)
    }

    fn read(&self, key: SlotKey, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let (spec, present, _) = self.record(key)?.ok_or(StoreError::UnknownSlot(key))?;
        let shards = check_range(key, &spec, offset, len)?;
        if present < spec.stripes {
            for stripe in shards {
                if !self.has_shard(key, stripe)? {
                    return Err(StoreError::NotStored {
                        key,
                        offset,
                        end: offset + len,
                    });
                }
            }
        }
        let path = self.data_path(key);
        let file = File::open(&path).map_err(io_err(&path))?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)
            .map_err(io_err(&path))?;
        Ok(buf)
    }

    fn node(&self, key: SlotKey, level: u32, index: u64) -> Result<Cv, StoreError> {
        let (spec, present, sealed) = self.record(key)?.ok_or(StoreError::UnknownSlot(key))?;
        if !sealed {
            return Err(StoreError::Incomplete {
                key,
                present,
                stripes: spec.stripes,
            });
        }
        let at = spec.check()?.outboard_offset(level, index)?;
        let path = self.outboard_path(key);
        let file = File::open(&path).map_err(io_err(&path))?;
        let mut cv = [0u8; 32];
        file.read_exact_at(&mut cv, at).map_err(io_err(&path))?;
        Ok(cv)
    }

    fn delete_slot(&self, key: SlotKey) -> Result<bool, StoreError> {
        let slot_lock = self.slot_lock(key);
        let _slot = slot_lock.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut usage = self.lock();
            let Some((spec, present, _)) = self.record(key)? else {
                return Ok(false);
            };
            let mut batch = WriteBatch::default();
            batch.delete_cf(self.cf(CF_SLOTS), key.to_db_key());
            batch.delete_range_cf(
                self.cf(CF_SHARDS),
                Self::shard_key(key, 0),
                Self::shard_key(key, u64::MAX),
            );
            batch.delete_cf(self.cf(CF_SHARDS), Self::shard_key(key, u64::MAX));
            self.db.write_opt(batch, &Self::synced()).map_err(db_err)?;
            usage.reserved -= spec.len();
            usage.stored -= present * spec.shard_size;
        }
        // The record is gone: a crash from here on leaves orphan files that the next open removes.
        // Still under the slot's lock, so a create of the same slot cannot lose its new files.
        for path in [self.data_path(key), self.outboard_path(key)] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
        }
        Ok(true)
    }

    fn usage(&self) -> Usage {
        *self.lock()
    }
}
