//! The storage provider (`atlas provider run`): registers on the ledger, receives and verifies
//! shards, accepts complete slots, proves every slot it holds each epoch, repairs freed slots,
//! collects slots nobody pays for, and serves verified reads.
//!
//! Each piece of mutable state has one owner:
//!
//! | task | owns | module |
//! | --- | --- | --- |
//! | network | the libp2p swarm | [`crate::net`] |
//! | store thread | the slot store and its counts | [`store`] |
//! | submitter | the account's nonce | [`submitter`] |
//! | shard server | inbound streams, the assignment cache | [`serve`] |
//! | prover | proofs sent and not yet recorded | [`prove`] |
//! | repairer | slot claims and rebuilds; orphaned slots and their grace | [`repair`], [`gc`] |
//! | scrubber | the pace of re-verifying stored slots; slots suspected damaged | `scrub` |
//!
//! The rest talk to them through cheap handles. [`Running::stop`] ends them in this order: the
//! services (server, prover, repairer) first, so nothing new is asked; then the submitter, once
//! what they queued is sent; then the store thread, once its queued jobs are done (its directory
//! is then free); the network last, since the submitter talks through it.

pub mod damage;
pub mod gc;
mod metrics;
pub mod prove;
pub mod repair;
mod scrub;
pub mod serve;
pub mod store;
pub mod submitter;

use crate::client::{manifest_of, ClientError};
use crate::ledger::{LedgerClient, LedgerError, Settlement};
use crate::net::{self, NetConfig, NetError, NetHandle};
use atlas_protocol::escrow::{Deal, TxBody};
use atlas_protocol::Keypair;
use atlas_storage::SlotSpec;
use libp2p::Multiaddr;
use metrics::ProviderMetrics;
use prometheus_client::registry::Registry;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use store::{StoreCallError, StoreHandle, StoreThread};
use submitter::{SubmitError, Submitter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// Why a provider operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error(transparent)]
    Store(#[from] StoreCallError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Wire(#[from] crate::wire::WireError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("opening the slot store in {dir}: {source}")]
    Open {
        dir: std::path::PathBuf,
        source: StoreCallError,
    },
    #[error("collateral {need} is more than the balance {have}; fund {key} first")]
    Unfunded {
        need: u128,
        have: u128,
        key: atlas_protocol::PublicKey,
    },
    #[error(
        "slot {slot} of deal {deal} is not assigned to this provider and waiting for its bytes"
    )]
    NotAssigned { deal: String, slot: u16 },
    #[error("the shard does not match the slot root: {0}")]
    BadShard(atlas_protocol::tree::TreeError),
    #[error("the rebuilt slot does not match its root (holders sent inconsistent shards)")]
    Inconsistent,
    #[error(transparent)]
    Tree(#[from] atlas_protocol::tree::TreeError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("cannot accept shard streams: {0}")]
    Streams(String),
    #[error("a worker task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T, E = ProviderError> = std::result::Result<T, E>;

/// What the provider offers, and how often it looks at the chain.
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
    /// How often the prover and the repairer ask for the chain's head.
    pub poll: Duration,
    /// How long one pass of the scrubber over every stored slot takes (it reads at least
    /// 1 MiB/s).
    pub scrub_pass: Duration,
}

/// A running provider's handles: immutable, cheap to share between its tasks.
pub struct Provider {
    key: Keypair,
    ledger: Arc<dyn Settlement>,
    net: NetHandle,
    store: StoreHandle,
    submitter: Submitter,
    /// Tells the prover a round should run again soon (an accept failed elsewhere).
    recheck: mpsc::Sender<()>,
    /// Slots to verify now (the prover could not read them).
    suspects: mpsc::Sender<atlas_storage::SlotKey>,
    metrics: ProviderMetrics,
    /// The capacity configured; the ledger is offered less when the disk has less room.
    capacity: u64,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Provider({})", self.net.peer_id())
    }
}

/// A started provider and its tasks.
#[derive(Debug)]
pub struct Running {
    pub provider: Arc<Provider>,
    services: CancellationToken,
    submitting: CancellationToken,
    network: CancellationToken,
    service_tasks: Vec<tokio::task::JoinHandle<()>>,
    submitter_task: tokio::task::JoinHandle<()>,
    store_thread: StoreThread,
    net_task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops every task in the documented order and waits for each; the store is closed when
    /// this returns.
    pub async fn stop(self) {
        self.services.cancel();
        for task in self.service_tasks {
            let _ = task.await;
        }
        self.submitting.cancel();
        let _ = self.submitter_task.await;
        self.store_thread.stop().await;
        self.network.cancel();
        let _ = self.net_task.await;
    }
}

impl Provider {
    /// Opens the store, starts the network, registers (or updates) on the ledger, and starts the
    /// shard server, the prover and the repairer.
    pub async fn start(
        dir: &Path,
        key: Keypair,
        config: ProviderConfig,
        ledger_addr: Multiaddr,
        registry: &mut Registry,
    ) -> Result<Running> {
        let name = format!("provider-{}", &key.public().to_string()[..8]);
        let span = tracing::info_span!("provider", node = %name);
        let metrics = ProviderMetrics::register(registry);
        let (store, store_thread) =
            store::open(dir, config.capacity, metrics.clone()).map_err(|source| {
                ProviderError::Open {
                    dir: dir.to_path_buf(),
                    source,
                }
            })?;
        let stale = repair::remove_scratch(store.dir());
        if stale > 0 {
            tracing::info!(
                files = stale,
                "removed half-written rebuilds left by a crash"
            );
        }
        let network = CancellationToken::new();
        let (net, _events, net_task) = net::start(
            &key,
            NetConfig {
                listen: config.listen.clone(),
                name,
            },
            registry,
            network.clone(),
        )
        .await?;
        let client = LedgerClient::over(net.clone(), ledger_addr)?;
        let ledger: Arc<dyn Settlement> = Arc::new(client);
        // Streams are accepted from the start, so no reader meets a provider that is up but
        // does not yet speak the shard protocol.
        let incoming = net
            .streams()
            .accept(crate::wire::shard::PROTOCOL)
            .map_err(|e| ProviderError::Streams(e.to_string()))?;
        let offered = store.offered(config.capacity).await?;
        if offered < config.capacity {
            tracing::warn!(
                configured = config.capacity,
                offered,
                "the disk has less room than the configured capacity; offering what it has"
            );
        }
        register(&*ledger, &key, &net, &config, offered)
            .instrument(span.clone())
            .await?;
        let submitting = CancellationToken::new();
        let (submitter, submitter_task) =
            Submitter::start(ledger.clone(), key.clone(), submitting.clone());
        let (recheck, recheck_rx) = mpsc::channel(1);
        let (suspects, suspects_rx) = mpsc::channel(64);
        let provider = Arc::new(Self {
            key,
            ledger,
            net,
            store,
            submitter,
            recheck,
            suspects,
            metrics,
            capacity: config.capacity,
        });
        let services = CancellationToken::new();
        let service_tasks = vec![
            tokio::spawn(
                serve::run(provider.clone(), incoming, services.clone()).instrument(span.clone()),
            ),
            tokio::spawn(
                prove::run(provider.clone(), config.poll, recheck_rx, services.clone())
                    .instrument(span.clone()),
            ),
            tokio::spawn(
                scrub::run(
                    provider.clone(),
                    config.scrub_pass,
                    suspects_rx,
                    services.clone(),
                )
                .instrument(span.clone()),
            ),
            tokio::spawn(
                repair::run(
                    provider.clone(),
                    config.poll,
                    config.gc_grace_epochs,
                    services.clone(),
                )
                .instrument(span),
            ),
        ];
        Ok(Running {
            provider,
            services,
            submitting,
            network,
            service_tasks,
            submitter_task,
            store_thread,
            net_task,
        })
    }

    pub fn net(&self) -> &NetHandle {
        &self.net
    }

    /// The slot store's handle.
    pub fn store(&self) -> &StoreHandle {
        &self.store
    }

    /// Shard streams being served now (`atlas_provider_shard_streams_open`).
    pub fn shard_streams_open(&self) -> i64 {
        self.metrics.streams_open.get()
    }

    /// Bytes of shard bodies being received now (`atlas_provider_put_bytes_in_flight`).
    pub fn put_bytes_in_flight(&self) -> i64 {
        self.metrics.put_bytes.get()
    }

    /// Where the slot store lives.
    pub fn store_dir(&self) -> &Path {
        self.store.dir()
    }

    /// Queues an accept (one round trip); a failure is retried by the prover's next round.
    async fn accept(&self, deal: atlas_protocol::DealId, slot: u16) {
        match self
            .submitter
            .enqueue(TxBody::AcceptSlot { deal, slot })
            .await
        {
            Ok(_) => tracing::info!(deal = %deal.short(), slot, "slot accepted"),
            Err(e) => {
                let _ = self.recheck.try_send(());
                tracing::warn!(deal = %deal.short(), slot, error = %e, "accepting the slot failed");
            }
        }
    }
}

/// The chain's head every `poll`, for a service loop: `None` once `shutdown` is cancelled. A tick
/// at which the ledger cannot be reached is skipped.
struct Ticker<'a> {
    ledger: &'a dyn Settlement,
    tick: tokio::time::Interval,
    shutdown: CancellationToken,
}

impl<'a> Ticker<'a> {
    fn new(ledger: &'a dyn Settlement, poll: Duration, shutdown: CancellationToken) -> Self {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            ledger,
            tick,
            shutdown,
        }
    }

    async fn next(&mut self) -> Option<atlas_protocol::wire::ChainStatus> {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = self.tick.tick() => {}
            }
            match self.ledger.status().await {
                Ok(s) => return Some(s),
                Err(e) => tracing::debug!(error = %e, "ledger unreachable"),
            }
        }
    }
}

/// Registers, or updates the registration (ports change across restarts), funding the
/// collateral from the devnet faucet where there is one. Waits for each block: nothing else
/// runs yet.
async fn register(
    ledger: &dyn Settlement,
    key: &Keypair,
    net: &NetHandle,
    config: &ProviderConfig,
    capacity: u64,
) -> Result<()> {
    let me = key.public();
    // Addresses go on the ledger without their /p2p/ part: the ledger binds the peer id to
    // this key, and dialers name it themselves.
    let addrs: Vec<String> = net
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
    let existing = ledger.provider(&me).await?;
    let have = ledger.account(&me).await?.balance;
    let need = match &existing {
        Some(p) => config.collateral.saturating_sub(p.collateral),
        None => config.collateral,
    };
    if have < need {
        let status = ledger.status().await?;
        if status.params.faucet_cap.is_none() {
            return Err(ProviderError::Unfunded {
                need,
                have,
                key: me,
            });
        }
        tracing::info!(need, have, "funding collateral from the devnet faucet");
        ledger
            .submit(
                key,
                TxBody::Faucet {
                    amount: need - have,
                },
            )
            .await?;
    }
    let body = match existing {
        None => TxBody::RegisterProvider {
            peer_id: net.peer_id().to_bytes(),
            addrs,
            capacity,
            price: config.price,
            collateral: config.collateral,
        },
        Some(_) => TxBody::UpdateProvider {
            addrs,
            capacity,
            price: config.price,
            add_collateral: need,
        },
    };
    ledger.submit(key, body).await?;
    Ok(())
}

/// Tells the ledger the capacity this provider can really take, when it has moved by more than
/// a hundredth from what the ledger shows (the disk filled with other data, or was freed), so
/// creators do not pick a provider whose disk cannot hold their slot.
async fn advertise(provider: &Provider) -> Result<()> {
    let me = provider.key.public();
    let Some(p) = provider.ledger.provider(&me).await? else {
        return Ok(());
    };
    let offered = provider.store.offered(provider.capacity).await?;
    if offered.abs_diff(p.capacity) <= p.capacity / 100 {
        return Ok(());
    }
    tracing::info!(
        was = p.capacity,
        now = offered,
        "offering a new capacity on the ledger"
    );
    provider
        .submitter
        .enqueue(TxBody::UpdateProvider {
            addrs: p.addrs,
            capacity: offered,
            price: p.price,
            add_collateral: 0,
        })
        .await?;
    Ok(())
}

/// The object id and per-slot specs a deal's manifest describes.
pub fn deal_specs(d: &Deal) -> Result<(atlas_protocol::ObjectId, Vec<SlotSpec>)> {
    let manifest = manifest_of(d)?;
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
