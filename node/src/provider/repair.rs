//! The repairer: at each new block, claims freed slots this provider can hold and rebuilds them
//! from the other holders; at each new epoch, collects garbage ([`super::gc`]).

use super::gc::Collector;
use super::{deal_specs, Provider, ProviderError, Result};
use crate::client::dial::open_shard_stream;
use crate::client::holders::{holders_among, live_deals_of};
use crate::client::lanes::NetShardSource;
use crate::client::manifest_of;
use atlas_protocol::escrow::{Deal, Provider as Registered, SlotStatus, TxBody};
use atlas_protocol::tree::{group_cvs, Outboard, TreeShape};
use atlas_protocol::wire::DealQuery;
use atlas_protocol::DealId;
use atlas_storage::SlotKey;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a candidate holder may take to answer before a repairer counts it as down.
const HOLDER_PROBE: Duration = Duration::from_secs(5);

/// A rebuild is written to `repair-DEAL-SLOT.tmp` in the store's folder, then imported.
const SCRATCH_PREFIX: &str = "repair-";
const SCRATCH_SUFFIX: &str = ".tmp";

/// Removes rebuilds a killed process left half-written in `dir`; an unfinished claim is rebuilt
/// from the start. Returns how many it removed.
pub(super) fn remove_scratch(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(SCRATCH_PREFIX)
            && name.ends_with(SCRATCH_SUFFIX)
            && std::fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// Claims freed slots it can hold and rebuilds them from the other holders. Returns how many
/// slots it repaired.
pub async fn round(provider: &Provider) -> Result<usize> {
    let me = provider.key.public();
    match provider.ledger.provider(&me).await? {
        Some(p) if p.exiting_since.is_none() => {}
        _ => return Ok(0), // not registered, or leaving: takes nothing new
    }
    let mut repaired = resume_claims(provider).await?;
    let deals = provider.ledger.deals(DealQuery::Repairable).await?;
    for (id, deal) in deals {
        let (object, specs) = deal_specs(&deal)?;
        // A freed slot, not one this provider failed (the ledger refuses that claim).
        let Some(slot) = deal
            .slots
            .iter()
            .position(|s| s.status == SlotStatus::Freed && s.failed_by != Some(me))
        else {
            continue;
        };
        // Room by the capacity offered, and on the disk itself: the rebuild is written there.
        let len = specs[slot].len();
        if provider.store.usage().await?.free() < len || provider.store.disk_room().await? < len {
            continue;
        }
        // One slot of an object per provider across all its live deals (the ledger refuses
        // the claim otherwise).
        let live = live_deals_of(&*provider.ledger, &object).await?;
        if live
            .iter()
            .any(|(_, d)| d.slots.iter().any(|s| s.holder == Some(me)))
        {
            continue;
        }
        // Claiming locks collateral that a claim never delivered forfeits: claim only when
        // enough holders (of any live deal of the object) answer to rebuild from.
        let k = manifest_of(&deal)?.layout().data_shards();
        // One look-up of the holders serves the probe and the rebuild.
        let mut holders = holders_among(&*provider.ledger, &live).await?;
        if let Some(own) = holders.get_mut(slot) {
            *own = None;
        }
        let answering = answering(provider, &holders).await;
        if answering < k {
            tracing::info!(deal = %id.short(), slot, answering, needed = k, "not claiming: too few holders answer to rebuild from");
            continue;
        }
        // Accepted means applied against the next block's state: the claim has won.
        let claim = TxBody::ClaimSlot {
            deal: id,
            slot: slot as u16,
        };
        if let Err(e) = provider.submitter.enqueue(claim).await {
            // Another provider claimed it first, most likely.
            tracing::debug!(deal = %id.short(), slot, error = %e, "claim refused");
            continue;
        }
        tracing::info!(deal = %id.short(), slot, "claimed a freed slot; rebuilding it");
        if finish(provider, id, &deal, slot, holders).await? {
            repaired += 1;
        }
    }
    Ok(repaired)
}

/// Rebuilds the slot and accepts it; false if the rebuild failed (the claim stays this
/// provider's, and the next round tries again while its deadline lasts).
async fn finish(
    provider: &Provider,
    id: DealId,
    deal: &Deal,
    slot: usize,
    holders: Vec<Option<Registered>>,
) -> Result<bool> {
    provider.metrics.repairs_running.inc();
    let rebuilt = rebuild(provider, id, deal, slot, holders).await;
    provider.metrics.repairs_running.dec();
    match rebuilt {
        Ok(()) => {
            provider
                .submitter
                .enqueue(TxBody::AcceptSlot {
                    deal: id,
                    slot: slot as u16,
                })
                .await?;
            provider.metrics.repaired_slots.inc();
            tracing::info!(deal = %id.short(), slot, "repaired slot accepted");
            Ok(true)
        }
        Err(e) => {
            tracing::warn!(deal = %id.short(), slot, error = %e, "repair failed");
            Ok(false)
        }
    }
}

/// Claims this provider won and has not finished (it was killed mid-rebuild, say, or a rebuild
/// failed) are rebuilt again while their deadline lasts: a claim never delivered forfeits
/// collateral. A slot already whole in the store is left to the prover, which accepts it.
async fn resume_claims(provider: &Provider) -> Result<usize> {
    let me = provider.key.public();
    let mut claims = Vec::new();
    for (id, deal) in provider.ledger.deals(DealQuery::HeldBy(me)).await? {
        for (j, s) in deal.slots.iter().enumerate() {
            if s.holder == Some(me) && matches!(s.status, SlotStatus::Pending { claimed: true, .. })
            {
                let (object, _) = deal_specs(&deal)?;
                claims.push((id, deal.clone(), j, SlotKey::new(object, j as u16)));
            }
        }
    }
    if claims.is_empty() {
        return Ok(0);
    }
    let whole = provider
        .store
        .complete(claims.iter().map(|c| c.3).collect())
        .await?;
    let mut repaired = 0;
    for ((id, deal, slot, key), whole) in claims.into_iter().zip(whole) {
        if whole {
            continue;
        }
        let live = live_deals_of(&*provider.ledger, &key.object).await?;
        let mut holders = holders_among(&*provider.ledger, &live).await?;
        if let Some(own) = holders.get_mut(slot) {
            *own = None;
        }
        tracing::info!(deal = %id.short(), slot, "resuming an unfinished repair");
        if finish(provider, id, &deal, slot, holders).await? {
            repaired += 1;
        }
    }
    Ok(repaired)
}

/// Rebuilds slot `slot` of `deal` from any k shards per stripe of the other holders into a
/// scratch file, checks it against the slot root, and has the store take it in.
async fn rebuild(
    provider: &Provider,
    deal_id: DealId,
    deal: &Deal,
    slot: usize,
    holders: Vec<Option<Registered>>,
) -> Result<()> {
    let manifest = manifest_of(deal)?;
    let (object, specs) = deal_specs(deal)?;
    let spec = specs[slot];
    let key = SlotKey::new(object, slot as u16);
    // A stale local copy (say, one this provider lost or damaged) must not be mistaken for the
    // rebuilt slot. No live deal counts on it: the ledger accepted this claim only because this
    // provider holds no slot of the object in any live deal.
    provider.store.delete(vec![key]).await?;
    let mut source = NetShardSource::new(
        tokio::runtime::Handle::current(),
        provider.net.clone(),
        manifest.clone(),
        holders,
    )?;
    let scratch = provider.store_dir().join(format!(
        "{SCRATCH_PREFIX}{}-{slot}{SCRATCH_SUFFIX}",
        deal_id.short()
    ));
    let path = scratch.clone();
    let started = std::time::Instant::now();
    let written = tokio::task::spawn_blocking(move || -> Result<()> {
        use std::os::unix::fs::FileExt;
        let layout = manifest.layout();
        let c = layout.shard_size();
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let mut groups = Vec::new();
        atlas_protocol::erasure::rebuild_slot(&layout, &mut source, slot, &mut |stripe, shard| {
            group_cvs(stripe * c, shard, &mut groups);
            file.write_all_at(shard, stripe * c)
        })
        .map_err(crate::client::ClientError::from)?;
        let outboard = Outboard::from_groups(TreeShape::new(spec.len())?, groups)?;
        if outboard.root() != spec.root() {
            return Err(ProviderError::Inconsistent);
        }
        Ok(())
    })
    .await?;
    let rebuilt = started.elapsed();
    // The store syncs the file, hashes it against the slot root once more and moves it in.
    let stored = match written {
        Ok(()) => provider
            .store
            .import(key, spec, scratch.clone())
            .await
            .map_err(ProviderError::from),
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&scratch).await;
    stored?;
    tracing::info!(
        slot,
        bytes = spec.len(),
        rebuild_ms = rebuilt.as_millis() as u64,
        store_ms = (started.elapsed() - rebuilt).as_millis() as u64,
        "slot rebuilt and stored"
    );
    Ok(())
}

/// How many of `holders` open a shard stream within `HOLDER_PROBE`.
async fn answering(provider: &Provider, holders: &[Option<Registered>]) -> usize {
    let probes = holders.iter().flatten().map(|p| async move {
        matches!(
            tokio::time::timeout(HOLDER_PROBE, open_shard_stream(&provider.net, p)).await,
            Ok(Ok(_))
        )
    });
    futures::future::join_all(probes)
        .await
        .into_iter()
        .filter(|up| *up)
        .count()
}

/// Looks for freed slots to repair at each new block and collects garbage at each new epoch,
/// checking the chain's head every `poll`, until `shutdown`. Between blocks the ledger is asked
/// for its status alone.
pub(super) async fn run(
    provider: Arc<Provider>,
    poll: Duration,
    gc_grace_epochs: u64,
    shutdown: CancellationToken,
) {
    let mut collector = Collector::new(gc_grace_epochs);
    let mut ticker = super::Ticker::new(&*provider.ledger, poll, shutdown);
    let (mut repaired_at, mut collected_in) = (None, None);
    while let Some(status) = ticker.next().await {
        if repaired_at != Some(status.height) {
            match round(&provider).await {
                Ok(_) => repaired_at = Some(status.height),
                Err(e) => tracing::warn!(error = %e, "repair round failed"),
            }
        }
        if collected_in != Some(status.epoch) {
            if let Err(e) = super::advertise(&provider).await {
                tracing::warn!(error = %e, "cannot update the capacity offered");
            }
            match collector.round(&provider, &status).await {
                Ok(_) => collected_in = Some(status.epoch),
                Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
            }
        }
    }
}
