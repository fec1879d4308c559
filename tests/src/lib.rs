//! Harness for Atlas's end-to-end tests: real nodes (real libp2p on loopback, real RocksDB in temp
//! folders) started in one process, each with its own shutdown.

pub mod hostile;

use anyhow::Result;
use atlas_node::client::LedgerClient;
use atlas_node::ledger::{self, ChainConfig, Ledger};
use atlas_node::net::{self, Multiaddr, NetConfig};
use atlas_protocol::Keypair;
use prometheus_client::registry::Registry;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A fresh key from the OS's randomness.
pub fn new_key() -> Keypair {
    let mut secret = [0u8; 32];
    getrandom_fill(&mut secret);
    Keypair::from_secret(secret)
}

fn getrandom_fill(buf: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .expect("the OS provides randomness");
}

/// A running ledger.
#[derive(Debug)]
pub struct LedgerNode {
    pub key: Keypair,
    /// Its TCP address with /p2p/.
    pub addr: Multiaddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<()>>,
    net_task: tokio::task::JoinHandle<()>,
    dir: std::path::PathBuf,
    config: ChainConfig,
}

impl LedgerNode {
    /// Starts a ledger with its database in `dir`.
    pub async fn start(dir: &Path, key: Keypair, config: ChainConfig) -> Result<Self> {
        Self::start_on(dir, key, config, "/ip4/127.0.0.1/tcp/0".parse()?).await
    }

    /// Starts a ledger listening on `listen` (a restart on the address its clients know).
    pub async fn start_on(
        dir: &Path,
        key: Keypair,
        config: ChainConfig,
        listen: Multiaddr,
    ) -> Result<Self> {
        let shutdown = CancellationToken::new();
        let mut registry = Registry::default();
        // A ledger just killed in this process may still hold its database lock for a moment
        // (a write it had handed to a blocking thread finishing); a killed process would have
        // released it with its death. Wait for it.
        let ledger = wait_for(
            "the ledger database to be free",
            Duration::from_secs(30),
            || {
                let r = Ledger::open(dir, key.clone(), config.clone(), &mut registry);
                async move {
                    match r {
                        Ok(l) => Ok(Some(l)),
                        Err(e) if format!("{e:#}").contains("lock") => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            },
        )
        .await?;
        let (handle, events, net_task) = net::start(
            &key,
            NetConfig {
                listen: vec![listen],
                name: "ledger".into(),
            },
            &mut registry,
            shutdown.clone(),
        )
        .await?;
        let addr = handle.listen_addrs()[0].clone();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let r = ledger::run(ledger, handle, events, stop.clone()).await;
            stop.cancel();
            r
        });
        Ok(Self {
            net_task,
            dir: dir.to_path_buf(),
            config,
            key,
            addr,
            shutdown,
            task,
        })
    }

    /// Stops the ledger as SIGTERM does (what it queued goes into a last block) and waits until
    /// its database is closed.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        let r = self.task.await?;
        let _ = self.net_task.await;
        r
    }

    /// Stops the ledger as a kill -9 would as far as its clients can tell: it ends at once, and
    /// transactions it had accepted but not yet put in a block are gone. Waits until its database
    /// is closed.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        self.shutdown.cancel();
        let _ = self.net_task.await;
    }

    /// Stops the ledger (killed, or stopped as SIGTERM does) and starts it again on the same
    /// database, key and address.
    pub async fn restart(self, kill: bool) -> Result<Self> {
        let listen: Multiaddr = self
            .addr
            .iter()
            .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
            .collect();
        let (dir, key, config) = (self.dir.clone(), self.key.clone(), self.config.clone());
        if kill {
            self.kill().await;
        } else {
            self.stop().await?;
        }
        Self::start_on(&dir, key, config, listen).await
    }

    pub async fn client(&self, key: &Keypair) -> Result<LedgerClient> {
        LedgerClient::connect(key, self.addr.clone()).await
    }
}

/// A fast devnet chain for tests.
pub fn test_chain() -> ChainConfig {
    ChainConfig {
        block_time: Duration::from_millis(100),
        epoch_blocks: 5,
        faucet: true,
    }
}

/// A running provider.
#[derive(Debug)]
pub struct ProviderNode {
    pub key: Keypair,
    dir: std::path::PathBuf,
    ledger: Multiaddr,
    price: u128,
    pub provider: std::sync::Arc<atlas_node::provider::Provider>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ProviderNode {
    /// Starts a provider with its store in `dir`, registered at `price` per GiB-epoch.
    pub async fn start(dir: &Path, ledger: &Multiaddr, price: u128) -> Result<Self> {
        Self::start_with_key(dir, ledger, price, new_key()).await
    }

    /// Starts a provider with a given key (to restart one on its own store).
    pub async fn start_with_key(
        dir: &Path,
        ledger: &Multiaddr,
        price: u128,
        key: Keypair,
    ) -> Result<Self> {
        let shutdown = CancellationToken::new();
        let mut registry = Registry::default();
        let (provider, net_task) = atlas_node::provider::Provider::start(
            dir,
            key.clone(),
            atlas_node::provider::ProviderConfig {
                capacity: 1 << 30,
                price,
                collateral: 1_000_000,
                listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
                gc_grace_epochs: 2,
            },
            ledger.clone(),
            &mut registry,
            shutdown.clone(),
        )
        .await?;
        let streams = provider.serve_streams(shutdown.clone())?;
        let prover = tokio::spawn(
            provider
                .clone()
                .run_prover(Duration::from_millis(50), shutdown.clone()),
        );
        let repairer = tokio::spawn(
            provider
                .clone()
                .run_repairer(Duration::from_millis(100), shutdown.clone()),
        );
        Ok(Self {
            key,
            dir: dir.to_path_buf(),
            ledger: ledger.clone(),
            price,
            provider,
            shutdown,
            tasks: vec![net_task, streams, prover, repairer],
        })
    }

    /// Stops the provider and starts it again on the same store and key, as after a reboot.
    pub async fn restart(self) -> Result<Self> {
        let (dir, ledger, price, key) = (
            self.dir.clone(),
            self.ledger.clone(),
            self.price,
            self.key.clone(),
        );
        self.stop().await;
        Self::start_with_key(&dir, &ledger, price, key).await
    }

    /// Stops the provider: its network goes away, it proves nothing more, and once the last
    /// in-flight request lets go of it, its store is closed.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        // A request that was mid-flight (an acceptance waiting for its block) may still hold the
        // provider for a moment; its store closes when the last holder drops it.
        let weak = std::sync::Arc::downgrade(&self.provider);
        drop(self.provider);
        let _ = wait_for(
            "the provider to be released",
            Duration::from_secs(30),
            || {
                let alive = weak.strong_count() > 0;
                async move { Ok((!alive).then_some(())) }
            },
        )
        .await;
    }
}

/// Writes `len` pseudo-random bytes to `path` and returns them.
pub fn random_file(path: &Path, len: usize, seed: u8) -> Vec<u8> {
    let mut data = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut data);
    std::fs::write(path, &data).expect("write test file");
    data
}

/// Encodes `file` into `out` as `k + m` slots of `shard_size` shards, signed by `key`.
pub fn encode(
    key: &Keypair,
    file: &Path,
    out: &Path,
    k: u16,
    m: u16,
    shard_size: u64,
) -> Result<atlas_protocol::VerifiedManifest> {
    let mut progress = atlas_node::progress::Progress::new("encoding", 0, true);
    atlas_node::encode::encode_file(
        key,
        &atlas_node::encode::EncodeRequest {
            file,
            out,
            data_shards: k,
            parity_shards: m,
            shard_size,
            name: None,
            media_type: None,
            threads: 2,
        },
        &mut progress,
    )
}

/// Calls `check` every `every` until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
    }
}

/// Replays the ledger's chain from genesis through its newest block with the escrow rules,
/// checking every header's signature, parent link and state root, and that tokens are conserved
/// after every block. Returns the state right after each epoch settlement, then the final state.
pub async fn replay_chain(
    client: &LedgerClient,
    sequencer: &atlas_protocol::PublicKey,
) -> Result<(
    Vec<atlas_protocol::escrow::Escrow>,
    atlas_protocol::escrow::Escrow,
)> {
    use atlas_protocol::escrow::Escrow;
    use atlas_protocol::wire::{LedgerRequest, LedgerResponse};
    let status = client.status().await?;
    let mut state = Escrow::new(status.params.clone(), status.genesis_beacon);
    anyhow::ensure!(
        *state.chain() == status.chain,
        "the chain id is not the one its genesis gives"
    );
    let mut prev = [0u8; 32];
    let mut settled = Vec::new();
    for h in 0..=status.height {
        let block = match client.request(LedgerRequest::Block(h)).await? {
            LedgerResponse::Block(Some(b)) => b,
            other => anyhow::bail!("block {h} missing: {other:?}"),
        };
        block
            .header
            .verify(Some(sequencer))
            .map_err(|e| anyhow::anyhow!("block {h}: {e}"))?;
        anyhow::ensure!(
            block.header.header.prev == prev,
            "block {h} does not chain to its parent"
        );
        if h > 0 && h % status.epoch_blocks == 0 {
            state.advance_epoch(prev);
            settled.push(state.clone());
        }
        for tx in &block.txs {
            let tx = tx.verify().map_err(|e| anyhow::anyhow!("block {h}: {e}"))?;
            state
                .apply(&tx)
                .map_err(|e| anyhow::anyhow!("block {h}: included transaction refused: {e}"))?;
        }
        anyhow::ensure!(
            state.state_root() == block.header.header.state_root,
            "block {h}: state root differs from the replay"
        );
        anyhow::ensure!(
            state.total_supply() == state.minted(),
            "block {h}: tokens not conserved"
        );
        prev = block.header.header.hash();
    }
    Ok((settled, state))
}

/// A pinned test object: its bytes, its manifest and its deal.
pub type Pinned = (
    Vec<u8>,
    atlas_protocol::VerifiedManifest,
    atlas_protocol::DealId,
);

/// A ledger (100 ms blocks, 5-block epochs, faucet) and `n` providers priced 1000, 1001, ...
#[derive(Debug)]
pub struct Cluster {
    pub ledger: LedgerNode,
    pub ledger_key: Keypair,
    pub providers: Vec<ProviderNode>,
}

impl Cluster {
    pub async fn start(dir: &Path, n: usize) -> Result<Self> {
        let ledger_key = new_key();
        let ledger = LedgerNode::start(
            &dir.join("ledger"),
            ledger_key.clone(),
            ChainConfig {
                block_time: Duration::from_millis(100),
                epoch_blocks: 5,
                faucet: true,
            },
        )
        .await?;
        let mut providers = Vec::new();
        for i in 0..n {
            providers.push(
                ProviderNode::start(&dir.join(format!("p{i}")), &ledger.addr, 1000 + i as u128)
                    .await?,
            );
        }
        Ok(Self {
            ledger,
            ledger_key,
            providers,
        })
    }

    /// Funds a new creator, encodes `len` random bytes at `k + m` with 64 KiB shards and pins
    /// them; the creator's node is gone when this returns. Returns the file, its manifest and
    /// the deal.
    pub async fn pin_random(&self, dir: &Path, len: usize, k: u16, m: u16) -> Result<Pinned> {
        self.pin_random_as(&new_key(), dir, len, k, m).await
    }

    /// As [`Cluster::pin_random`], with `creator` as the creator (funded here). The encoded
    /// slots stay in `dir/enc`.
    pub async fn pin_random_as(
        &self,
        creator: &Keypair,
        dir: &Path,
        len: usize,
        k: u16,
        m: u16,
    ) -> Result<Pinned> {
        let creator = creator.clone();
        let video = dir.join("video.mp4");
        let data = random_file(&video, len, 7);
        let enc = dir.join("enc");
        let manifest = encode(&creator, &video, &enc, k, m, 64 * 1024)?;
        let client = self.ledger.client(&creator).await?;
        client
            .submit(
                &creator,
                atlas_protocol::escrow::TxBody::Faucet { amount: 10_000_000 },
            )
            .await?;
        let deal = atlas_node::creator::pin(
            &client,
            client.net(),
            &creator,
            &enc,
            60,
            u128::MAX,
            &mut |_, _| {},
        )
        .await?;
        Ok((data, manifest, deal))
    }

    /// Restarts the ledger (see [`LedgerNode::restart`]); providers find it at the same address.
    pub async fn restart_ledger(self, kill: bool) -> Result<Self> {
        Ok(Self {
            ledger: self.ledger.restart(kill).await?,
            ledger_key: self.ledger_key,
            providers: self.providers,
        })
    }

    /// Takes the provider holding `key` out of the cluster.
    pub fn take(&mut self, key: &atlas_protocol::PublicKey) -> Option<ProviderNode> {
        let i = self.providers.iter().position(|p| &p.key.public() == key)?;
        Some(self.providers.remove(i))
    }

    pub async fn stop(self) -> Result<()> {
        for p in self.providers {
            p.stop().await;
        }
        self.ledger.stop().await
    }
}

/// Reads a whole object from its current holders into `out` with a fresh node; returns the bytes
/// and the slots whose holders did not serve.
pub async fn read_back(
    client: &LedgerClient,
    deal: atlas_protocol::DealId,
    out: &Path,
) -> Result<(Vec<u8>, Vec<usize>)> {
    use atlas_protocol::escrow::SlotStatus;
    use atlas_protocol::wire::{LedgerRequest, LedgerResponse};
    let d = atlas_node::creator::deal_info(client, deal).await?;
    let manifest = d
        .terms
        .manifest
        .verify()
        .map_err(|e| anyhow::anyhow!("manifest: {e}"))?;
    let mut holders = Vec::new();
    for s in &d.slots {
        let p = match (s.holder, s.status) {
            (Some(h), SlotStatus::Active { .. }) => {
                match client.request(LedgerRequest::Provider(h)).await? {
                    LedgerResponse::Provider(p) => p,
                    _ => None,
                }
            }
            _ => None,
        };
        holders.push(p);
    }
    decode_from(client, manifest, holders, out).await
}

/// Decodes a whole object from `holders` into `out`, verified; returns the bytes and the slots
/// whose holders did not serve.
async fn decode_from(
    client: &LedgerClient,
    manifest: atlas_protocol::VerifiedManifest,
    holders: Vec<Option<atlas_protocol::escrow::Provider>>,
    out: &Path,
) -> Result<(Vec<u8>, Vec<usize>)> {
    let mut source = atlas_node::creator::NetShardSource::new(
        tokio::runtime::Handle::current(),
        client.net().clone(),
        manifest.clone(),
        holders,
    )?;
    let layout = manifest.layout();
    let file_hash = manifest.manifest().file_hash;
    let out2 = out.to_path_buf();
    let (result, failed) = tokio::task::spawn_blocking(move || {
        let r = atlas_storage::slot_dir::decode_to_file(
            &layout,
            &file_hash,
            &mut source,
            &out2,
            &mut |_| {},
        );
        (r, source.failed_slots())
    })
    .await?;
    result?;
    Ok((std::fs::read(out)?, failed))
}

/// Reads a whole object as `atlas get` does, from the best holders across every live deal of
/// it, verified; returns the bytes.
pub async fn read_object(
    client: &LedgerClient,
    object: &atlas_protocol::ObjectId,
    out: &Path,
) -> Result<Vec<u8>> {
    let deals = atlas_node::creator::live_deals_of(client, object).await?;
    let (_, d) = deals
        .first()
        .ok_or_else(|| anyhow::anyhow!("no live deal of the object"))?;
    let manifest = d
        .terms
        .manifest
        .verify()
        .map_err(|e| anyhow::anyhow!("manifest: {e}"))?;
    let holders = atlas_node::creator::object_holders(client, object).await?;
    Ok(decode_from(client, manifest, holders, out).await?.0)
}
