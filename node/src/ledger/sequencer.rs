//! The sequencer: validates each submitted transaction against the state the next block will
//! have and orders the accepted ones into a block every `block_time`; every `epoch_blocks`
//! blocks it settles an epoch. It keeps one state, changed in place; a block writes only the
//! state records it changed, with the block, in one synced RocksDB batch before anyone is told
//! their transaction is in it.

use super::metrics::LedgerMetrics;
use super::{ChainConfig, SequencerError, FAUCET_CAP, MAX_PENDING_TXS};
use atlas_protocol::chain::{self, Block, BlockHeader, SignedHeader};
use atlas_protocol::escrow::{Escrow, Event, Params};
use atlas_protocol::wire::{ChainStatus, LedgerResponse, Refusal};
use atlas_protocol::Keypair;
use atlas_storage::ledger_store::{Genesis, LedgerStore};
use prometheus_client::registry::Registry;
use std::sync::Arc;

type Result<T, E = SequencerError> = std::result::Result<T, E>;

/// The sequencer's state.
pub struct Ledger {
    key: Keypair,
    pub(super) store: Arc<LedgerStore>,
    pub(super) config: ChainConfig,
    /// Newest block's height and header.
    head: Option<SignedHeader>,
    /// The state the next block will have so far: the newest block's, advanced to the next
    /// block's epoch, with the accepted transactions applied. One state, changed in place: a
    /// block hashes and writes only the records it changed, and nothing is cloned.
    pub(super) state: Escrow,
    /// Accepted transactions for the next block, with their acceptance sequence numbers.
    pub(super) pending_txs: Vec<(u64, atlas_protocol::escrow::SignedTx)>,
    /// Accepted transactions not yet written to the durable mempool.
    pub(super) unsynced: Vec<(u64, atlas_protocol::escrow::SignedTx)>,
    /// `Enqueue` answers held until their transactions are durable.
    pub(super) held: Vec<(u64, LedgerResponse)>,
    next_seq: u64,
    /// The state has settled an epoch that no block holds yet.
    settled_unblocked: bool,
    /// Requests to answer once the next block is persisted: (request id, tx id).
    pub(super) waiting: Vec<(u64, [u8; 32])>,
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
        let store = Arc::new(LedgerStore::open(dir)?);
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
            Some(Genesis::V1 { .. }) => {
                return Err(SequencerError::OldChain(dir.display().to_string()))
            }
            None => {
                let mut salt = [0u8; 32];
                getrandom::fill(&mut salt)
                    .map_err(|e| SequencerError::Randomness(e.to_string()))?;
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
                    .ok_or(SequencerError::MissingHead)?;
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
            tokio::task::spawn_blocking(move || store.add_to_mempool(&batch)).await??;
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

    pub(super) fn next_height(&self) -> u64 {
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

    pub(super) fn status(&self) -> ChainStatus {
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

    /// Validates a transaction against the next block's state and queues it.
    pub(super) fn accept(
        &mut self,
        signed: atlas_protocol::escrow::SignedTx,
    ) -> Result<[u8; 32], Refusal> {
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
        tokio::task::spawn_blocking(move || store.commit(&block, &changes, &included)).await??;
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
