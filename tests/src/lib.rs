//! Harness for Atlas's end-to-end tests: real nodes (real libp2p on loopback, real RocksDB in temp
//! folders) started in one process, each with its own shutdown.

pub mod hostile;
pub mod stall;

use anyhow::Result;
use atlas_node::ledger::LedgerClient;
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
                        Err(e) => Err(e.into()),
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
            r.map_err(anyhow::Error::from)
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
        Ok(LedgerClient::connect(key, self.addr.clone()).await?)
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
    running: atlas_node::provider::Running,
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
        let mut registry = Registry::default();
        let running = atlas_node::provider::Provider::start(
            dir,
            key.clone(),
            atlas_node::provider::ProviderConfig {
                capacity: 1 << 30,
                price,
                collateral: 1_000_000,
                listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
                gc_grace_epochs: 2,
                poll: Duration::from_millis(50),
                scrub_pass: Duration::from_secs(2),
            },
            ledger.clone(),
            &mut registry,
        )
        .await?;
        Ok(Self {
            key,
            dir: dir.to_path_buf(),
            ledger: ledger.clone(),
            price,
            provider: running.provider.clone(),
            running,
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

    /// Stops the provider: it proves nothing more, its network goes away, and its store is
    /// closed when this returns.
    pub async fn stop(self) {
        self.running.stop().await;
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
    atlas_node::client::encode::encode_file(
        key,
        &atlas_node::client::encode::EncodeRequest {
            file,
            out,
            data_shards: k,
            parity_shards: m,
            shard_size,
            name: None,
            media_type: None,
            threads: 2,
        },
        &mut |_, _| {},
    )
    .map_err(Into::into)
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
    let status = client.status().await?;
    let mut state = Escrow::new(status.params.clone(), status.genesis_beacon);
    anyhow::ensure!(
        *state.chain() == status.chain,
        "the chain id is not the one its genesis gives"
    );
    let mut prev = [0u8; 32];
    let mut settled = Vec::new();
    for h in 0..=status.height {
        let block = client
            .block(h)
            .await?
            .ok_or_else(|| anyhow::anyhow!("block {h} missing"))?;
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
    dir: std::path::PathBuf,
    /// Providers started so far (each has its own directory `p{i}`, also once stopped).
    started: usize,
    pub ledger: LedgerNode,
    pub ledger_key: Keypair,
    pub providers: Vec<ProviderNode>,
}

/// Builds a [`Cluster`]: how many providers, at what prices, on what chain.
pub struct ClusterBuilder {
    dir: std::path::PathBuf,
    providers: usize,
    price: Box<dyn Fn(usize) -> u128>,
    chain: ChainConfig,
}

impl std::fmt::Debug for ClusterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterBuilder")
            .field("providers", &self.providers)
            .finish_non_exhaustive()
    }
}

impl ClusterBuilder {
    /// `n` providers.
    pub fn providers(mut self, n: usize) -> Self {
        self.providers = n;
        self
    }

    /// Provider `i`'s price per GiB-epoch [default: 1000 + i].
    pub fn price(mut self, price: impl Fn(usize) -> u128 + 'static) -> Self {
        self.price = Box::new(price);
        self
    }

    /// The chain's settings [default: 100 ms blocks, 5-block epochs, faucet].
    pub fn chain(mut self, chain: ChainConfig) -> Self {
        self.chain = chain;
        self
    }

    pub async fn build(self) -> Result<Cluster> {
        let dir = self.dir.clone();
        let ledger_key = new_key();
        let ledger =
            LedgerNode::start(&self.dir.join("ledger"), ledger_key.clone(), self.chain).await?;
        let mut providers = Vec::new();
        for i in 0..self.providers {
            providers.push(
                ProviderNode::start(
                    &self.dir.join(format!("p{i}")),
                    &ledger.addr,
                    (self.price)(i),
                )
                .await?,
            );
        }
        Ok(Cluster {
            dir,
            started: self.providers,
            ledger,
            ledger_key,
            providers,
        })
    }
}

impl Cluster {
    /// A cluster in `dir`: 100 ms blocks, 5-block epochs, a faucet, no providers yet.
    pub fn builder(dir: &Path) -> ClusterBuilder {
        ClusterBuilder {
            dir: dir.to_path_buf(),
            providers: 0,
            price: Box::new(|i| 1000 + i as u128),
            chain: ChainConfig {
                block_time: Duration::from_millis(100),
                epoch_blocks: 5,
                faucet: true,
            },
        }
    }

    /// The default cluster with `n` providers.
    pub async fn start(dir: &Path, n: usize) -> Result<Self> {
        Self::builder(dir).providers(n).build().await
    }

    /// Starts one more provider at `price`, in the cluster's directory, and returns its key.
    pub async fn add_provider(&mut self, price: u128) -> Result<atlas_protocol::PublicKey> {
        let dir = self.dir.join(format!("p{}", self.started));
        let node = ProviderNode::start(&dir, &self.ledger.addr, price).await?;
        self.started += 1;
        let key = node.key.public();
        self.providers.push(node);
        Ok(key)
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
        let quote =
            atlas_node::client::pin::quote(&client, client.net(), &manifest, u128::MAX).await?;
        let deal = atlas_node::client::pin::pin(
            &client,
            &creator,
            &enc,
            quote,
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
            ..self
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

/// Reads a whole object from the best holders of each slot (as `atlas get` does) into `out`
/// with a fresh node; returns the bytes and the slots whose holders did not serve.
pub async fn read_back(
    client: &LedgerClient,
    deal: atlas_protocol::DealId,
    out: &Path,
) -> Result<(Vec<u8>, Vec<usize>)> {
    let d = client.deal(deal).await?;
    let report = atlas_node::client::read::read_object(
        client,
        client.net(),
        &d,
        atlas_node::client::read::Output::File(out.to_path_buf()),
        |_| {},
    )
    .await?;
    Ok((std::fs::read(out)?, report.failed))
}

/// Reads a whole object as `atlas get` does, from the best holders across every live deal of
/// it, verified; returns the bytes.
pub async fn read_object(
    client: &LedgerClient,
    object: &atlas_protocol::ObjectId,
    out: &Path,
) -> Result<Vec<u8>> {
    let deals = atlas_node::client::holders::live_deals_of(client, object).await?;
    let (id, _) = deals
        .first()
        .ok_or_else(|| anyhow::anyhow!("no live deal of the object"))?;
    Ok(read_back(client, *id, out).await?.0)
}
