//! The storage provider (`atlas provider run`): registers on the ledger, receives and verifies
//! shards, accepts complete slots, proves every slot it holds each epoch, and serves verified reads.
//!
//! Tasks: the network loop (owned by `net`), one task per inbound shard stream, and the proving loop.
//! Slot bytes go through the RocksDB slot store on blocking threads, never on the swarm task. All
//! transactions go through one lock so their nonces are issued in order.

use crate::client::LedgerClient;
use crate::net::{self, NetConfig, NetHandle};
use crate::shard;
use anyhow::{anyhow, bail, Context as _, Result};
use atlas_protocol::challenge::Challenge;
use atlas_protocol::escrow::{Deal, SlotStatus, Tx, TxBody};
use atlas_protocol::tree::{TreeShape, VerifiedShard};
use atlas_protocol::wire::{
    ChainStatus, DealQuery, LedgerRequest, LedgerResponse, ShardRequest, ShardResponse,
};
use atlas_protocol::{DealId, Keypair};
use atlas_storage::{PutOutcome, RocksSlotStore, SlotKey, SlotSpec, SlotStore};
use futures::StreamExt;
use libp2p::{Multiaddr, PeerId};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long a shard stream may stay silent mid-conversation.
const STREAM_IDLE: Duration = Duration::from_secs(60);
/// How long the ledger's word that this provider may store a slot's shards is trusted before it
/// is asked again.
const ASSIGNMENT_TTL: Duration = Duration::from_secs(5);
/// Most slot assignments remembered at once (a stranger naming deals cannot grow the map).
const MAX_ASSIGNMENTS: usize = 4096;
/// Blocks after which a proof accepted for a block but still not recorded is sent again (the
/// ledger may have restarted and lost it).
const RESEND_AFTER_BLOCKS: u64 = 3;
/// How long a candidate holder may take to answer before a repairer counts it as down.
const HOLDER_PROBE: Duration = Duration::from_secs(5);

/// A slot the ledger showed assigned here and waiting for bytes: its key, spec, and when.
type Assignment = (SlotKey, SlotSpec, std::time::Instant);
/// A proof accepted for the next block: the chain height when sent and the nonce it used.
type SentProof = (u64, u64);

/// What the provider offers.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub capacity: u64,
    /// Price per GiB per epoch.
    pub price: u128,
    pub collateral: u128,
    pub listen: Vec<Multiaddr>,
    /// Epochs a stored slot that no live deal assigns to this provider is kept before its bytes
    /// are deleted.
    pub gc_grace_epochs: u64,
}

#[derive(Debug, Clone, Default)]
struct ProviderMetrics {
    slots: Gauge,
    stored_bytes: Gauge,
    proofs: Family<Vec<(String, String)>, Counter>,
    shards_received: Counter,
    bytes_served: Counter,
    balance: Gauge,
    gc_deleted: Counter,
    puts_refused: Counter,
}

impl ProviderMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("atlas_provider");
        r.register("slots", "Slots held", m.slots.clone());
        r.register(
            "stored_bytes",
            "Bytes of shards stored",
            m.stored_bytes.clone(),
        );
        r.register(
            "proofs",
            "Storage proofs submitted, by result",
            m.proofs.clone(),
        );
        r.register(
            "shards_received",
            "Shards received and verified",
            m.shards_received.clone(),
        );
        r.register(
            "served_bytes",
            "Shard bytes served to readers",
            m.bytes_served.clone(),
        );
        r.register(
            "gc_deleted_slots",
            "Slots deleted because no live deal assigns them here any more",
            m.gc_deleted.clone(),
        );
        r.register(
            "puts_refused",
            "Shards refused because the slot is not assigned here and waiting for bytes",
            m.puts_refused.clone(),
        );
        r.register(
            "balance_tokens",
            "Account balance (earnings)",
            m.balance.clone(),
        );
        m
    }
}

/// A running provider's shared parts.
pub struct Provider {
    key: Keypair,
    dir: std::path::PathBuf,
    store: Arc<RocksSlotStore>,
    ledger: LedgerClient,
    net: NetHandle,
    /// Serializes this account's transactions so nonces go out in order.
    tx_lock: tokio::sync::Mutex<()>,
    /// Slots the ledger lately showed assigned to this provider and waiting for bytes, with the
    /// slot's spec and when the ledger said so. Bounded by `MAX_ASSIGNMENTS`; locked briefly,
    /// never across an await.
    assigned: std::sync::Mutex<HashMap<(DealId, u16), Assignment>>,
    /// Proofs accepted for the next block but maybe not in one yet: (deal, slot, epoch), with the
    /// chain height when sent and the nonce they used.
    submitted: std::sync::Mutex<HashMap<(DealId, u16, u64), SentProof>>,
    /// Stored slots no live deal assigns here, with the epoch they were first seen so.
    orphans: std::sync::Mutex<HashMap<SlotKey, u64>>,
    gc_grace_epochs: u64,
    /// Set when something the prover's round would retry failed elsewhere (an accept).
    recheck: std::sync::atomic::AtomicBool,
    /// Shard streams accepted from the start (so no reader meets a provider that is up but does
    /// not yet speak the shard protocol); `serve_streams` takes them.
    incoming: std::sync::Mutex<Option<libp2p_stream::IncomingStreams>>,
    metrics: ProviderMetrics,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Provider({})", self.net.peer_id())
    }
}

impl Provider {
    /// Opens the store, starts the network and registers (or updates) on the ledger.
    pub async fn start(
        dir: &Path,
        key: Keypair,
        config: ProviderConfig,
        ledger_addr: Multiaddr,
        registry: &mut Registry,
        shutdown: CancellationToken,
    ) -> Result<(Arc<Self>, tokio::task::JoinHandle<()>)> {
        let store = Arc::new(
            RocksSlotStore::open(dir, config.capacity)
                .with_context(|| format!("opening the slot store in {}", dir.display()))?,
        );
        let (net, _events, net_task) = net::start(
            &key,
            NetConfig {
                listen: config.listen.clone(),
                name: format!("provider-{}", &key.public().to_string()[..8]),
            },
            registry,
            shutdown.clone(),
        )
        .await?;
        let ledger = LedgerClient::over(net.clone(), ledger_addr)?;
        let incoming = net
            .streams()
            .accept(shard::PROTOCOL)
            .map_err(|e| anyhow!("cannot accept shard streams: {e}"))?;
        let provider = Arc::new(Self {
            key,
            dir: dir.to_path_buf(),
            store,
            ledger,
            net,
            tx_lock: tokio::sync::Mutex::new(()),
            assigned: std::sync::Mutex::new(HashMap::new()),
            submitted: std::sync::Mutex::new(HashMap::new()),
            orphans: std::sync::Mutex::new(HashMap::new()),
            gc_grace_epochs: config.gc_grace_epochs,
            recheck: std::sync::atomic::AtomicBool::new(false),
            incoming: std::sync::Mutex::new(Some(incoming)),
            metrics: ProviderMetrics::register(registry),
        });
        provider.register(&config).await?;
        provider.update_store_metrics();
        Ok((provider, net_task))
    }

    pub fn net(&self) -> &NetHandle {
        &self.net
    }

    pub fn store(&self) -> &Arc<RocksSlotStore> {
        &self.store
    }

    /// Where the slot store lives.
    pub fn store_dir(&self) -> &Path {
        &self.dir
    }

    /// Submits a transaction and waits for its block (registration, before the services run).
    async fn submit(&self, body: TxBody) -> Result<u64> {
        let _guard = self.tx_lock.lock().await;
        self.ledger.submit(&self.key, body).await
    }

    /// Queues a transaction: answered once the ledger accepted it (against the next block's
    /// state, so a claim that returns has won) and made it durable. The nonce lock is held for
    /// one round trip, never across a block, so claims and accepts never hold back proofs.
    async fn enqueue(&self, body: TxBody) -> Result<()> {
        let _guard = self.tx_lock.lock().await;
        self.ledger.enqueue(&self.key, body).await.map(|_| ())
    }

    async fn register(&self, config: &ProviderConfig) -> Result<()> {
        let me = self.key.public();
        // Addresses go on the ledger without their /p2p/ part: the ledger binds the peer id to
        // this key, and dialers name it themselves.
        let addrs: Vec<String> = self
            .net
            .listen_addrs()
            .iter()
            .map(|a| {
                a.iter()
                    .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                    .collect::<Multiaddr>()
                    .to_string()
            })
            .take(atlas_protocol::escrow::MAX_PROVIDER_ADDRS)
            .collect();
        let peer_id = self.net.peer_id().to_bytes();
        let existing = match self.ledger.request(LedgerRequest::Provider(me)).await? {
            LedgerResponse::Provider(p) => p,
            other => bail!("unexpected ledger answer: {other:?}"),
        };
        let have = self.ledger.account(&me).await?.balance;
        let need = match &existing {
            Some(p) => config.collateral.saturating_sub(p.collateral),
            None => config.collateral,
        };
        if have < need {
            let status = self.ledger.status().await?;
            if status.params.faucet_cap.is_some() {
                tracing::info!(need, have, "funding collateral from the devnet faucet");
                self.submit(TxBody::Faucet {
                    amount: need - have,
                })
                .await?;
            } else {
                bail!("collateral {need} is more than the balance {have}; fund {me} first");
            }
        }
        match existing {
            None => {
                self.submit(TxBody::RegisterProvider {
                    peer_id,
                    addrs,
                    capacity: config.capacity,
                    price: config.price,
                    collateral: config.collateral,
                })
                .await?;
            }
            Some(_) => {
                // Ports change across restarts: republish where we listen.
                self.submit(TxBody::UpdateProvider {
                    addrs,
                    capacity: config.capacity,
                    price: config.price,
                    add_collateral: need,
                })
                .await?;
            }
        }
        Ok(())
    }

    fn update_store_metrics(&self) {
        let usage = self.store.usage();
        self.metrics.stored_bytes.set(usage.stored as i64);
        if let Ok(list) = self.store.list() {
            self.metrics.slots.set(list.len() as i64);
        }
    }

    /// The slot a `Put` may write: only one the ledger shows assigned to (or claimed by) this
    /// provider and still waiting for its bytes, in a live deal. Anything else is refused before
    /// a byte is stored, so nobody can make this provider hold (or reserve room for) bytes nobody
    /// pays it for.
    async fn assignment(&self, deal: DealId, slot: u16) -> Result<(SlotKey, SlotSpec)> {
        if let Some((key, spec, at)) = self
            .assigned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(deal, slot))
        {
            if at.elapsed() < ASSIGNMENT_TTL {
                return Ok((*key, *spec));
            }
        }
        let d = match self.ledger.request(LedgerRequest::Deal(deal)).await? {
            LedgerResponse::Deal(Some(d)) => d,
            LedgerResponse::Deal(None) => bail!("deal {} is not on the ledger", deal.short()),
            other => bail!("unexpected ledger answer: {other:?}"),
        };
        let s = d
            .slots
            .get(slot as usize)
            .with_context(|| format!("deal has no slot {slot}"))?;
        if d.ended
            || s.holder != Some(self.key.public())
            || !matches!(s.status, SlotStatus::Pending { .. })
        {
            bail!(
                "slot {slot} of deal {} is not assigned to this provider and waiting for its bytes",
                deal.short()
            );
        }
        let (object, specs) = deal_specs(&d)?;
        let found = (SlotKey::new(object, slot), specs[slot as usize]);
        let mut assigned = self.assigned.lock().unwrap_or_else(|p| p.into_inner());
        if assigned.len() >= MAX_ASSIGNMENTS {
            assigned.retain(|_, (_, _, at)| at.elapsed() < ASSIGNMENT_TTL);
        }
        if assigned.len() < MAX_ASSIGNMENTS {
            assigned.insert((deal, slot), (found.0, found.1, std::time::Instant::now()));
        }
        Ok(found)
    }

    /// Serves inbound shard streams until shutdown.
    /// Serves inbound shard streams until shutdown; returns the task, which ends (aborting every
    /// stream handler it started) on shutdown.
    pub fn serve_streams(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>> {
        let mut incoming = self
            .incoming
            .lock()
            .expect("incoming lock")
            .take()
            .context("shard streams are already being served")?;
        let me = self.clone();
        Ok(tokio::spawn(async move {
            // Handlers live in this set: dropping it at shutdown aborts them, so no stream keeps
            // the provider (and its store) alive.
            let mut handlers = tokio::task::JoinSet::new();
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(_) = handlers.join_next(), if !handlers.is_empty() => continue,
                    next = incoming.next() => next,
                };
                let Some((peer, stream)) = next else { break };
                let me = me.clone();
                handlers.spawn(async move {
                    if let Err(error) = me.handle_stream(peer, stream).await {
                        tracing::debug!(%peer, error = %format!("{error:#}"), "shard stream ended");
                    }
                });
            }
        }))
    }

    async fn handle_stream(
        self: &Arc<Self>,
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
                    let body =
                        tokio::time::timeout(STREAM_IDLE, shard::read_body(&mut stream, len))
                            .await
                            .map_err(|_| {
                                anyhow!("shard body not received within {STREAM_IDLE:?}")
                            })??;
                    match self.put(deal, slot, stripe, body, siblings).await {
                        Ok(complete) => ShardResponse::Stored { complete },
                        Err(e) => {
                            tracing::info!(%peer, deal = %deal.short(), slot, stripe, error = %format!("{e:#}"), "shard refused");
                            ShardResponse::Error(format!("{e:#}"))
                        }
                    }
                }
                ShardRequest::Get {
                    object,
                    slot,
                    stripe,
                } => match self.get(SlotKey::new(object, slot), stripe).await {
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
                        self.metrics.bytes_served.inc_by(bytes.len() as u64);
                        continue;
                    }
                    Err(e) => ShardResponse::Error(format!("{e:#}")),
                },
            };
            shard::write_response(&mut stream, &response).await?;
        }
        Ok(())
    }

    /// Verifies and stores one shard; accepts the slot on the ledger once it is whole.
    async fn put(
        self: &Arc<Self>,
        deal: DealId,
        slot: u16,
        stripe: u64,
        body: Vec<u8>,
        siblings: Vec<atlas_protocol::tree::Cv>,
    ) -> Result<bool> {
        let (key, spec) = match self.assignment(deal, slot).await {
            Ok(found) => found,
            Err(e) => {
                self.metrics.puts_refused.inc();
                return Err(e);
            }
        };
        let store = self.store.clone();
        let outcome = tokio::task::spawn_blocking(move || -> Result<PutOutcome> {
            let shard = VerifiedShard::verify(&spec.root(), spec.stripes, stripe, body, &siblings)
                .context("shard does not match the slot root")?;
            store.create_slot(key, spec)?;
            Ok(store.put_shard(key, &shard)?)
        })
        .await??;
        self.metrics.shards_received.inc();
        self.update_store_metrics();
        let complete = outcome == PutOutcome::Completed;
        if complete {
            // One round trip (queued, not waited into a block); a failure is retried by the
            // prover's next round.
            match self.enqueue(TxBody::AcceptSlot { deal, slot }).await {
                Ok(()) => tracing::info!(deal = %deal.short(), slot, "slot accepted"),
                Err(e) => {
                    self.recheck
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(deal = %deal.short(), slot, error = %format!("{e:#}"), "accepting the slot failed")
                }
            }
        }
        Ok(complete)
    }

    async fn get(
        &self,
        key: SlotKey,
        stripe: u64,
    ) -> Result<(Vec<u8>, Vec<atlas_protocol::tree::Cv>)> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || -> Result<_> {
            let info = store
                .info(key)?
                .with_context(|| format!("slot {key} is not held here"))?;
            let c = info.spec.shard_size;
            let bytes = store.read(key, stripe * c, c)?;
            let siblings = store.shard_siblings(key, stripe)?;
            Ok((bytes, siblings))
        })
        .await?
    }

    /// Proves every slot due in the ledger's current epoch, and accepts complete slots whose
    /// acceptance did not land. Returns how many proofs were accepted.
    pub async fn prove_round(self: &Arc<Self>, status: &ChainStatus) -> Result<usize> {
        let me = self.key.public();
        let deals = self.ledger.deals(DealQuery::HeldBy(me)).await?;
        let mut accepted = 0;
        let mut due = Vec::new();
        // A proof the ledger accepted but has not recorded is sent again once the ledger no
        // longer counts its nonce (it restarted and lost its queue), or after a few blocks
        // whatever the reason. Only the ledger's record of the proof ends the retries.
        let next_nonce = self.ledger.account(&me).await?.nonce;
        let in_flight: std::collections::HashSet<(DealId, u16, u64)> = {
            let mut sent = self.submitted.lock().unwrap_or_else(|p| p.into_inner());
            sent.retain(|(_, _, e), _| *e >= status.epoch);
            sent.iter()
                .filter(|(_, (at, nonce))| {
                    *nonce < next_nonce && status.height < *at + RESEND_AFTER_BLOCKS
                })
                .map(|(k, _)| *k)
                .collect()
        };
        {
            // Proofs the ledger has recorded need no more watching.
            let mut sent = self.submitted.lock().unwrap_or_else(|p| p.into_inner());
            for (id, deal) in &deals {
                for (j, slot) in deal.slots.iter().enumerate() {
                    if let Some(e) = slot.proven {
                        sent.remove(&(*id, j as u16, e));
                    }
                }
            }
        }
        for (id, deal) in &deals {
            let (object, specs) = deal_specs(deal)?;
            for (j, slot) in deal.slots.iter().enumerate() {
                if slot.holder != Some(me) {
                    continue;
                }
                let key = SlotKey::new(object, j as u16);
                match slot.status {
                    SlotStatus::Pending { .. } => {
                        let complete = self.store.info(key)?.is_some_and(|i| i.complete());
                        if complete {
                            self.enqueue(TxBody::AcceptSlot {
                                deal: *id,
                                slot: j as u16,
                            })
                            .await
                            .ok();
                        }
                    }
                    SlotStatus::Active { .. }
                        if status.epoch >= slot.prove_from
                            && slot.proven != Some(status.epoch)
                            && !in_flight.contains(&(*id, j as u16, status.epoch)) =>
                    {
                        due.push((*id, j as u16, key, specs[j]));
                    }
                    _ => {}
                }
            }
        }
        if due.is_empty() {
            return Ok(0);
        }
        let samples = status.params.samples;
        let beacon = status.beacon;
        let epoch = status.epoch;
        let store = self.store.clone();
        let proofs = tokio::task::spawn_blocking(move || {
            due.into_iter()
                .map(|(deal, slot, key, spec)| {
                    let result = (|| -> Result<_> {
                        let shape = TreeShape::new(spec.len())?;
                        let ch =
                            Challenge::derive(&beacon, &deal, slot, epoch, shape.chunks(), samples);
                        Ok(store.prove(key, &ch)?)
                    })();
                    (deal, slot, result)
                })
                .collect::<Vec<_>>()
        })
        .await?;
        // Queue every proof under one lock with consecutive nonces: one round trip each, no
        // waiting for blocks.
        let _guard = self.tx_lock.lock().await;
        let chain = self.ledger.chain().await?;
        let mut nonce = self.ledger.account(&me).await?.nonce;
        for (deal, slot, proof) in proofs {
            let proof = match proof {
                Ok(p) => p,
                Err(e) => {
                    self.count_proof("unavailable");
                    tracing::warn!(deal = %deal.short(), slot, error = %format!("{e:#}"), "cannot prove slot");
                    continue;
                }
            };
            let signed = Tx {
                chain,
                signer: me,
                nonce,
                body: TxBody::SubmitProof {
                    deal,
                    slot,
                    epoch,
                    proof,
                },
            }
            .sign(&self.key)
            .map_err(|e| anyhow!("signing a proof: {e}"))?;
            match self.ledger.request(LedgerRequest::Enqueue(signed)).await? {
                LedgerResponse::Accepted { .. } => {
                    nonce += 1;
                    accepted += 1;
                    self.count_proof("accepted");
                    self.submitted
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((deal, slot, epoch), (status.height, nonce - 1));
                }
                LedgerResponse::Refused(reason) => {
                    self.count_proof("rejected");
                    tracing::warn!(deal = %deal.short(), slot, epoch, %reason, "proof refused");
                    // A refusal does not use the nonce; keep going with the same one.
                }
                other => bail!("unexpected ledger answer: {other:?}"),
            }
        }
        drop(_guard);
        if let Ok(a) = self.ledger.account(&me).await {
            self.metrics
                .balance
                .set(a.balance.min(i64::MAX as u128) as i64);
        }
        Ok(accepted)
    }

    fn count_proof(&self, result: &str) {
        self.metrics
            .proofs
            .get_or_create(&vec![("result".into(), result.into())])
            .inc();
    }

    /// Claims freed slots it can hold and rebuilds them from the other holders. Returns how many
    /// slots it repaired.
    pub async fn repair_round(self: &Arc<Self>) -> Result<usize> {
        let me = self.key.public();
        match self.ledger.request(LedgerRequest::Provider(me)).await? {
            LedgerResponse::Provider(Some(p)) if p.exiting_since.is_none() => {}
            _ => return Ok(0), // not registered, or leaving: takes nothing new
        }
        let deals = self.ledger.deals(DealQuery::Repairable).await?;
        let mut repaired = 0;
        for (id, deal) in deals {
            let (object, specs) = deal_specs(&deal)?;
            let Some(slot) = deal
                .slots
                .iter()
                .position(|s| s.status == SlotStatus::Freed)
            else {
                continue;
            };
            if self.store.usage().free() < specs[slot].len() {
                continue;
            }
            // One slot of an object per provider across all its live deals (the ledger refuses
            // the claim otherwise), and never one it failed.
            let live = crate::creator::live_deals_of(&self.ledger, &object).await?;
            if live
                .iter()
                .any(|(_, d)| d.slots.iter().any(|s| s.holder == Some(me)))
                || deal.slots.iter().any(|s| s.failed_by == Some(me))
            {
                continue;
            }
            // Claiming locks collateral that a claim never delivered forfeits: claim only when
            // enough holders (of any live deal of the object) answer to rebuild from.
            let k = deal
                .terms
                .manifest
                .verify()
                .map_err(|e| anyhow!("deal manifest: {e}"))?
                .layout()
                .data_shards();
            // One look-up of the holders serves the probe and the rebuild.
            let mut holders = crate::creator::holders_among(&self.ledger, &live).await?;
            if let Some(own) = holders.get_mut(slot) {
                *own = None;
            }
            let answering = self.answering(&holders).await;
            if answering < k {
                tracing::info!(deal = %id.short(), slot, answering, needed = k, "not claiming: too few holders answer to rebuild from");
                continue;
            }
            // Accepted means applied against the next block's state: the claim has won.
            if let Err(e) = self
                .enqueue(TxBody::ClaimSlot {
                    deal: id,
                    slot: slot as u16,
                })
                .await
            {
                // Another provider claimed it first, most likely.
                tracing::debug!(deal = %id.short(), slot, error = %format!("{e:#}"), "claim refused");
                continue;
            }
            tracing::info!(deal = %id.short(), slot, "claimed a freed slot; rebuilding it");
            match self.rebuild(id, &deal, slot, holders).await {
                Ok(()) => {
                    self.enqueue(TxBody::AcceptSlot {
                        deal: id,
                        slot: slot as u16,
                    })
                    .await?;
                    tracing::info!(deal = %id.short(), slot, "repaired slot accepted");
                    repaired += 1;
                }
                Err(e) => {
                    tracing::warn!(deal = %id.short(), slot, error = %format!("{e:#}"), "repair failed")
                }
            }
        }
        Ok(repaired)
    }

    /// Rebuilds slot `slot` of `deal` from any k shards per stripe of the other holders, checks it
    /// against the slot root and stores it.
    async fn rebuild(
        self: &Arc<Self>,
        deal_id: DealId,
        deal: &Deal,
        slot: usize,
        holders: Vec<Option<atlas_protocol::escrow::Provider>>,
    ) -> Result<()> {
        let manifest = deal
            .terms
            .manifest
            .verify()
            .map_err(|e| anyhow!("deal manifest: {e}"))?;
        let (object, specs) = deal_specs(deal)?;
        let spec = specs[slot];
        let key = SlotKey::new(object, slot as u16);
        let mut source = crate::creator::NetShardSource::new(
            tokio::runtime::Handle::current(),
            self.net.clone(),
            manifest.clone(),
            holders,
        )?;
        let store = self.store.clone();
        let scratch = self
            .dir
            .join(format!("repair-{}-{slot}.tmp", deal_id.short()));
        tokio::task::spawn_blocking(move || -> Result<()> {
            use atlas_protocol::tree::{group_cvs, Outboard};
            use std::os::unix::fs::FileExt;
            // A stale local copy (say, one this provider lost or damaged) must not be mistaken
            // for the rebuilt slot. No live deal counts on it: the ledger accepted this claim
            // only because this provider holds no slot of the object in any live deal.
            store.delete_slot(key)?;
            let layout = manifest.layout();
            let c = layout.shard_size();
            let file = std::fs::File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&scratch)?;
            let result = (|| -> Result<()> {
                let started = std::time::Instant::now();
                let mut groups = Vec::new();
                atlas_protocol::erasure::rebuild_slot(&layout, &mut source, slot, &mut |stripe, shard| {
                    group_cvs(stripe * c, shard, &mut groups);
                    file.write_all_at(shard, stripe * c)
                })?;
                let outboard = Outboard::from_groups(TreeShape::new(spec.len())?, groups)?;
                if outboard.root() != spec.root() {
                    bail!("the rebuilt slot does not match its root (holders sent inconsistent shards)");
                }
                let rebuilt = started.elapsed();
                drop(file);
                // The store syncs the file, hashes the file against the slot root once more and moves it in.
                store.import_slot(key, spec, &scratch)?;
                tracing::info!(
                    slot,
                    bytes = spec.len(),
                    rebuild_ms = rebuilt.as_millis() as u64,
                    store_ms = (started.elapsed() - rebuilt).as_millis() as u64,
                    "slot rebuilt and stored"
                );
                Ok(())
            })();
            let _ = std::fs::remove_file(&scratch);
            result
        })
        .await??;
        self.update_store_metrics();
        Ok(())
    }

    /// How many of `holders` open a shard stream within `HOLDER_PROBE`.
    async fn answering(&self, holders: &[Option<atlas_protocol::escrow::Provider>]) -> usize {
        let probes = holders.iter().flatten().map(|p| {
            let net = self.net.clone();
            async move {
                matches!(
                    tokio::time::timeout(HOLDER_PROBE, crate::creator::open_shard_stream(&net, p))
                        .await,
                    Ok(Ok(_))
                )
            }
        });
        futures::future::join_all(probes)
            .await
            .into_iter()
            .filter(|up| *up)
            .count()
    }

    /// Deletes stored slots that no live deal has assigned to this provider for
    /// `gc_grace_epochs` epochs: ended, cancelled, freed, exited or never-assigned ones. Returns
    /// how many it deleted.
    pub async fn gc_round(self: &Arc<Self>, status: &ChainStatus) -> Result<usize> {
        let me = self.key.public();
        let deals = self.ledger.deals(DealQuery::HeldBy(me)).await?;
        let mut wanted = std::collections::HashSet::new();
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
        let store = self.store.clone();
        let stored = tokio::task::spawn_blocking(move || store.list()).await??;
        let due: Vec<SlotKey> = {
            let mut orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
            let stored: std::collections::HashSet<SlotKey> =
                stored.iter().map(|(k, _)| *k).collect();
            orphans.retain(|k, _| stored.contains(k) && !wanted.contains(k));
            for k in stored.iter().filter(|k| !wanted.contains(k)) {
                orphans.entry(*k).or_insert(status.epoch);
            }
            orphans
                .iter()
                .filter(|(_, since)| status.epoch >= **since + self.gc_grace_epochs)
                .map(|(k, _)| *k)
                .collect()
        };
        if due.is_empty() {
            return Ok(0);
        }
        let store = self.store.clone();
        let deleted = tokio::task::spawn_blocking(move || -> Result<Vec<SlotKey>> {
            let mut gone = Vec::new();
            for key in due {
                if store.delete_slot(key)? {
                    gone.push(key);
                }
            }
            Ok(gone)
        })
        .await??;
        let mut orphans = self.orphans.lock().unwrap_or_else(|p| p.into_inner());
        for key in &deleted {
            orphans.remove(key);
            tracing::info!(slot = %key, "deleted a slot no live deal assigns here");
        }
        drop(orphans);
        self.metrics.gc_deleted.inc_by(deleted.len() as u64);
        self.update_store_metrics();
        Ok(deleted.len())
    }

    /// Looks for freed slots to repair at each new block and collects garbage at each new
    /// epoch, checking the chain's head every `poll`, until shutdown. Between blocks the ledger
    /// is asked for its status alone.
    pub async fn run_repairer(self: Arc<Self>, poll: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut repaired_at, mut collected_in) = (None, None);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let status = match self.ledger.status().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %format!("{e:#}"), "ledger unreachable");
                    continue;
                }
            };
            if repaired_at != Some(status.height) {
                match self.repair_round().await {
                    Ok(_) => repaired_at = Some(status.height),
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "repair round failed"),
                }
            }
            if collected_in != Some(status.epoch) {
                match self.gc_round(&status).await {
                    Ok(_) => collected_in = Some(status.epoch),
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "garbage collection failed")
                    }
                }
            }
        }
    }

    /// Whether a proof sent for this epoch may need sending again: the ledger no longer counts
    /// its nonce (it restarted and lost its queue), or it is still unrecorded a few blocks on.
    async fn resend_due(&self, status: &ChainStatus) -> Result<bool> {
        let stale_at = {
            let sent = self.submitted.lock().unwrap_or_else(|p| p.into_inner());
            let mine: Vec<SentProof> = sent
                .iter()
                .filter(|((_, _, e), _)| *e == status.epoch)
                .map(|(_, v)| *v)
                .collect();
            if mine.is_empty() {
                return Ok(false);
            }
            mine
        };
        if stale_at
            .iter()
            .any(|(at, _)| status.height >= at + RESEND_AFTER_BLOCKS)
        {
            return Ok(true);
        }
        let next_nonce = self.ledger.account(&self.key.public()).await?.nonce;
        Ok(stale_at.iter().any(|(_, nonce)| *nonce >= next_nonce))
    }

    /// Proves what is due, checking the chain's head every `poll`, until shutdown. The deals it
    /// holds are read once an epoch (when its proofs fall due; a slot accepted during an epoch is
    /// first due in the next), and again within the epoch only when a proof it sent may need
    /// resending; otherwise the ledger is asked for its status alone, so what a provider costs
    /// the ledger between epochs does not grow with what it holds.
    pub async fn run_prover(self: Arc<Self>, poll: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut proved_in, mut checked_at) = (None, None);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let status = match self.ledger.status().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(error = %format!("{e:#}"), "ledger unreachable");
                    continue;
                }
            };
            if checked_at == Some(status.height) {
                continue;
            }
            let due = proved_in != Some(status.epoch)
                || self
                    .recheck
                    .swap(false, std::sync::atomic::Ordering::Relaxed)
                || match self.resend_due(&status).await {
                    Ok(due) => due,
                    Err(e) => {
                        tracing::debug!(error = %format!("{e:#}"), "ledger unreachable");
                        continue;
                    }
                };
            if !due {
                checked_at = Some(status.height);
                continue;
            }
            match self.prove_round(&status).await {
                Ok(n) => {
                    (proved_in, checked_at) = (Some(status.epoch), Some(status.height));
                    if n > 0 {
                        tracing::info!(proofs = n, "proved");
                    }
                }
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "proving failed"),
            }
        }
    }
}

/// The object id and per-slot specs a deal's manifest describes.
pub fn deal_specs(d: &Deal) -> Result<(atlas_protocol::ObjectId, Vec<SlotSpec>)> {
    let manifest = d
        .terms
        .manifest
        .verify()
        .map_err(|e| anyhow!("deal manifest: {e}"))?;
    let layout = manifest.layout();
    let specs = manifest
        .manifest()
        .slot_roots
        .iter()
        .map(|root| SlotSpec {
            root: *root,
            shard_size: layout.shard_size(),
            stripes: layout.stripes(),
        })
        .collect();
    Ok((manifest.id(), specs))
}
