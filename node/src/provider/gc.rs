//! Garbage collection: a stored slot that no live deal assigns to this provider for
//! `gc_grace_epochs` epochs in a row (ended, cancelled, freed, exited or never assigned) is
//! deleted.

use super::{deal_specs, Provider, Result};
use atlas_protocol::escrow::SlotStatus;
use atlas_protocol::wire::{ChainStatus, DealQuery};
use atlas_storage::SlotKey;
use std::collections::{HashMap, HashSet};

/// The collector's own state: stored slots no live deal assigns here, with the epoch each was
/// first seen so.
#[derive(Debug)]
pub struct Collector {
    orphans: HashMap<SlotKey, u64>,
    grace_epochs: u64,
}

impl Collector {
    pub fn new(grace_epochs: u64) -> Self {
        Self {
            orphans: HashMap::new(),
            grace_epochs,
        }
    }

    /// Deletes what is due; returns how many slots it deleted.
    pub async fn round(&mut self, provider: &Provider, status: &ChainStatus) -> Result<usize> {
        let me = provider.key.public();
        let deals = provider.ledger.deals(DealQuery::HeldBy(me)).await?;
        let mut wanted = HashSet::new();
        for (_, d) in deals.iter().filter(|(_, d)| !d.ended) {
            let (object, _) = deal_specs(d)?;
            for (j, s) in d.slots.iter().enumerate() {
                if s.holder == Some(me)
                    && matches!(
                        s.status,
                        SlotStatus::Pending { .. } | SlotStatus::Active { .. }
                    )
                {
                    wanted.insert(SlotKey::new(object, j as u16));
                }
            }
        }
        let stored: HashSet<SlotKey> = provider
            .store
            .list()
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        self.orphans
            .retain(|k, _| stored.contains(k) && !wanted.contains(k));
        for k in stored.iter().filter(|k| !wanted.contains(k)) {
            self.orphans.entry(*k).or_insert(status.epoch);
        }
        let due: Vec<SlotKey> = self
            .orphans
            .iter()
            .filter(|(_, since)| status.epoch >= **since + self.grace_epochs)
            .map(|(k, _)| *k)
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let deleted = provider.store.delete(due).await?;
        for key in &deleted {
            self.orphans.remove(key);
            tracing::info!(slot = %key, "deleted a slot no live deal assigns here");
        }
        provider.metrics.gc_deleted.inc_by(deleted.len() as u64);
        Ok(deleted.len())
    }
}
