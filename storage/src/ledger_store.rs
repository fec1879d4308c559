//! The ledger's persistence: blocks by height and the escrow state after the newest block, written
//! together in one synced RocksDB batch so a restart resumes at the same height with the same state.

use atlas_protocol::chain::Block;
use atlas_protocol::escrow::Escrow;
use atlas_protocol::escrow::SignedTx;
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use std::path::Path;

const CF_BLOCKS: &str = "blocks";
const CF_META: &str = "meta";
/// Accepted transactions not yet in a block, by acceptance order (big-endian sequence number).
const CF_MEMPOOL: &str = "mempool";
const STATE_KEY: &[u8] = b"state";
const GENESIS_KEY: &[u8] = b"genesis";

/// Settings fixed when the chain starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Genesis {
    /// Chains from before chain ids; they cannot be resumed (their state has another layout).
    V1 { epoch_blocks: u64 },
    /// `salt` is drawn at random when the chain starts: it makes the chain's id (and so every
    /// signature made for it) unique even when a sequencer key starts a second chain.
    V2 { epoch_blocks: u64, salt: [u8; 32] },
}

/// Why the ledger store failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerStoreError {
    #[error("ledger database: {0}")]
    Db(String),
    #[error("ledger record is corrupt: {0}")]
    Corrupt(String),
}

fn db_err(e: rocksdb::Error) -> LedgerStoreError {
    LedgerStoreError::Db(e.into_string())
}

/// The state record: the escrow after block `height`, and that block's header hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum StateRecord {
    V1 {
        height: u64,
        head_hash: [u8; 32],
        escrow: Escrow,
    },
}

/// A queued transaction as persisted.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum MempoolRecord {
    V1(SignedTx),
}

/// What a restart resumes from.
#[derive(Debug, Clone)]
pub struct Resume {
    /// Height of the newest persisted block.
    pub height: u64,
    pub head_hash: [u8; 32],
    pub escrow: Escrow,
}

/// RocksDB-backed ledger store.
#[derive(Debug)]
pub struct LedgerStore {
    db: DB,
}

impl LedgerStore {
    pub fn open(dir: &Path) -> Result<Self, LedgerStoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        let cfs = [CF_BLOCKS, CF_META, CF_MEMPOOL]
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(db_err)?;
        Ok(Self { db })
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column families are created at open")
    }

    /// The genesis settings, once recorded.
    pub fn genesis(&self) -> Result<Option<Genesis>, LedgerStoreError> {
        self.db
            .get_cf(self.cf(CF_META), GENESIS_KEY)
            .map_err(db_err)?
            .map(|b| {
                postcard::from_bytes(&b)
                    .map_err(|e| LedgerStoreError::Corrupt(format!("genesis: {e}")))
            })
            .transpose()
    }

    /// Records the genesis settings (durably).
    pub fn set_genesis(&self, genesis: Genesis) -> Result<(), LedgerStoreError> {
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db
            .put_cf_opt(
                self.cf(CF_META),
                GENESIS_KEY,
                postcard::to_stdvec(&genesis).expect("serializing to a Vec cannot fail"),
                &w,
            )
            .map_err(db_err)
    }

    /// The state to resume from, if any block was ever persisted.
    pub fn resume(&self) -> Result<Option<Resume>, LedgerStoreError> {
        let Some(bytes) = self
            .db
            .get_cf(self.cf(CF_META), STATE_KEY)
            .map_err(db_err)?
        else {
            return Ok(None);
        };
        let StateRecord::V1 {
            height,
            head_hash,
            escrow,
        } = postcard::from_bytes(&bytes)
            .map_err(|e| {
            LedgerStoreError::Corrupt(format!(
                "state: {e} (a ledger database written by an older version cannot be resumed; start the chain in an empty directory)"
            ))
        })?;
        Ok(Some(Resume {
            height,
            head_hash,
            escrow,
        }))
    }

    /// Records accepted transactions (with their acceptance sequence numbers) durably, in one
    /// synced batch: once this returns, a restart finds them.
    pub fn add_to_mempool(&self, txs: &[(u64, SignedTx)]) -> Result<(), LedgerStoreError> {
        let mut batch = WriteBatch::default();
        for (seq, tx) in txs {
            batch.put_cf(
                self.cf(CF_MEMPOOL),
                seq.to_be_bytes(),
                postcard::to_stdvec(&MempoolRecord::V1(tx.clone()))
                    .expect("serializing to a Vec cannot fail"),
            );
        }
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db.write_opt(batch, &w).map_err(db_err)
    }

    /// The accepted transactions no block holds yet, in acceptance order.
    pub fn mempool(&self) -> Result<Vec<(u64, SignedTx)>, LedgerStoreError> {
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.cf(CF_MEMPOOL), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item.map_err(db_err)?;
            let seq: [u8; 8] = k
                .as_ref()
                .try_into()
                .map_err(|_| LedgerStoreError::Corrupt("mempool key".into()))?;
            let MempoolRecord::V1(tx) = postcard::from_bytes(&v)
                .map_err(|e| LedgerStoreError::Corrupt(format!("mempool: {e}")))?;
            out.push((u64::from_be_bytes(seq), tx));
        }
        Ok(out)
    }

    /// Forgets mempool entries (transactions a restart found no longer valid).
    pub fn drop_from_mempool(&self, seqs: &[u64]) -> Result<(), LedgerStoreError> {
        let mut batch = WriteBatch::default();
        for seq in seqs {
            batch.delete_cf(self.cf(CF_MEMPOOL), seq.to_be_bytes());
        }
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db.write_opt(batch, &w).map_err(db_err)
    }

    /// Persists a block and the state after it, atomically and durably, and removes the mempool
    /// entries `included` (the sequence numbers of the block's transactions) in the same batch.
    pub fn commit(
        &self,
        block: &Block,
        escrow: &Escrow,
        included: &[u64],
    ) -> Result<(), LedgerStoreError> {
        let header = &block.header.header;
        let mut batch = WriteBatch::default();
        for seq in included {
            batch.delete_cf(self.cf(CF_MEMPOOL), seq.to_be_bytes());
        }
        batch.put_cf(
            self.cf(CF_BLOCKS),
            header.height.to_be_bytes(),
            postcard::to_stdvec(block).expect("serializing to a Vec cannot fail"),
        );
        let rec = StateRecord::V1 {
            height: header.height,
            head_hash: header.hash(),
            escrow: escrow.clone(),
        };
        batch.put_cf(
            self.cf(CF_META),
            STATE_KEY,
            postcard::to_stdvec(&rec).expect("serializing to a Vec cannot fail"),
        );
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db.write_opt(batch, &w).map_err(db_err)
    }

    /// The block at `height`, if persisted.
    pub fn block(&self, height: u64) -> Result<Option<Block>, LedgerStoreError> {
        self.db
            .get_cf(self.cf(CF_BLOCKS), height.to_be_bytes())
            .map_err(db_err)?
            .map(|b| {
                postcard::from_bytes(&b)
                    .map_err(|e| LedgerStoreError::Corrupt(format!("block {height}: {e}")))
            })
            .transpose()
    }
}
