//! Harness for Atlas's end-to-end tests: real nodes (real libp2p on loopback, real RocksDB in temp
//! folders) started in one process, each with its own shutdown.

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
}

impl LedgerNode {
    /// Starts a ledger with its database in `dir`.
    pub async fn start(dir: &Path, key: Keypair, config: ChainConfig) -> Result<Self> {
        let shutdown = CancellationToken::new();
        let mut registry = Registry::default();
        let ledger = Ledger::open(dir, key.clone(), config, &mut registry)?;
        let (handle, events, net_task) = net::start(
            &key,
            NetConfig {
                listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
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
            let _ = net_task.await;
            r
        });
        Ok(Self {
            key,
            addr,
            shutdown,
            task,
        })
    }

    /// Stops the ledger and waits until its database is closed.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.task.await?
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
