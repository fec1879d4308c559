//! The prover: each epoch, proves every slot it holds against the epoch's beacon, and accepts
//! complete slots whose acceptance did not land. It owns the record of proofs sent and not yet
//! on the chain, and resends one the ledger may have lost.

use super::submitter::SubmitError;
use super::{deal_specs, Provider, Result};
use crate::ledger::LedgerError;
use atlas_protocol::challenge::Challenge;
use atlas_protocol::escrow::{SlotStatus, TxBody};
use atlas_protocol::tree::TreeShape;
use atlas_protocol::wire::{ChainStatus, DealQuery};
use atlas_protocol::DealId;
use atlas_storage::SlotKey;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Blocks after which a proof accepted for a block but still not recorded is sent again (the
/// ledger may have restarted and lost it).
const RESEND_AFTER_BLOCKS: u64 = 3;

/// A proof accepted for the next block: the chain height when sent and the nonce it used.
type SentProof = (u64, u64);

/// The prover's own state.
#[derive(Debug, Default)]
pub struct Prover {
    /// Proofs accepted for the next block but maybe not in one yet: (deal, slot, epoch).
    submitted: HashMap<(DealId, u16, u64), SentProof>,
}

impl Prover {
    /// Proves every slot due in the ledger's current epoch, and accepts complete slots whose
    /// acceptance did not land. Returns how many proofs were accepted.
    pub async fn round(&mut self, provider: &Provider, status: &ChainStatus) -> Result<usize> {
        let me = provider.key.public();
        let deals = provider.ledger.deals(DealQuery::HeldBy(me)).await?;
        // A proof the ledger accepted but has not recorded is sent again once the ledger no
        // longer counts its nonce (it restarted and lost its queue), or after a few blocks
        // whatever the reason. Only the ledger's record of the proof ends the retries.
        let next_nonce = provider.ledger.account(&me).await?.nonce;
        self.submitted.retain(|(_, _, e), _| *e >= status.epoch);
        let in_flight: HashSet<(DealId, u16, u64)> = self
            .submitted
            .iter()
            .filter(|(_, (at, nonce))| {
                *nonce < next_nonce && status.height < *at + RESEND_AFTER_BLOCKS
            })
            .map(|(k, _)| *k)
            .collect();
        // Proofs the ledger has recorded need no more watching.
        for (id, deal) in &deals {
            for (j, slot) in deal.slots.iter().enumerate() {
                if let Some(e) = slot.proven {
                    self.submitted.remove(&(*id, j as u16, e));
                }
            }
        }
        let mut pending = Vec::new();
        let mut due = Vec::new();
        for (id, deal) in &deals {
            let (object, specs) = deal_specs(deal)?;
            for (j, slot) in deal.slots.iter().enumerate() {
                if slot.holder != Some(me) {
                    continue;
                }
                let key = SlotKey::new(object, j as u16);
                match slot.status {
                    SlotStatus::Pending { .. } => pending.push((*id, j as u16, key)),
                    SlotStatus::Active { .. }
                        if status.epoch >= slot.prove_from
                            && slot.proven != Some(status.epoch)
                            && !in_flight.contains(&(*id, j as u16, status.epoch)) =>
                    {
                        let shape = TreeShape::new(specs[j].len())?;
                        let ch = Challenge::derive(
                            &status.beacon,
                            id,
                            j as u16,
                            status.epoch,
                            shape.chunks(),
                            status.params.samples,
                        );
                        due.push(((*id, j as u16, key), key, ch));
                    }
                    _ => {}
                }
            }
        }
        // Complete slots whose accept did not land are accepted again.
        let complete = provider
            .store
            .complete(pending.iter().map(|(_, _, k)| *k).collect())
            .await?;
        for ((deal, slot, _), whole) in pending.into_iter().zip(complete) {
            if whole {
                let _ = provider
                    .submitter
                    .enqueue(TxBody::AcceptSlot { deal, slot })
                    .await;
            }
        }
        if due.is_empty() {
            return Ok(0);
        }
        let epoch = status.epoch;
        let proofs = provider.store.prove(due).await?;
        // Every proof goes to the submitter at once; it signs them with consecutive nonces,
        // one round trip each, never waiting for a block.
        let sends = proofs.into_iter().map(|((deal, slot, key), proof)| async move {
            let proof = match proof {
                Ok(p) => p,
                Err(e) => {
                    provider.metrics.count_proof("unavailable");
                    tracing::warn!(deal = %deal.short(), slot, error = %e, "cannot prove slot");
                    // The scrubber checks the slot now; if its copy is damaged it is handed
                    // back for repair instead of missing proof after proof.
                    let _ = provider.suspects.try_send(key);
                    return None;
                }
            };
            let body = TxBody::SubmitProof {
                deal,
                slot,
                epoch,
                proof,
            };
            match provider.submitter.enqueue(body).await {
                Ok(nonce) => {
                    provider.metrics.count_proof("accepted");
                    Some(Ok(((deal, slot, epoch), nonce)))
                }
                // The ledger refused it: sending it again would not help.
                Err(e @ SubmitError::Ledger(LedgerError::Refused { .. })) => {
                    provider.metrics.count_proof("rejected");
                    tracing::warn!(deal = %deal.short(), slot, epoch, error = %e, "proof refused");
                    None
                }
                // Lost on the way (the ledger restarted, say): the round is not done.
                Err(e) => Some(Err(e)),
            }
        });
        let mut sent = Vec::new();
        let mut lost = None;
        for outcome in futures::future::join_all(sends).await.into_iter().flatten() {
            match outcome {
                Ok(s) => sent.push(s),
                Err(e) => lost = Some(e),
            }
        }
        for (key, nonce) in &sent {
            self.submitted.insert(*key, (status.height, *nonce));
        }
        // Proofs that never reached the ledger are sent again by the next round (the ones
        // accepted are remembered above and not sent twice).
        if let Some(e) = lost {
            return Err(e.into());
        }
        if let Ok(a) = provider.ledger.account(&me).await {
            provider
                .metrics
                .balance
                .set(a.balance.min(i64::MAX as u128) as i64);
        }
        Ok(sent.len())
    }

    /// Whether a proof sent for this epoch may need sending again: the ledger no longer counts
    /// its nonce (it restarted and lost its queue), or it is still unrecorded a few blocks on.
    async fn resend_due(&self, provider: &Provider, status: &ChainStatus) -> Result<bool> {
        let mine: Vec<SentProof> = self
            .submitted
            .iter()
            .filter(|((_, _, e), _)| *e == status.epoch)
            .map(|(_, v)| *v)
            .collect();
        if mine.is_empty() {
            return Ok(false);
        }
        if mine
            .iter()
            .any(|(at, _)| status.height >= at + RESEND_AFTER_BLOCKS)
        {
            return Ok(true);
        }
        let next_nonce = provider.ledger.account(&provider.key.public()).await?.nonce;
        Ok(mine.iter().any(|(_, nonce)| *nonce >= next_nonce))
    }
}

/// Proves what is due, checking the chain's head every `poll`, until `shutdown`. The deals it
/// holds are read once an epoch (when its proofs fall due; a slot accepted during an epoch is
/// first due in the next), and again within the epoch only when a proof it sent may need
/// resending or an accept failed; otherwise the ledger is asked for its status alone, so what a
/// provider costs the ledger between epochs does not grow with what it holds.
pub(super) async fn run(
    provider: Arc<Provider>,
    poll: Duration,
    mut recheck: mpsc::Receiver<()>,
    shutdown: CancellationToken,
) {
    let mut prover = Prover::default();
    let mut ticker = super::Ticker::new(&*provider.ledger, poll, shutdown);
    let (mut proved_in, mut checked_at) = (None, None);
    while let Some(status) = ticker.next().await {
        let asked_again = recheck.try_recv().is_ok();
        if checked_at == Some(status.height) && !asked_again {
            continue;
        }
        let due = proved_in != Some(status.epoch)
            || asked_again
            || match prover.resend_due(&provider, &status).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::debug!(error = %e, "ledger unreachable");
                    continue;
                }
            };
        if !due {
            checked_at = Some(status.height);
            continue;
        }
        match prover.round(&provider, &status).await {
            Ok(n) => {
                (proved_in, checked_at) = (Some(status.epoch), Some(status.height));
                if n > 0 {
                    tracing::info!(proofs = n, "proved");
                }
            }
            Err(e) => tracing::warn!(error = %e, "proving failed"),
        }
    }
}
