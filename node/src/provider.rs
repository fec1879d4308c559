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
use atlas_protocol::wire::{LedgerRequest, LedgerResponse, ShardRequest, ShardResponse};
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

/// What the provider offers.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub capacity: u64,
    /// Price per GiB per epoch.
    pub price: u128,
    pub collateral: u128,
    pub listen: Vec<Multiaddr>,
}

#[derive(Debug, Clone, Default)]
struct ProviderMetrics {
    slots: Gauge,
    stored_bytes: Gauge,
    proofs: Family<Vec<(String, String)>, Counter>,
    shards_received: Counter,
    bytes_served: Counter,
    balance: Gauge,
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
    /// Slot specs of deals seen, by deal.
    specs: std::sync::Mutex<HashMap<DealId, (atlas_protocol::ObjectId, Vec<SlotSpec>)>>,
    /// Proofs accepted for the next block but maybe not in one yet: (deal, slot, epoch).
    submitted: std::sync::Mutex<std::collections::HashSet<(DealId, u16, u64)>>,
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
            specs: std::sync::Mutex::new(HashMap::new()),
            submitted: std::sync::Mutex::new(std::collections::HashSet::new()),
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

    /// Submits a transaction and waits for its block.
    async fn submit(&self, body: TxBody) -> Result<u64> {
        let _guard = self.tx_lock.lock().await;
        self.ledger.submit(&self.key, body).await
    }

    async fn register(&self, config: &ProviderConfig) -> Result<()> {
        let me = self.key.public();
        let addrs: Vec<String> = self
            .net
            .listen_addrs()
            .iter()
            .map(|a| a.to_string())
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

    /// The object and slot specs of a deal, from cache or the ledger.
    async fn deal_specs(&self, deal: DealId) -> Result<(atlas_protocol::ObjectId, Vec<SlotSpec>)> {
        if let Some(found) = self
            .specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&deal)
        {
            return Ok(found.clone());
        }
        let d = match self.ledger.request(LedgerRequest::Deal(deal)).await? {
            LedgerResponse::Deal(Some(d)) => d,
            LedgerResponse::Deal(None) => bail!("deal {} is not on the ledger", deal.short()),
            other => bail!("unexpected ledger answer: {other:?}"),
        };
        let entry = deal_specs(&d)?;
        self.specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(deal, entry.clone());
        Ok(entry)
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
        let (object, specs) = self.deal_specs(deal).await?;
        let spec = *specs
            .get(slot as usize)
            .with_context(|| format!("deal has no slot {slot}"))?;
        let key = SlotKey::new(object, slot);
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
            let me = self.clone();
            tokio::spawn(async move {
                match me.submit(TxBody::AcceptSlot { deal, slot }).await {
                    Ok(h) => tracing::info!(deal = %deal.short(), slot, block = h, "slot accepted"),
                    Err(e) => {
                        tracing::warn!(deal = %deal.short(), slot, error = %format!("{e:#}"), "accepting the slot failed")
                    }
                }
            });
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
    pub async fn prove_round(self: &Arc<Self>) -> Result<usize> {
        let me = self.key.public();
        let status = self.ledger.status().await?;
        let deals = match self.ledger.request(LedgerRequest::HeldBy(me)).await? {
            LedgerResponse::Deals(d) => d,
            other => bail!("unexpected ledger answer: {other:?}"),
        };
        let mut accepted = 0;
        let mut due = Vec::new();
        let submitted = {
            let mut set = self.submitted.lock().unwrap_or_else(|p| p.into_inner());
            set.retain(|(_, _, e)| *e >= status.epoch);
            set.clone()
        };
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
                            self.submit(TxBody::AcceptSlot {
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
                            && !submitted.contains(&(*id, j as u16, status.epoch)) =>
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
                        .insert((deal, slot, epoch));
                }
                LedgerResponse::Rejected(reason) => {
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
        let deals = match self.ledger.request(LedgerRequest::Repairable).await? {
            LedgerResponse::Deals(d) => d,
            other => bail!("unexpected ledger answer: {other:?}"),
        };
        let mut repaired = 0;
        for (id, deal) in deals {
            // One slot per object per provider.
            if deal.slots.iter().any(|s| s.holder == Some(me)) {
                continue;
            }
            let (_, specs) = deal_specs(&deal)?;
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
            if let Err(e) = self
                .submit(TxBody::ClaimSlot {
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
            match self.rebuild(id, &deal, slot).await {
                Ok(()) => {
                    self.submit(TxBody::AcceptSlot {
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
    async fn rebuild(self: &Arc<Self>, deal_id: DealId, deal: &Deal, slot: usize) -> Result<()> {
        let manifest = deal
            .manifest
            .verify()
            .map_err(|e| anyhow!("deal manifest: {e}"))?;
        let (object, specs) = deal_specs(deal)?;
        let spec = specs[slot];
        let key = SlotKey::new(object, slot as u16);
        let mut holders = Vec::with_capacity(deal.slots.len());
        for (j, s) in deal.slots.iter().enumerate() {
            let holder = match (s.holder, s.status) {
                (Some(h), SlotStatus::Active { .. }) if j != slot => {
                    match self.ledger.request(LedgerRequest::Provider(h)).await? {
                        LedgerResponse::Provider(p) => p,
                        _ => None,
                    }
                }
                _ => None,
            };
            holders.push(holder);
        }
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
            // for the rebuilt slot.
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

    /// Looks for freed slots to repair every `poll`, until shutdown.
    pub async fn run_repairer(self: Arc<Self>, poll: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.repair_round().await {
                tracing::warn!(error = %format!("{e:#}"), "repair round failed");
            }
        }
    }

    /// Checks the ledger every `poll` and proves what is due, until shutdown.
    pub async fn run_prover(self: Arc<Self>, poll: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            match self.prove_round().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(proofs = n, "proved"),
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "proving failed"),
            }
        }
    }
}

/// The object id and per-slot specs a deal's manifest describes.
pub fn deal_specs(d: &Deal) -> Result<(atlas_protocol::ObjectId, Vec<SlotSpec>)> {
    let manifest = d
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
