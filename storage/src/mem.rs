//! The in-memory slot store: the same contract as the RocksDB store, for tests and ephemeral nodes.

use crate::slot_store::{
    check_range, check_shard, PutOutcome, SlotInfo, SlotKey, SlotSpec, SlotStore, StoreError, Usage,
};
use atlas_protocol::tree::{Cv, Outboard, VerifiedShard, GROUP_LEN};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

#[derive(Debug)]
struct MemSlot {
    spec: SlotSpec,
    data: Vec<u8>,
    present: BTreeSet<u64>,
    groups: Vec<Cv>,
    outboard: Option<Outboard>,
}

#[derive(Debug, Default)]
struct Inner {
    slots: BTreeMap<SlotKey, MemSlot>,
    usage: Usage,
}

/// Slots held in memory. One lock guards everything; each operation holds it briefly and never
/// across anything that waits.
#[derive(Debug)]
pub struct MemSlotStore {
    inner: Mutex<Inner>,
}

impl MemSlotStore {
    pub fn new(capacity: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                slots: BTreeMap::new(),
                usage: Usage {
                    capacity,
                    ..Usage::default()
                },
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way later calls
        // could not cope with, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SlotStore for MemSlotStore {
    fn create_slot(&self, key: SlotKey, spec: SlotSpec) -> Result<(), StoreError> {
        spec.check()?;
        let mut inner = self.lock();
        if let Some(existing) = inner.slots.get(&key) {
            return if existing.spec == spec {
                Ok(())
            } else {
                Err(StoreError::Conflict(key))
            };
        }
        let usage = inner.usage;
        usage.check_room(key, spec.len())?;
        inner.usage.reserved += spec.len();
        inner.slots.insert(
            key,
            MemSlot {
                spec,
                data: vec![0; spec.len() as usize],
                present: BTreeSet::new(),
                groups: vec![[0; 32]; (spec.len() / GROUP_LEN) as usize],
                outboard: None,
            },
        );
        Ok(())
    }

    fn put_shard(&self, key: SlotKey, shard: &VerifiedShard) -> Result<PutOutcome, StoreError> {
        let mut inner = self.lock();
        let slot = inner
            .slots
            .get_mut(&key)
            .ok_or(StoreError::UnknownSlot(key))?;
        check_shard(key, &slot.spec, shard)?;
        if slot.present.contains(&shard.stripe()) {
            return Ok(PutOutcome::AlreadyStored);
        }
        let c = slot.spec.shard_size;
        let start = (shard.stripe() * c) as usize;
        slot.data[start..start + c as usize].copy_from_slice(shard.bytes());
        let g0 = (shard.stripe() * c / GROUP_LEN) as usize;
        slot.groups[g0..g0 + shard.groups().len()].copy_from_slice(shard.groups());
        slot.present.insert(shard.stripe());
        let complete = slot.present.len() as u64 == slot.spec.stripes;
        if complete {
            let shape = slot.spec.check()?;
            slot.outboard = Some(Outboard::from_groups(shape, slot.groups.clone())?);
        }
        inner.usage.stored += c;
        Ok(if complete {
            PutOutcome::Completed
        } else {
            PutOutcome::Stored
        })
    }

    fn info(&self, key: SlotKey) -> Result<Option<SlotInfo>, StoreError> {
        Ok(self.lock().slots.get(&key).map(|s| SlotInfo {
            spec: s.spec,
            present: s.present.len() as u64,
        }))
    }

    fn list(&self) -> Result<Vec<(SlotKey, SlotInfo)>, StoreError> {
        Ok(self
            .lock()
            .slots
            .iter()
            .map(|(k, s)| {
                (
                    *k,
                    SlotInfo {
                        spec: s.spec,
                        present: s.present.len() as u64,
                    },
                )
            })
            .collect())
    }

    fn read(&self, key: SlotKey, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let inner = self.lock();
        let slot = inner.slots.get(&key).ok_or(StoreError::UnknownSlot(key))?;
        let shards = check_range(key, &slot.spec, offset, len)?;
        if shards.clone().any(|s| !slot.present.contains(&s)) {
            return Err(StoreError::NotStored {
                key,
                offset,
                end: offset + len,
            });
        }
        Ok(slot.data[offset as usize..(offset + len) as usize].to_vec())
    }

    fn node(&self, key: SlotKey, level: u32, index: u64) -> Result<Cv, StoreError> {
        let inner = self.lock();
        let slot = inner.slots.get(&key).ok_or(StoreError::UnknownSlot(key))?;
        let outboard = slot.outboard.as_ref().ok_or(StoreError::Incomplete {
            key,
            present: slot.present.len() as u64,
            stripes: slot.spec.stripes,
        })?;
        Ok(outboard.node(level, index)?)
    }

    fn delete_slot(&self, key: SlotKey) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some(slot) = inner.slots.remove(&key) else {
            return Ok(false);
        };
        inner.usage.reserved -= slot.spec.len();
        inner.usage.stored -= slot.present.len() as u64 * slot.spec.shard_size;
        Ok(true)
    }

    fn usage(&self) -> Usage {
        self.lock().usage
    }
}
