//! The ledger's persistence: blocks by height, the escrow state after the newest block as one
//! record per account, provider and deal (a block writes only the records it changed, together
//! with the block, in one synced RocksDB batch, so a restart resumes at the same height with the
//! same state), the durable mempool of accepted transactions not yet in a block, and the archive
//! of ended deals (out of the live state, still answerable by id).
//!
//! A deal is two records: its terms (which hold the manifest), written once when it opens, and
//! its changing state, rewritten whenever a block changes it.

use atlas_protocol::chain::Block;
use atlas_protocol::escrow::books::{BookKey, BookRecord};
use atlas_protocol::escrow::state::{Changes, Meta};
use atlas_protocol::escrow::SignedTx;
use atlas_protocol::escrow::{Account, Deal, DealState, DealTerms, Escrow, Provider};
use atlas_protocol::DealId;
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

const CF_BLOCKS: &str = "blocks";
const CF_META: &str = "meta";
/// Accepted transactions not yet in a block, by acceptance order (big-endian sequence number).
const CF_MEMPOOL: &str = "mempool";
/// Where the whole state was one record, before per-record state: such a database is refused.
const OLD_STATE_KEY: &[u8] = b"state";
const HEAD_KEY: &[u8] = b"head";
/// The escrow state, one record per account, provider and deal (two for a deal).
const CF_STATE: &str = "state";
/// Ended deals in their final form, by id.
const CF_ARCHIVE: &str = "archive";
/// The state's record layout; a database without it was written by an older version.
const LAYOUT_KEY: &[u8] = b"layout";
const LAYOUT: u32 = 3;
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

/// The newest block's height and header hash, written with every block.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum HeadRecord {
    V1 { height: u64, head_hash: [u8; 32] },
}

/// One record of the escrow state, in `CF_STATE` under `m` (the scalar part), or a kind byte
/// (`a` account, `p` provider, `t` a deal's terms) and the record's 32-byte key, or `b` and a
/// provider's book record's [`BookKey::to_bytes`]. A block writes
/// only the records it changed. A deal's state (`d` and its key) is not one of these: it is
/// [`DEAL_STATE_V1`] followed by the bytes the state root hashed ([`Deal::encode_state`]).
#[derive(Debug, Clone, Deserialize)]
enum StateRecord {
    MetaV1(Meta),
    AccountV1(Account),
    ProviderV1(Provider),
    /// A whole deal, from before terms and state were split (never read: refused by layout);
    /// kept so the later variants keep their tags.
    #[allow(dead_code)]
    RetiredDealV1(()),
    DealTermsV1(DealTerms),
    BookV1(BookRecord),
}

/// The version byte that leads a deal's state record.
const DEAL_STATE_V1: u8 = 1;

/// [`StateRecord`] as written, borrowing what it encodes (the same variants in the same order,
/// so it decodes as a [`StateRecord`]).
#[derive(Serialize)]
enum StateRecordRef<'a> {
    MetaV1(&'a Meta),
    AccountV1(&'a Account),
    ProviderV1(&'a Provider),
    #[allow(dead_code)]
    RetiredDealV1(()),
    DealTermsV1(&'a DealTerms),
    BookV1(&'a BookRecord),
}

/// An ended deal as archived.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum ArchiveRecord {
    V1(Deal),
}

fn state_key(kind: u8, key: &[u8; 32]) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = kind;
    k[1..].copy_from_slice(key);
    k
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
        let cfs = [CF_BLOCKS, CF_META, CF_MEMPOOL, CF_STATE, CF_ARCHIVE]
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
        if self
            .db
            .get_cf(self.cf(CF_META), OLD_STATE_KEY)
            .map_err(db_err)?
            .is_some()
        {
            return Err(LedgerStoreError::Corrupt(
                "a ledger database written by an older version cannot be resumed; start the chain in an empty directory".into(),
            ));
        }
        let Some(bytes) = self.db.get_cf(self.cf(CF_META), HEAD_KEY).map_err(db_err)? else {
            return Ok(None);
        };
        let layout = self
            .db
            .get_cf(self.cf(CF_META), LAYOUT_KEY)
            .map_err(db_err)?;
        if layout.as_deref() != Some(&LAYOUT.to_be_bytes()[..]) {
            return Err(LedgerStoreError::Corrupt(
                "this ledger database was written by another version (its state records have another layout) and cannot be resumed; start the chain in an empty directory".into(),
            ));
        }
        let HeadRecord::V1 { height, head_hash } = postcard::from_bytes(&bytes)
            .map_err(|e| LedgerStoreError::Corrupt(format!("head: {e}")))?;
        let mut meta = None;
        let (mut accounts, mut providers, mut terms, mut states, mut books) = (
            BTreeMap::new(),
            BTreeMap::new(),
            BTreeMap::new(),
            BTreeMap::new(),
            BTreeMap::new(),
        );
        for item in self
            .db
            .iterator_cf(self.cf(CF_STATE), rocksdb::IteratorMode::Start)
        {
            let (k, v) = item.map_err(db_err)?;
            let key = || -> Result<[u8; 32], LedgerStoreError> {
                k.get(1..33)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| LedgerStoreError::Corrupt("state key".into()))
            };
            if k.first() == Some(&b'd') {
                let state = match v.split_first() {
                    Some((&DEAL_STATE_V1, bytes)) => DealState::decode(bytes).ok(),
                    _ => None,
                }
                .ok_or_else(|| LedgerStoreError::Corrupt("a deal's state record".into()))?;
                states.insert(DealId(key()?), state);
                continue;
            }
            let record: StateRecord = postcard::from_bytes(&v)
                .map_err(|e| LedgerStoreError::Corrupt(format!("state record: {e}")))?;
            match record {
                StateRecord::MetaV1(m) => meta = Some(m),
                StateRecord::AccountV1(a) => {
                    accounts.insert(atlas_protocol::PublicKey(key()?), a);
                }
                StateRecord::ProviderV1(p) => {
                    providers.insert(atlas_protocol::PublicKey(key()?), p);
                }
                StateRecord::DealTermsV1(t) => {
                    terms.insert(DealId(key()?), Arc::new(t));
                }
                StateRecord::BookV1(r) => {
                    let key = k
                        .get(1..)
                        .and_then(BookKey::from_bytes)
                        .ok_or_else(|| LedgerStoreError::Corrupt("book key".into()))?;
                    books.insert(key, r);
                }
                StateRecord::RetiredDealV1(()) => {
                    return Err(LedgerStoreError::Corrupt("a retired deal record".into()))
                }
            }
        }
        let meta = meta.ok_or_else(|| LedgerStoreError::Corrupt("no state meta record".into()))?;
        let mut deals = BTreeMap::new();
        for (id, state) in states {
            let t = terms
                .remove(&id)
                .ok_or_else(|| LedgerStoreError::Corrupt(format!("deal {id} has no terms")))?;
            deals.insert(id, Deal::from_state(t, state));
        }
        Ok(Some(Resume {
            height,
            head_hash,
            escrow: Escrow::from_parts(meta, accounts, providers, deals, books),
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

    /// Persists a block and the state records it changed, atomically and durably, and removes
    /// the mempool entries `included` (the sequence numbers of the block's transactions) in the
    /// same batch. What is written is proportional to what the block changed.
    pub fn commit(
        &self,
        block: &Block,
        changes: &Changes,
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
        let state = self.cf(CF_STATE);
        let enc =
            |r: &StateRecordRef| postcard::to_stdvec(r).expect("serializing to a Vec cannot fail");
        batch.put_cf(state, b"m", enc(&StateRecordRef::MetaV1(&changes.meta)));
        for (k, v) in &changes.accounts {
            let key = state_key(b'a', &k.0);
            match v {
                Some(a) => batch.put_cf(state, key, enc(&StateRecordRef::AccountV1(a))),
                None => batch.delete_cf(state, key),
            }
        }
        for (k, v) in &changes.providers {
            let key = state_key(b'p', &k.0);
            match v {
                Some(p) => batch.put_cf(state, key, enc(&StateRecordRef::ProviderV1(p))),
                None => batch.delete_cf(state, key),
            }
        }
        let mut book_key = Vec::with_capacity(1 + BookKey::LEN);
        for (k, v) in &changes.books {
            book_key.clear();
            book_key.push(b'b');
            book_key.extend_from_slice(&k.to_bytes());
            match v {
                Some(r) => batch.put_cf(state, &book_key, enc(&StateRecordRef::BookV1(r))),
                None => batch.delete_cf(state, &book_key),
            }
        }
        for (k, t) in &changes.opened {
            batch.put_cf(
                state,
                state_key(b't', &k.0),
                enc(&StateRecordRef::DealTermsV1(t)),
            );
        }
        let mut record = Vec::new();
        for (k, v) in &changes.deals {
            let key = state_key(b'd', &k.0);
            match v {
                Some(bytes) => {
                    record.clear();
                    record.push(DEAL_STATE_V1);
                    record.extend_from_slice(bytes);
                    batch.put_cf(state, key, &record)
                }
                None => {
                    batch.delete_cf(state, key);
                    batch.delete_cf(state, state_key(b't', &k.0));
                }
            }
        }
        for (k, d) in &changes.ended {
            batch.put_cf(
                self.cf(CF_ARCHIVE),
                k.0,
                postcard::to_stdvec(&ArchiveRecord::V1(d.clone()))
                    .expect("serializing to a Vec cannot fail"),
            );
        }
        batch.put_cf(self.cf(CF_META), LAYOUT_KEY, LAYOUT.to_be_bytes());
        let head = HeadRecord::V1 {
            height: header.height,
            head_hash: header.hash(),
        };
        batch.put_cf(
            self.cf(CF_META),
            HEAD_KEY,
            postcard::to_stdvec(&head).expect("serializing to a Vec cannot fail"),
        );
        let mut w = WriteOptions::default();
        w.set_sync(true);
        self.db.write_opt(batch, &w).map_err(db_err)
    }

    /// An ended deal, from the archive.
    pub fn archived_deal(&self, id: &DealId) -> Result<Option<Deal>, LedgerStoreError> {
        self.db
            .get_cf(self.cf(CF_ARCHIVE), id.0)
            .map_err(db_err)?
            .map(|b| {
                postcard::from_bytes(&b)
                    .map(|ArchiveRecord::V1(d)| d)
                    .map_err(|e| LedgerStoreError::Corrupt(format!("archived deal {id}: {e}")))
            })
            .transpose()
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
