//! The shard server: inbound `/atlas/shard/1` streams. A `Put` is stored only for a slot the
//! ledger shows assigned to (or claimed by) this provider and still waiting for its bytes; a
//! `Get` is answered from the store with the sibling CVs that prove the shard.

use super::{deal_specs, Provider, ProviderError, Result};
use crate::ledger::LedgerError;
use crate::wire::shard;
use atlas_protocol::escrow::SlotStatus;
use atlas_protocol::tree::{Cv, VerifiedShard};
use atlas_protocol::wire::{ShardRequest, ShardResponse};
use atlas_protocol::DealId;
use atlas_storage::{PutOutcome, SlotKey, SlotSpec};
use futures::StreamExt as _;
use libp2p::PeerId;
use prometheus_client::metrics::gauge::Gauge;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a shard stream may wait for its next request, and for a `Put`'s body once its header
/// is in.
const REQUEST_IDLE: Duration = Duration::from_secs(60);
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// `Put` bodies being received at once: in all, and from any one peer. A body is allocated only
/// once it has room; over the peer's share the answer is [`ShardResponse::Busy`].
const MAX_PUT_BYTES: usize = 64 << 20;
const MAX_PUT_BYTES_PER_PEER: usize = 16 << 20;
/// How long a `Put` waits for room among all peers' bodies.
const PUT_ROOM_WAIT: Duration = Duration::from_secs(10);
/// How long the ledger's word that this provider may store a slot's shards is trusted before it
/// is asked again.
const ASSIGNMENT_TTL: Duration = Duration::from_secs(5);
/// Most slot assignments remembered at once (a stranger naming deals cannot grow the map).
const MAX_ASSIGNMENTS: usize = 4096;
/// Most shard streams served at once; further ones wait to be taken. One peer may have at most
/// [`MAX_STREAMS_PER_PEER`] of them; more are answered [`ShardResponse::Busy`] and closed.
const MAX_STREAMS: usize = 256;
const MAX_STREAMS_PER_PEER: usize = 64;

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

/// What each peer has in flight here: open streams and `Put` body bytes, with the bodies of all
/// peers bounded by one semaphore. Locked briefly, never across an await.
#[derive(Debug)]
struct InFlight {
    peers: Mutex<HashMap<PeerId, (usize, usize)>>,
    bytes: Arc<tokio::sync::Semaphore>,
    /// Streams counted open, and body bytes being received, all peers together.
    open: Gauge,
    body_bytes: Gauge,
}

impl InFlight {
    fn new(open: Gauge, body_bytes: Gauge) -> Arc<Self> {
        Arc::new(Self {
            peers: Mutex::new(HashMap::new()),
            bytes: Arc::new(tokio::sync::Semaphore::new(MAX_PUT_BYTES)),
            open,
            body_bytes,
        })
    }

    /// Counts one more stream of `peer`, or `None` when it has its share open.
    fn open(self: &Arc<Self>, peer: PeerId) -> Option<StreamSlot> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let entry = peers.entry(peer).or_default();
        if entry.0 >= MAX_STREAMS_PER_PEER {
            return None;
        }
        entry.0 += 1;
        self.open.inc();
        Some(StreamSlot {
            peer,
            in_flight: self.clone(),
        })
    }

    /// Room for a body of `len` bytes from `peer`, or `None` (answer Busy).
    async fn room(&self, peer: PeerId, len: u64) -> Option<BodyRoom<'_>> {
        let len = usize::try_from(len).ok()?;
        let permits = u32::try_from(len.max(1)).ok()?;
        {
            let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
            let entry = peers.entry(peer).or_default();
            if entry.1 + len > MAX_PUT_BYTES_PER_PEER {
                return None;
            }
            entry.1 += len;
        }
        // The peer's share stays counted for as long as the body is: only the one `BodyRoom`
        // made below gives it back (a second one built by struct update would have given it
        // back at once, and a peer could then take every body slot of the provider).
        match tokio::time::timeout(
            PUT_ROOM_WAIT,
            self.bytes.clone().acquire_many_owned(permits),
        )
        .await
        {
            Ok(Ok(permit)) => {
                self.body_bytes.inc_by(len as i64);
                Some(BodyRoom {
                    peer,
                    len,
                    in_flight: self,
                    _permit: permit,
                })
            }
            _ => {
                self.release(peer, 0, len);
                None
            }
        }
    }

    fn release(&self, peer: PeerId, streams: usize, bytes: usize) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = peers.get_mut(&peer) {
            self.open.dec_by(streams.min(entry.0) as i64);
            entry.0 -= streams.min(entry.0);
            entry.1 -= bytes.min(entry.1);
            if *entry == (0, 0) {
                peers.remove(&peer);
            }
        }
    }
}

/// One open stream of a peer, counted until dropped.
struct StreamSlot {
    peer: PeerId,
    in_flight: Arc<InFlight>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.in_flight.release(self.peer, 1, 0);
    }
}

/// Room for one body, counted until dropped.
struct BodyRoom<'a> {
    peer: PeerId,
    len: usize,
    in_flight: &'a InFlight,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for BodyRoom<'_> {
    fn drop(&mut self) {
        self.in_flight.body_bytes.dec_by(self.len as i64);
        self.in_flight.release(self.peer, 0, self.len);
    }
}

/// Serves inbound shard streams until `shutdown`; the handlers it started are aborted then.
pub(super) async fn run(
    provider: Arc<Provider>,
    mut incoming: libp2p_stream::IncomingStreams,
    shutdown: CancellationToken,
) {
    let assignments = Arc::new(Assignments::default());
    let in_flight = InFlight::new(
        provider.metrics.streams_open.clone(),
        provider.metrics.put_bytes.clone(),
    );
    // Handlers live in this set: dropping it at shutdown aborts them.
    let mut handlers = tokio::task::JoinSet::new();
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = handlers.join_next(), if !handlers.is_empty() => continue,
            next = incoming.next(), if handlers.len() < MAX_STREAMS => next,
        };
        let Some((peer, mut stream)) = next else {
            break;
        };
        let span = tracing::debug_span!("shard stream", %peer);
        let Some(slot) = in_flight.open(peer) else {
            provider.metrics.streams_refused.inc();
            handlers.spawn(tracing::Instrument::instrument(
                async move {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        shard::write_response(&mut stream, &ShardResponse::Busy),
                    )
                    .await;
                },
                span,
            ));
            continue;
        };
        let (provider, assignments, in_flight) =
            (provider.clone(), assignments.clone(), in_flight.clone());
        handlers.spawn(tracing::Instrument::instrument(
            async move {
                let _slot = slot;
                if let Err(error) =
                    handle_stream(&provider, &assignments, &in_flight, peer, stream).await
                {
                    tracing::debug!(error = %error, "shard stream ended");
                }
            },
            span,
        ));
    }
}

fn timed_out(what: &str, after: Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} not received within {after:?}"),
    )
}

async fn handle_stream(
    provider: &Provider,
    assignments: &Assignments,
    in_flight: &InFlight,
    peer: PeerId,
    mut stream: libp2p::Stream,
) -> Result<()> {
    loop {
        let request = tokio::time::timeout(REQUEST_IDLE, shard::read_request(&mut stream))
            .await
            .map_err(|_| timed_out("a request", REQUEST_IDLE))??;
        let Some(request) = request else { break };
        let response = match request {
            ShardRequest::Put {
                deal,
                slot,
                stripe,
                len,
                siblings,
            } => {
                // Whether this provider may store the slot is settled before a byte of the body
                // is read or allocated; a refusal closes the stream (its body is never read).
                let found = match assignment(provider, assignments, deal, slot).await {
                    Ok((key, spec)) => (deal, slot, key, spec),
                    Err(e) => {
                        provider.metrics.puts_refused.inc();
                        tracing::info!(%peer, deal = %deal.short(), slot, stripe, error = %e, "shard refused");
                        // Not knowing (the ledger is out of reach for now) is not a refusal:
                        // the uploader asks again later.
                        let answer = if matches!(
                            e,
                            ProviderError::Ledger(
                                LedgerError::Unreachable { .. } | LedgerError::Net(_)
                            )
                        ) {
                            ShardResponse::Busy
                        } else {
                            ShardResponse::Error(e.to_string())
                        };
                        shard::write_response(&mut stream, &answer).await?;
                        break;
                    }
                };
                let Some(_room) = in_flight.room(peer, len).await else {
                    provider.metrics.puts_refused.inc();
                    shard::write_response(&mut stream, &ShardResponse::Busy).await?;
                    break;
                };
                let body = tokio::time::timeout(BODY_TIMEOUT, shard::read_body(&mut stream, len))
                    .await
                    .map_err(|_| timed_out("a shard body", BODY_TIMEOUT))??;
                match put(provider, found, stripe, body, siblings).await {
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
    (deal, slot, key, spec): (DealId, u16, SlotKey, SlotSpec),
    stripe: u64,
    body: Vec<u8>,
    siblings: Vec<Cv>,
) -> Result<bool> {
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
