//! The scrubber: re-verifies every shard of every complete slot against its slot root, at a
//! bounded rate (a full pass per `scrub_pass`), and checks at once any slot the prover could not
//! read or whose files were wrong at start-up. A damaged slot is quarantined: its copy is
//! deleted and the slot handed back on the ledger (`ReleaseSlot`, one missed proof's slash), so
//! another provider repairs it within an epoch instead of after `max_misses` missed proofs.

use super::{Provider, Result};
use atlas_protocol::escrow::TxBody;
use atlas_protocol::tree::VerifiedShard;
use atlas_protocol::wire::DealQuery;
use atlas_storage::SlotKey;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The slowest a pass reads, whatever `scrub_pass` asks: small stores are checked quickly.
const MIN_RATE: u64 = 1 << 20;

/// Scrubs until `shutdown`. `suspects` are slots to check before anything else.
pub(super) async fn run(
    provider: Arc<Provider>,
    pass: Duration,
    mut suspects: mpsc::Receiver<SlotKey>,
    shutdown: CancellationToken,
) {
    match provider.store.misfiled().await {
        Ok(bad) => {
            for key in bad {
                quarantine(
                    &provider,
                    key,
                    "its files are missing or of the wrong length",
                )
                .await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot check the slot files"),
    }
    let mut scrubber = Scrubber {
        provider: &provider,
        pass,
    };
    loop {
        let started = Instant::now();
        if let Err(e) = scrubber.pass(&mut suspects, &shutdown).await {
            tracing::warn!(error = %e, "scrub pass failed");
        }
        // The next pass starts a pass-length after this one did; suspects are checked meanwhile.
        let next = tokio::time::sleep_until((started + pass).into());
        tokio::pin!(next);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut next => break,
                Some(key) = suspects.recv() => scrubber.check(key, u64::MAX, &shutdown).await,
            }
        }
    }
}

struct Scrubber<'a> {
    provider: &'a Provider,
    pass: Duration,
}

impl Scrubber<'_> {
    /// One pass over every complete slot, paced so it takes about `pass`.
    async fn pass(
        &mut self,
        suspects: &mut mpsc::Receiver<SlotKey>,
        shutdown: &CancellationToken,
    ) -> Result<()> {
        let slots = self.provider.store.list().await?;
        let total: u64 = slots.iter().map(|(_, i)| i.spec.len()).sum();
        let rate = (total / self.pass.as_secs().max(1)).max(MIN_RATE);
        for (key, info) in slots {
            while let Ok(suspect) = suspects.try_recv() {
                self.check(suspect, u64::MAX, shutdown).await;
            }
            if shutdown.is_cancelled() {
                break;
            }
            if info.complete() {
                self.check(key, rate, shutdown).await;
            }
        }
        Ok(())
    }

    /// Verifies every shard of `key`, reading at most `rate` bytes a second; quarantines it at
    /// the first shard that cannot be read or does not verify.
    async fn check(&mut self, key: SlotKey, rate: u64, shutdown: &CancellationToken) {
        let store = &self.provider.store;
        let Ok(Some(info)) = store.info(key).await else {
            return;
        };
        if !info.complete() {
            return;
        }
        let spec = info.spec;
        for stripe in 0..spec.stripes {
            let started = Instant::now();
            let damage = match store.shard(key, stripe).await {
                Ok((bytes, siblings)) => {
                    self.provider
                        .metrics
                        .scrubbed_bytes
                        .inc_by(bytes.len() as u64);
                    let verified = tokio::task::spawn_blocking(move || {
                        VerifiedShard::verify(&spec.root(), spec.stripes, stripe, bytes, &siblings)
                    })
                    .await;
                    match verified {
                        Ok(Ok(_)) => None,
                        Ok(Err(e)) => Some(format!("shard {stripe} does not verify: {e}")),
                        Err(_) => return,
                    }
                }
                Err(e) => Some(format!("shard {stripe} cannot be read: {e}")),
            };
            if let Some(why) = damage {
                quarantine(self.provider, key, &why).await;
                return;
            }
            if rate != u64::MAX {
                let budget = Duration::from_secs_f64(spec.shard_size as f64 / rate as f64);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(budget.saturating_sub(started.elapsed())) => {}
                }
            }
        }
    }
}

/// Hands back every slot of the ledger this copy serves, then deletes the copy.
async fn quarantine(provider: &Provider, key: SlotKey, why: &str) {
    provider.metrics.damaged_slots.inc();
    tracing::warn!(slot = %key, why, "slot damaged; handing it back for repair");
    let d = super::damage::Damage {
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_millis() as u64),
        object: key.object.to_string(),
        slot: key.slot,
        why: why.to_string(),
    };
    let dir = provider.store_dir().to_path_buf();
    match tokio::task::spawn_blocking(move || super::damage::record(&dir, &d)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot record the damaged slot"),
        Err(e) => tracing::warn!(error = %e, "cannot record the damaged slot"),
    }
    let me = provider.key.public();
    let deals = match provider.ledger.deals(DealQuery::HeldBy(me)).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(slot = %key, error = %e, "cannot list the deals to release the slot from");
            return;
        }
    };
    for (id, d) in deals.iter().filter(|(_, d)| !d.ended) {
        if d.terms.object != key.object {
            continue;
        }
        let Some(s) = d.slots.get(key.slot as usize) else {
            continue;
        };
        if s.holder == Some(me) {
            let body = TxBody::ReleaseSlot {
                deal: *id,
                slot: key.slot,
            };
            if let Err(e) = provider.submitter.enqueue(body).await {
                tracing::warn!(deal = %id.short(), slot = key.slot, error = %e, "releasing the slot failed");
            }
        }
    }
    if let Err(e) = provider.store.delete(vec![key]).await {
        tracing::warn!(slot = %key, error = %e, "cannot delete the damaged slot");
    }
}
