//! The store actor: one thread owns the provider's slot store; everything else sends it jobs
//! through a bounded channel and awaits the answer, so no async task ever blocks on disk and
//! the store's counts (slots held, bytes stored) are kept by the one owner instead of rescanned.

use super::metrics::ProviderMetrics;
use atlas_protocol::challenge::{Challenge, StorageProof};
use atlas_protocol::tree::{Cv, VerifiedShard};
use atlas_storage::{
    PutOutcome, RocksSlotStore, SlotInfo, SlotKey, SlotSpec, SlotStore, StoreError, Usage,
};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use tokio::sync::{mpsc, oneshot};

/// Jobs waiting for the store thread; a sender waits when it is full.
const STORE_QUEUE: usize = 64;

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreCallError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the slot store has shut down")]
    Closed,
    #[error("slot {0} is not held here")]
    NotHeld(SlotKey),
}

type Result<T, E = StoreCallError> = std::result::Result<T, E>;

/// What the store thread owns.
struct Owned {
    store: RocksSlotStore,
    /// Every slot in the store, kept as slots are created and deleted (for the slots gauge).
    slots: HashSet<SlotKey>,
    metrics: ProviderMetrics,
}

impl Owned {
    fn counted(&mut self) {
        self.metrics
            .stored_bytes
            .set(self.store.usage().stored as i64);
        self.metrics.slots.set(self.slots.len() as i64);
    }
}

enum Job {
    Run(Box<dyn FnOnce(&mut Owned) + Send>),
    /// Ends the thread (after every job queued before it).
    Stop,
}

/// A cheap handle to the store thread.
#[derive(Clone)]
pub struct StoreHandle {
    jobs: mpsc::Sender<Job>,
    dir: PathBuf,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreHandle({})", self.dir.display())
    }
}

/// The store thread, to be joined at shutdown (after which the store is closed and its
/// directory may be opened again).
#[derive(Debug)]
pub struct StoreThread {
    jobs: mpsc::Sender<Job>,
    thread: std::thread::JoinHandle<()>,
}

impl StoreThread {
    /// Ends the thread once the jobs queued before now are done, and waits for it.
    pub async fn stop(self) {
        let _ = self.jobs.send(Job::Stop).await;
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Opens the store in `dir` on its own thread.
pub(crate) fn open(
    dir: &Path,
    capacity: u64,
    metrics: ProviderMetrics,
) -> Result<(StoreHandle, StoreThread)> {
    let store = RocksSlotStore::open(dir, capacity)?;
    let slots = store.list()?.into_iter().map(|(k, _)| k).collect();
    let mut owned = Owned {
        store,
        slots,
        metrics,
    };
    owned.counted();
    let (jobs, mut queue) = mpsc::channel::<Job>(STORE_QUEUE);
    let thread = std::thread::Builder::new()
        .name("slot-store".into())
        .spawn(move || {
            // Jobs run in order, until a stop request or every handle is gone. The store closes
            // (and releases its directory) when this returns.
            while let Some(Job::Run(job)) = queue.blocking_recv() {
                job(&mut owned);
            }
        })
        .map_err(|e| {
            StoreCallError::Store(StoreError::Io {
                path: dir.to_path_buf(),
                source: e,
            })
        })?;
    Ok((
        StoreHandle {
            jobs: jobs.clone(),
            dir: dir.to_path_buf(),
        },
        StoreThread { jobs, thread },
    ))
}

impl StoreHandle {
    /// Where the store lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `f` on the store thread and returns what it returns.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Owned) -> T + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job::Run(Box::new(move |owned: &mut Owned| {
                let _ = reply.send(f(owned));
            })))
            .await
            .map_err(|_| StoreCallError::Closed)?;
        answer.await.map_err(|_| StoreCallError::Closed)
    }

    /// Stores a verified shard, creating its slot first if needed.
    pub async fn put(
        &self,
        key: SlotKey,
        spec: SlotSpec,
        shard: VerifiedShard,
    ) -> Result<PutOutcome> {
        self.call(move |o| {
            o.store.create_slot(key, spec)?;
            o.slots.insert(key);
            let outcome = o.store.put_shard(key, &shard)?;
            o.counted();
            Ok(outcome)
        })
        .await?
    }

    /// Shard `stripe` of a held slot, with the sibling CVs that prove it.
    pub async fn shard(&self, key: SlotKey, stripe: u64) -> Result<(Vec<u8>, Vec<Cv>)> {
        self.call(move |o| {
            let info = o.store.info(key)?.ok_or(StoreCallError::NotHeld(key))?;
            let c = info.spec.shard_size;
            let bytes = o.store.read(key, stripe * c, c)?;
            let siblings = o.store.shard_siblings(key, stripe)?;
            Ok((bytes, siblings))
        })
        .await?
    }

    /// Slots whose files are missing or of the wrong length (see [`RocksSlotStore::misfiled`]).
    pub async fn misfiled(&self) -> Result<Vec<SlotKey>> {
        self.call(|o| Ok(o.store.misfiled()?)).await?
    }

    pub async fn info(&self, key: SlotKey) -> Result<Option<SlotInfo>> {
        self.call(move |o| Ok(o.store.info(key)?)).await?
    }

    /// Which of `keys` are held whole.
    pub async fn complete(&self, keys: Vec<SlotKey>) -> Result<Vec<bool>> {
        self.call(move |o| {
            keys.iter()
                .map(|k| Ok(o.store.info(*k)?.is_some_and(|i| i.complete())))
                .collect()
        })
        .await?
    }

    pub async fn list(&self) -> Result<Vec<(SlotKey, SlotInfo)>> {
        self.call(|o| Ok(o.store.list()?)).await?
    }

    pub async fn usage(&self) -> Result<Usage> {
        self.call(|o| o.store.usage()).await
    }

    /// What the disk can still take for new slots (see [`RocksSlotStore::disk_room`]).
    pub async fn disk_room(&self) -> Result<u64> {
        Ok(self.call(|o| o.store.disk_room()).await??)
    }

    /// The capacity to offer on the ledger: at most `configured`, and no more than the slots
    /// already reserved plus what the disk can still take.
    pub async fn offered(&self, configured: u64) -> Result<u64> {
        let reserved = self.usage().await?.reserved;
        let room = self.disk_room().await?;
        Ok(configured.min(reserved.saturating_add(room)))
    }

    /// Answers each challenge (in one job, so a round of proofs queues once).
    pub async fn prove<T: Send + 'static>(
        &self,
        challenges: Vec<(T, SlotKey, Challenge)>,
    ) -> Result<Vec<(T, Result<StorageProof, StoreError>)>> {
        self.call(move |o| {
            challenges
                .into_iter()
                .map(|(tag, key, ch)| (tag, o.store.prove(key, &ch)))
                .collect()
        })
        .await
    }

    /// Deletes slots; returns the ones that were there.
    pub async fn delete(&self, keys: Vec<SlotKey>) -> Result<Vec<SlotKey>> {
        self.call(move |o| {
            let mut gone = Vec::new();
            for key in keys {
                if o.store.delete_slot(key)? {
                    gone.push(key);
                }
                o.slots.remove(&key);
            }
            o.counted();
            Ok(gone)
        })
        .await?
    }

    /// Moves a rebuilt slot file into the store once it hashes to the slot's root.
    pub async fn import(&self, key: SlotKey, spec: SlotSpec, path: PathBuf) -> Result<()> {
        self.call(move |o| {
            o.store.import_slot(key, spec, &path)?;
            o.slots.insert(key);
            o.counted();
            Ok(())
        })
        .await?
    }
}
