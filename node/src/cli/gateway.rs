//! `atlas gateway run`.

use super::Context;
use crate::gateway::{self, GatewayConfig};
use crate::ledger::LedgerClient;
use anyhow::{Context as _, Result};
use atlas_protocol::PublicKey;
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Serve pinned objects over HTTP (with Range, for players and browsers) and a catalogue page.
    ///
    /// GET/HEAD /v1/objects/{id} returns an object's bytes, verified shard by shard, rebuilt from
    /// parity where holders are down; / lists the catalogue of the --creator keys with a player for
    /// each video; /metrics has the gateway's Prometheus metrics.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// HTTP address to listen on.
    #[arg(long, default_value = crate::config::defaults::GATEWAY_LISTEN, value_name = "ADDR")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub ledger: super::LedgerArg,
    /// A creator whose catalogue the page lists (hex public key; repeat for more) [default: this
    /// home's key, if it has one].
    #[arg(long = "creator", value_name = "KEY")]
    pub creators: Vec<String>,
}

pub fn run(ctx: &Context, cmd: GatewayCommand) -> Result<()> {
    let GatewayCommand::Run(args) = cmd;
    crate::init_logging("info,libp2p_swarm=warn,libp2p_kad=error");
    let home = ctx.home()?;
    let own = home.load_key().ok();
    let mut creators = Vec::new();
    for text in &args.creators {
        let key: PublicKey = text
            .trim()
            .parse()
            .with_context(|| format!("--creator '{text}' is not a public key"))?;
        creators.push(key);
    }
    if creators.is_empty() {
        creators.extend(own.as_ref().map(|k| k.public()));
    }
    let key = match own {
        Some(k) => k,
        None => crate::config::home::ephemeral_key()?,
    };
    let addr = args.ledger.addr()?;
    super::runtime()?.block_on(async move {
        let shutdown = CancellationToken::new();
        let client = LedgerClient::connect(&key, addr).await?;
        let net = client.net().clone();
        let (bound, task) = gateway::start(
            std::sync::Arc::new(client),
            net,
            GatewayConfig {
                creators,
                limits: Default::default(),
            },
            args.listen,
            shutdown.clone(),
        )
        .await?;
        println!("gateway on http://{bound}/");
        println!("metrics on http://{bound}/metrics");
        super::wait_for_signal().await;
        shutdown.cancel();
        let _ = task.await;
        anyhow::Ok(())
    })
}
