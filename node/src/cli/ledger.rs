//! `atlas ledger run`.

use super::Context;
use crate::config::defaults;
use crate::config::units::parse_duration;
use crate::ledger::{self, ChainConfig, Ledger};
use crate::net::{self, NetConfig};
use anyhow::Result;
use clap::{Args, Subcommand};
use libp2p::Multiaddr;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Run the devnet ledger: order transactions into blocks, settle epochs, serve queries.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address to listen on (repeat for more) [default: loopback TCP and QUIC, ports chosen by the OS].
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,
    /// Time between blocks.
    #[arg(long, default_value = defaults::BLOCK_TIME, value_parser = parse_duration)]
    pub block_time: Duration,
    /// Blocks per epoch (fixed at genesis: keep it the same across restarts).
    #[arg(long, default_value_t = defaults::EPOCH_BLOCKS, value_parser = clap::value_parser!(u64).range(1..))]
    pub epoch_blocks: u64,
    /// Enable the devnet faucet (`atlas wallet faucet`); fixed at genesis.
    #[arg(long)]
    pub faucet: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
}

pub fn default_listen() -> Vec<Multiaddr> {
    vec![
        "/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr"),
        "/ip4/127.0.0.1/udp/0/quic-v1"
            .parse()
            .expect("valid multiaddr"),
    ]
}

pub fn run(ctx: &Context, cmd: LedgerCommand) -> Result<()> {
    let LedgerCommand::Run(args) = cmd;
    crate::init_logging("info,libp2p_swarm=warn,libp2p_kad=error");
    let home = ctx.home()?;
    let key = home.load_or_generate_key()?;
    super::runtime()?.block_on(async move {
        let shutdown = CancellationToken::new();
        let mut registry = Registry::default();
        let ledger = Ledger::open(
            &home.root().join("ledger"),
            key.clone(),
            ChainConfig {
                block_time: args.block_time,
                epoch_blocks: args.epoch_blocks,
                faucet: args.faucet,
            },
            &mut registry,
        )?;
        let listen = if args.listen.is_empty() {
            default_listen()
        } else {
            args.listen
        };
        let (net, events, net_task) = net::start(
            &key,
            NetConfig {
                listen,
                name: "ledger".into(),
            },
            &mut registry,
            shutdown.clone(),
        )
        .await?;
        match ledger.height() {
            Some(h) => println!("ledger {} resuming at height {h}", net.peer_id()),
            None => println!("ledger {} starting a new chain", net.peer_id()),
        }
        super::announce(&net, registry, args.metrics, &shutdown).await?;
        let stop = shutdown.clone();
        tokio::spawn(async move {
            super::wait_for_signal().await;
            stop.cancel();
        });
        let result = ledger::run(ledger, net, events, shutdown.clone()).await;
        shutdown.cancel();
        let _ = net_task.await;
        anyhow::Ok(result?)
    })
}
