//! The shard server: inbound `/atlas/shard/1` streams. A `Put` is stored only for a slot the
//! ledger shows assigned to (or claimed by) this provider and still waiting for its bytes; a
//! `Get` is answered from the store with the sibling CVs that prove the shard.

use super::{deal_specs, Provider, ProviderError, Result};
use crate::wire::shard;
use atlas_protocol::escrow::SlotStatus;
use atlas_protocol::tree::{Cv, VerifiedShard};
use atlas_protocol::wire::{ShardRequest, ShardResponse};
use atlas_protocol::DealId;
use atlas_storage::{PutOutcome, SlotKey, SlotSpec};
use futures::StreamExt as _;
use libp2p::PeerId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a shard stream may stay silent mid-conversation.
const STREAM_IDLE: Duration = Duration::from_secs(60);
/// How long the ledger's word that this provider may store a slot's shards is trusted before it
/// is asked again.
const ASSIGNMENT_TTL: Duration = Duration::from_secs(5);
/// Most slot assignments remembered at once (a stranger naming deals cannot grow the map).
const MAX_ASSIGNMENTS: usize = 4096;
/// Most shard streams served at once; further ones wait to be taken.
const MAX_STREAMS: usize = 256;

/// Slots the ledger lately showed assigned here and waiting for bytes: the slot's key and spec,
/// and when the ledger said so. Owned by the server; locked briefly, never across an await.
#[derive(Debug, Default)]
struct Assignments(Mutex<HashMap<(DealId, u16), Assignment>>);

/// A slot's key and spec, and when the ledger showed it assigned here.
type Assignment = (SlotKey, SlotSpec, Instant);

impl Assignments {
    fn get(&self, deal: DealId, slot: u16) -> Option<(SlotKey, SlotSpec)> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&(deal, slot))
            .filter(|(_, _, at)| at.elapsed() < ASSIGNMENT_TTL)
            .map(|(k, s, _)| (*k, *s))
    }

    fn insert(&self, deal: DealId, slot: u16, found: (SlotKey, SlotSpec)) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ASSIGNMENTS {
            map.retain(|_, (_, _, at)| at.elapsed() < ASSIGNMENT_TTL);
        }
        if map.len() < MAX_ASSIGNMENTS {
            map.insert((deal, slot), (found.0, found.1, Instant::now()));
        }
    }
}

/// Serves inbound shard streams until `shutdown`; the handlers it started are aborted then.
pub(super) async fn run(
    provider: Arc<Provider>,
    mut incoming: libp2p_stream::IncomingStreams,
    shutdown: CancellationToken,
) {
    let assignments = Arc::new(Assignments::default());
    // Handlers live in this set: dropping it at shutdown aborts them.
    let mut handlers = tokio::task::JoinSet::new();
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = handlers.join_next(), if !handlers.is_empty() => continue,
            next = incoming.next(), if handlers.len() < MAX_STREAMS => next,
        };
        let Some((peer, stream)) = next else { break };
        let (provider, assignments) = (provider.clone(), assignments.clone());
        let span = tracing::debug_span!("shard stream", %peer);
        handlers.spawn(tracing::Instrument::instrument(
            async move {
                if let Err(error) = handle_stream(&provider, &assignments, peer, stream).await {
                    tracing::debug!(error = %error, "shard stream ended");
                }
            },
            span,
        ));
    }
}

async fn handle_stream(
    provider: &Provider,
    assignments: &Assignments,
    peer: PeerId,
    mut stream: libp2p::Stream,
) -> Result<()> {
    while let Some(request) = shard::read_request(&mut stream).await? {
        let response = match request {
            ShardRequest::Put {
                deal,
                slot,
                stripe,
                len,
                siblings,
            } => {
                let body = tokio::time::timeout(STREAM_IDLE, shard::read_body(&mut stream, len))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("shard body not received within {STREAM_IDLE:?}"),
                        )
                    })??;
                match put(provider, assignments, deal, slot, stripe, body, siblings).await {
                    Ok(complete) => ShardResponse::Stored { complete },
                    Err(e) => {
                        tracing::info!(%peer, deal = %deal.short(), slot, stripe, error = %e, "shard refused");
                        ShardResponse::Error(e.to_string())
                    }
                }
            }
            ShardRequest::Get {
                object,
                slot,
                stripe,
            } => match provider
                .store
                .shard(SlotKey::new(object, slot), stripe)
                .await
            {
                Ok((bytes, siblings)) => {
                    shard::write_response(
                        &mut stream,
                        &ShardResponse::Shard {
                            len: bytes.len() as u64,
                            siblings,
                        },
                    )
                    .await?;
                    futures::AsyncWriteExt::write_all(&mut stream, &bytes).await?;
                    provider.metrics.bytes_served.inc_by(bytes.len() as u64);
                    continue;
                }
                Err(e) => ShardResponse::Error(e.to_string()),
            },
        };
        shard::write_response(&mut stream, &response).await?;
    }
    Ok(())
}

/// The slot a `Put` may write: only one the ledger shows assigned to (or claimed by) this
/// provider and still waiting for its bytes, in a live deal. Anything else is refused before a
/// byte is stored, so nobody can make this provider hold (or reserve room for) bytes nobody pays
/// it for.
async fn assignment(
    provider: &Provider,
    assignments: &Assignments,
    deal: DealId,
    slot: u16,
) -> Result<(SlotKey, SlotSpec)> {
    if let Some(found) = assignments.get(deal, slot) {
        return Ok(found);
    }
    let refused = || ProviderError::NotAssigned {
        deal: deal.short(),
        slot,
    };
    let d = provider.ledger.find(deal).await?.ok_or_else(refused)?;
    let s = d.slots.get(slot as usize).ok_or_else(refused)?;
    if d.ended
        || s.holder != Some(provider.key.public())
        || !matches!(s.status, SlotStatus::Pending { .. })
    {
        return Err(refused());
    }
    let (object, specs) = deal_specs(&d)?;
    let found = (SlotKey::new(object, slot), specs[slot as usize]);
    assignments.insert(deal, slot, found);
    Ok(found)
}

/// Verifies and stores one shard; accepts the slot on the ledger once it is whole.
async fn put(
    provider: &Provider,
    assignments: &Assignments,
    deal: DealId,
    slot: u16,
    stripe: u64,
    body: Vec<u8>,
    siblings: Vec<Cv>,
) -> Result<bool> {
    let (key, spec) = match assignment(provider, assignments, deal, slot).await {
        Ok(found) => found,
        Err(e) => {
            provider.metrics.puts_refused.inc();
            return Err(e);
        }
    };
    // Hashing is CPU work: off the async threads, and outside the store thread.
    let shard = tokio::task::spawn_blocking(move || {
        VerifiedShard::verify(&spec.root(), spec.stripes, stripe, body, &siblings)
    })
    .await?
    .map_err(ProviderError::BadShard)?;
    let outcome = provider.store.put(key, spec, shard).await?;
    provider.metrics.shards_received.inc();
    let complete = outcome == PutOutcome::Completed;
    if complete {
        // Awaited here (one round trip, queued rather than waited into a block), so the
        // uploader's last acknowledgement means the accept is on its way.
        provider.accept(deal, slot).await;
    }
    Ok(complete)
}
