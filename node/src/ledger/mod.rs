//! The ledger service (`atlas ledger run`): the devnet sequencer that hosts the escrow rules.
//!
//! It validates each submitted transaction against the state the next block will have and orders the
//! accepted ones into a block every `block_time`; every `epoch_blocks` blocks it settles an epoch.
//! It keeps one state, changed in place; a block writes only the state records it changed, with the
//! block, in one synced RocksDB batch before anyone is told their transaction is in it. Accepted
//! transactions are written to a durable mempool before `Enqueue` is answered, so an acknowledged
//! transaction survives a crash, and a restart resumes at the same height with the same state and
//! queue. Headers are signed and published on gossipsub.

use crate::net::{NetEvent, NetHandle};
use anyhow::{anyhow, bail, Context as _, Result};
use atlas_protocol::chain::{self, Block, BlockHeader, SignedHeader};
use atlas_protocol::escrow::{Deal, DealIndex, Escrow, Event, Params};
use atlas_protocol::wire::{
    ChainStatus, DealQuery, LedgerRequest, LedgerResponse, Refusal, MAX_PAGE_BYTES, MAX_PAGE_ITEMS,
};
use atlas_protocol::Keypair;
use atlas_storage::ledger_store::{Genesis, LedgerStore};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Most transactions waiting for the next block; more are refused until it is cut.
const MAX_PENDING_TXS: usize = 20_000;
/// The least time between a restart and the first block it cuts.
const RESUME_GRACE: Duration = Duration::from_secs(1);
/// Largest single faucet grant on a devnet ledger.
pub const FAUCET_CAP: u128 = 1_000_000_000_000;

/// Chain settings chosen at genesis.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    pub block_time: Duration,
    pub epoch_blocks: u64,
    pub faucet: bool,
}

#[derive(Debug, Clone, Default)]
struct LedgerMetrics {
    height: Gauge,
    epoch: Gauge,
    txs: Family<Vec<(String, String)>, Counter>,
    paid: Counter,
    slashed: Counter,
}

impl LedgerMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("atlas_ledger");
        r.register("height", "Height of the newest block", m.height.clone());
        r.register("epoch", "Current epoch", m.epoch.clone());
        r.register(
            "transactions",
            "Transactions by kind and result",
            m.txs.clone(),
        );
        r.register(
            "paid_tokens",
            "Tokens paid to holders for proven epochs",
            m.paid.clone(),
        );
        r.register(
            "slashed_tokens",
            "Collateral slashed for missed proofs",
            m.slashed.clone(),
        );
        m
    }
}

/// The sequencer's state.
pub struct Ledger {
    key: Keypair,
    store: Arc<LedgerStore>,
    config: ChainConfig,
    /// Newest block's height and header.
    head: Option<SignedHeader>,
    /// The state the next block will have so far: the newest block's, advanced to the next
    /// block's epoch, with the accepted transactions applied. One state, changed in place: a
    /// block hashes and writes only the records it changed, and nothing is cloned.
    state: Escrow,
    /// Accepted transactions for the next block, with their acceptance sequence numbers.
    pending_txs: Vec<(u64, atlas_protocol::escrow::SignedTx)>,
    /// Accepted transactions not yet written to the durable mempool.
    unsynced: Vec<(u64, atlas_protocol::escrow::SignedTx)>,
    /// `Enqueue` answers held until their transactions are durable.
    held: Vec<(u64, LedgerResponse)>,
    next_seq: u64,
    /// The state has settled an epoch that no block holds yet.
    settled_unblocked: bool,
    /// Requests to answer once the next block is persisted: (request id, tx id).
    waiting: Vec<(u64, [u8; 32])>,
    metrics: LedgerMetrics,
    genesis_beacon: [u8; 32],
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ledger(height {:?})", self.height())
    }
}

impl Ledger {
    /// Opens the ledger in `dir`, resuming where it stopped or starting a new chain.
    pub fn open(
        dir: &std::path::Path,
        key: Keypair,
        mut config: ChainConfig,
        registry: &mut Registry,
    ) -> Result<Self> {
        let store =
            Arc::new(LedgerStore::open(dir).with_context(|| format!("opening {}", dir.display()))?);
        let salt = match store.genesis()? {
            Some(Genesis::V2 { epoch_blocks, salt }) => {
                if epoch_blocks != config.epoch_blocks {
                    tracing::warn!(
                        chain = epoch_blocks,
                        flag = config.epoch_blocks,
                        "this chain started with a different --epoch-blocks; keeping the chain's"
                    );
                    config.epoch_blocks = epoch_blocks;
                }
                salt
            }
            Some(Genesis::V1 { .. }) => bail!(
                "{} holds a chain written by an older version of the ledger, which cannot be resumed; start the chain in an empty directory",
                dir.display()
            ),
            None => {
                let mut salt = [0u8; 32];
                getrandom::fill(&mut salt).map_err(|e| anyhow!("no randomness for the genesis salt: {e}"))?;
                store.set_genesis(Genesis::V2 {
                    epoch_blocks: config.epoch_blocks,
                    salt,
                })?;
                salt
            }
        };
        let (state, head) = match store.resume()? {
            Some(resume) => {
                let block = store
                    .block(resume.height)?
                    .context("the newest block is missing from the ledger database")?;
                (resume.escrow, Some(block.header))
            }
            None => {
                let params = Params {
                    faucet_cap: config.faucet.then_some(FAUCET_CAP),
                    ..Params::default()
                };
                (
                    Escrow::new(params, chain::genesis_beacon(&key.public(), &salt)),
                    None,
                )
            }
        };
        let genesis_beacon = chain::genesis_beacon(&key.public(), &salt);
        let mut ledger = Self {
            genesis_beacon,
            key,
            store,
            config,
            state,
            head,
            pending_txs: Vec::new(),
            unsynced: Vec::new(),
            held: Vec::new(),
            next_seq: 0,
            settled_unblocked: false,
            waiting: Vec::new(),
            metrics: LedgerMetrics::register(registry),
        };
        ledger.prepare_next();
        ledger.restore_mempool()?;
        Ok(ledger)
    }

    /// Takes back the transactions accepted before a stop or a crash and not yet in a block:
    /// each is checked again against the next block's state, and those no longer valid (a proof
    /// for an epoch that has passed, say) are dropped.
    fn restore_mempool(&mut self) -> Result<()> {
        let saved = self.store.mempool()?;
        let mut dropped = Vec::new();
        for (seq, signed) in saved {
            self.next_seq = self.next_seq.max(seq + 1);
            let result = signed
                .verify()
                .map_err(|e| e.to_string())
                .and_then(|tx| self.state.apply(&tx).map_err(|e| e.to_string()));
            match result {
                Ok(()) => self.pending_txs.push((seq, signed)),
                Err(reason) => {
                    tracing::info!(%reason, "a queued transaction is no longer valid; dropped");
                    dropped.push(seq);
                }
            }
        }
        if !self.pending_txs.is_empty() {
            tracing::info!(
                restored = self.pending_txs.len(),
                "queued transactions restored for the next block"
            );
        }
        if !dropped.is_empty() {
            self.store.drop_from_mempool(&dropped)?;
        }
        Ok(())
    }

    /// Whether the state holds an epoch settlement that no block holds yet. The service cuts the
    /// block that opens the epoch at once, so what queries show (answered from the state) is
    /// never more than one block ahead of the chain, and only by transactions already durable.
    pub fn settlement_pending(&self) -> bool {
        self.settled_unblocked
    }

    /// Whether accepted transactions still wait to be made durable.
    pub fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
    }

    /// Writes the accepted transactions to the durable mempool in one synced batch and returns
    /// the `Enqueue` answers that were waiting for it.
    pub async fn sync_mempool(&mut self) -> Result<Vec<(u64, LedgerResponse)>> {
        if !self.unsynced.is_empty() {
            let batch = std::mem::take(&mut self.unsynced);
            let store = self.store.clone();
            tokio::task::spawn_blocking(move || store.add_to_mempool(&batch))
                .await
                .context("the mempool writer panicked")?
                .context("persisting accepted transactions")?;
        }
        Ok(std::mem::take(&mut self.held))
    }

    /// The chain's id.
    pub fn chain_id(&self) -> atlas_protocol::escrow::ChainId {
        *self.state.chain()
    }

    /// Height of the newest block.
    pub fn height(&self) -> Option<u64> {
        self.head.as_ref().map(|h| h.header.height)
    }

    fn next_height(&self) -> u64 {
        self.height().map_or(0, |h| h + 1)
    }

    fn head_hash(&self) -> [u8; 32] {
        self.head.as_ref().map_or([0; 32], |h| h.header.hash())
    }

    /// Readies the state for the next block: settles an epoch if the next block opens one.
    fn prepare_next(&mut self) {
        let next = self.next_height();
        if next > 0 && next.is_multiple_of(self.config.epoch_blocks) {
            let events = self.state.advance_epoch(self.head_hash());
            self.settled_unblocked = true;
            self.record_events(&events);
        }
        self.metrics.epoch.set(self.state.epoch() as i64);
    }

    fn record_events(&self, events: &[Event]) {
        for e in events {
            match e {
                Event::Paid {
                    deal,
                    slot,
                    holder,
                    amount,
                } => {
                    self.metrics.paid.inc_by(*amount as u64);
                    tracing::debug!(deal = %deal.short(), slot, %holder, amount, "paid");
                }
                Event::Missed {
                    deal,
                    slot,
                    holder,
                    slashed,
                    misses,
                } => {
                    self.metrics.slashed.inc_by(*slashed as u64);
                    tracing::info!(deal = %deal.short(), slot, %holder, slashed, misses, "missed proof");
                }
                Event::Freed { deal, slot, reason } => {
                    tracing::info!(deal = %deal.short(), slot, ?reason, "slot freed");
                }
                Event::DealEnded { deal, refunded } => {
                    tracing::info!(deal = %deal.short(), refunded, "deal ended");
                }
                other => tracing::debug!(?other, "epoch event"),
            }
        }
    }

    fn status(&self) -> ChainStatus {
        ChainStatus {
            height: self.height().unwrap_or(0),
            // The epoch and beacon the next block is in: what a proof submitted now must answer.
            epoch: self.state.epoch(),
            beacon: *self.state.beacon(),
            epoch_blocks: self.config.epoch_blocks,
            block_time_ms: self.config.block_time.as_millis() as u64,
            params: self.state.params().clone(),
            head: self.head.clone(),
            sequencer: self.key.public(),
            chain: *self.state.chain(),
            genesis_beacon: self.genesis_beacon,
        }
    }

    /// Answers a request now, or returns `None` if it waits for the next block.
    pub fn handle(&mut self, id: u64, request: LedgerRequest) -> Result<Option<LedgerResponse>> {
        // Everything answers from the state the next block will have, so what a submitter was
        // told is accepted shows at once (its nonce, a deal it opened).
        let s = &self.state;
        Ok(Some(match request {
            LedgerRequest::Submit(signed) => match self.accept(signed) {
                Ok(tx_id) => {
                    self.waiting.push((id, tx_id));
                    return Ok(None);
                }
                Err(reason) => LedgerResponse::Refused(reason),
            },
            // Answered once the transaction is durable (`sync_mempool`), so an accepted
            // transaction is in a block after any restart.
            LedgerRequest::Enqueue(signed) => match self.accept(signed) {
                Ok(tx_id) => {
                    self.held.push((id, LedgerResponse::Accepted { tx_id }));
                    return Ok(None);
                }
                Err(reason) => LedgerResponse::Refused(reason),
            },
            LedgerRequest::Status => LedgerResponse::Status(Box::new(self.status())),
            // The latest accepted view, so a submitter's next nonce counts queued transactions.
            LedgerRequest::Account(key) => LedgerResponse::Account(s.account(&key)),
            LedgerRequest::Provider(key) => LedgerResponse::Provider(s.provider(&key).cloned()),
            // A live deal, or an ended one from the archive.
            LedgerRequest::Deal(id) => LedgerResponse::Deal(match s.deal(&id) {
                Some(d) => Some(d.clone()),
                None => self.store.archived_deal(&id)?,
            }),
            LedgerRequest::Block(height) => LedgerResponse::Block(self.store.block(height)?),
            LedgerRequest::ProviderPage { after } => {
                let from = match after {
                    Some(k) => Bound::Excluded(k),
                    None => Bound::Unbounded,
                };
                let (items, next) = page(s.providers().range((from, Bound::Unbounded)), |_| true);
                LedgerResponse::ProviderPage { items, next }
            }
            LedgerRequest::DealPage { query, after } => {
                let (items, next) = self.deal_page(query, after);
                LedgerResponse::DealPage { items, next }
            }
            LedgerRequest::Providers
            | LedgerRequest::DealsOf(_)
            | LedgerRequest::HeldBy(_)
            | LedgerRequest::Find(_)
            | LedgerRequest::Repairable => LedgerResponse::Error(
                "this listing request is retired; ask for it page by page (ProviderPage, DealPage)"
                    .into(),
            ),
        }))
    }

    /// One page of the live deals `query` selects. The provider, creator and repair queries are
    /// answered from the escrow's indices, so their cost is the page's, not the state's.
    fn deal_page(
        &mut self,
        query: DealQuery,
        after: Option<atlas_protocol::DealId>,
    ) -> (
        Vec<(atlas_protocol::DealId, Deal)>,
        Option<atlas_protocol::DealId>,
    ) {
        let s = &mut self.state;
        match query {
            DealQuery::OfCreator(c) => {
                page(s.indexed_deals(DealIndex::OfCreator(c), after), |_| true)
            }
            DealQuery::HeldBy(p) => page(s.indexed_deals(DealIndex::HeldBy(p), after), |_| true),
            DealQuery::Repairable => page(s.indexed_deals(DealIndex::Repairable, after), |_| true),
            DealQuery::Matching(prefix) => {
                let from = match after {
                    Some(k) => Bound::Excluded(k),
                    None => Bound::Unbounded,
                };
                let prefix = prefix.to_ascii_lowercase();
                // A full object id is looked up in the object index, not by a scan.
                match prefix.parse::<atlas_protocol::ObjectId>() {
                    Ok(object) if prefix.len() == 64 => {
                        let ids: Vec<_> = s.deals_of_object(&object).map(|(id, _)| *id).collect();
                        page(s.deals().range((from, Bound::Unbounded)), |(id, _)| {
                            ids.contains(id)
                        })
                    }
                    _ => page(s.deals().range((from, Bound::Unbounded)), |(id, d)| {
                        d.terms.object.to_string().starts_with(&prefix)
                            || id.to_string().starts_with(&prefix)
                    }),
                }
            }
        }
    }

    /// Validates a transaction against the next block's state and queues it.
    fn accept(&mut self, signed: atlas_protocol::escrow::SignedTx) -> Result<[u8; 32], Refusal> {
        let tx = signed
            .verify()
            .map_err(|e| Refusal::Envelope(e.to_string()))?;
        let kind = tx.body.kind().to_string();
        if self.pending_txs.len() >= MAX_PENDING_TXS {
            return Err(Refusal::Busy);
        }
        let result = self.state.apply(&tx);
        let label = if result.is_ok() {
            "accepted"
        } else {
            "rejected"
        };
        self.metrics
            .txs
            .get_or_create(&vec![
                ("kind".into(), kind),
                ("result".into(), label.into()),
            ])
            .inc();
        result.map_err(Refusal::Escrow)?;
        let tx_id = signed.id();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending_txs.push((seq, signed.clone()));
        self.unsynced.push((seq, signed));
        Ok(tx_id)
    }

    /// Cuts, persists and returns the next block; the answers it owes are in `waiting` order.
    pub async fn cut_block(&mut self) -> Result<(SignedHeader, Vec<(u64, LedgerResponse)>)> {
        let height = self.next_height();
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let (included, txs): (Vec<u64>, Vec<_>) =
            std::mem::take(&mut self.pending_txs).into_iter().unzip();
        let (state_root, changes) = self.state.take_changes();
        self.settled_unblocked = false;
        let header = BlockHeader {
            chain: *self.state.chain(),
            height,
            epoch: self.state.epoch(),
            prev: self.head_hash(),
            time_ms,
            txs_root: chain::txs_root(&txs),
            state_root,
            sequencer: self.key.public(),
        }
        .sign(&self.key);
        let block = Block {
            header: header.clone(),
            txs,
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.commit(&block, &changes, &included))
            .await
            .context("the block writer panicked")?
            .context("persisting a block")?;
        self.head = Some(header.clone());
        self.metrics.height.set(height as i64);
        // The block holds every accepted transaction, so held `Enqueue` answers are due too.
        self.unsynced.clear();
        let answers = std::mem::take(&mut self.waiting)
            .into_iter()
            .map(|(id, tx_id)| (id, LedgerResponse::Included { height, tx_id }))
            .chain(std::mem::take(&mut self.held))
            .collect();
        self.prepare_next();
        Ok((header, answers))
    }
}

/// Takes the records of `items` that `keep` selects, up to a page's bounds; the second value is
/// the cursor to continue from when the page is full.
fn page<'a, K: Copy + Serialize + 'a, V: Clone + Serialize + 'a>(
    items: impl Iterator<Item = (&'a K, &'a V)>,
    mut keep: impl FnMut((&K, &V)) -> bool,
) -> (Vec<(K, V)>, Option<K>) {
    let mut out = Vec::new();
    let mut bytes = 0;
    for (k, v) in items {
        if !keep((k, v)) {
            continue;
        }
        if out.len() == MAX_PAGE_ITEMS || bytes >= MAX_PAGE_BYTES {
            let next = out.last().map(|(k, _): &(K, V)| *k);
            return (out, next);
        }
        bytes += postcard::to_stdvec(v).map_or(0, |b| b.len());
        out.push((*k, v.clone()));
    }
    (out, None)
}

/// Runs the ledger until `shutdown`.
pub async fn run(
    ledger: Ledger,
    net: NetHandle,
    events: mpsc::Receiver<NetEvent>,
    shutdown: CancellationToken,
) -> Result<()> {
    match serve(ledger, net, events, shutdown.clone()).await {
        // The network stops with the same token: an answer it could no longer send is not a
        // failure of the ledger (what was accepted is in the durable mempool or a block).
        Err(e) if shutdown.is_cancelled() => {
            tracing::debug!(error = %format!("{e:#}"), "stopped while answering");
            Ok(())
        }
        other => other,
    }
}

async fn serve(
    mut ledger: Ledger,
    net: NetHandle,
    mut events: mpsc::Receiver<NetEvent>,
    shutdown: CancellationToken,
) -> Result<()> {
    // After a restart the first block waits a little longer, so submitters that lost their
    // connection can reach the ledger again before the chain moves on.
    let first = if ledger.height().is_some() {
        ledger.config.block_time.max(RESUME_GRACE)
    } else {
        ledger.config.block_time
    };
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + first,
        ledger.config.block_time,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                // What was accepted goes into a block before the ledger stops, so a graceful
                // stop loses nothing it acknowledged. (After a kill -9 the queue is lost; the
                // submitters resend what the chain does not show.)
                if !ledger.pending_txs.is_empty() {
                    let (header, answers) = ledger.cut_block().await?;
                    for (id, answer) in answers {
                        let _ = net.respond(id, answer).await;
                    }
                    let _ = net.publish_header(&header).await;
                    tracing::info!(height = header.header.height, "queued transactions committed before stopping");
                }
                break;
            }
            event = events.recv() => match event {
                Some(NetEvent::LedgerRequest { id, request, .. }) => {
                    let answer = match ledger.handle(id, request) {
                        Ok(a) => a,
                        Err(e) => Some(LedgerResponse::Error(format!("{e:#}"))),
                    };
                    if let Some(answer) = answer {
                        net.respond(id, answer).await?;
                    }
                    // Group commit: accepted transactions are made durable together once no
                    // further request is waiting (or many are pending), then answered.
                    if ledger.has_unsynced() && (events.is_empty() || ledger.unsynced.len() >= 1024) {
                        for (id, answer) in ledger.sync_mempool().await? {
                            net.respond(id, answer).await?;
                        }
                    }
                }
                Some(NetEvent::Header(_)) => {}
                None => break,
            },
            _ = tick.tick() => {
                loop {
                    let (header, answers) = ledger.cut_block().await?;
                    for (id, answer) in answers {
                        net.respond(id, answer).await?;
                    }
                    net.publish_header(&header).await?;
                    if !ledger.settlement_pending() {
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}
