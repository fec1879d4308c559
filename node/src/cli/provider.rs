//! `atlas provider run`.

use super::Context;
use crate::config::defaults;
use crate::config::units::parse_size;
use crate::provider::{Provider, ProviderConfig};
use anyhow::Result;
use clap::{Args, Subcommand};
use libp2p::Multiaddr;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Subcommand)]
pub enum ProviderCommand {
    /// Offer storage: register, take slots, prove every epoch, serve reads.
    Run(RunArgs),
    /// Leave gracefully: take no new slots; after the notice period the held slots are handed over
    /// for repair without slashing and the collateral comes back.
    Exit {
        #[command(flatten)]
        ledger: super::LedgerArg,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address to listen on (repeat for more) [default: loopback TCP and QUIC, ports chosen by the OS].
    #[arg(long, value_name = "MULTIADDR")]
    pub listen: Vec<Multiaddr>,
    /// Disk space offered for slots.
    #[arg(long, default_value = defaults::CAPACITY, value_parser = parse_size)]
    pub capacity: u64,
    /// Price per GiB per epoch, in base units.
    #[arg(long, default_value_t = defaults::PRICE)]
    pub price: u128,
    /// Collateral to lock with the ledger (funded from the devnet faucet if the balance is short).
    #[arg(long, default_value_t = defaults::COLLATERAL)]
    pub collateral: u128,
    /// Epochs a stored slot that no live deal assigns here (ended, cancelled, freed or handed
    /// over) is kept before its bytes are deleted.
    #[arg(long, default_value_t = defaults::GC_GRACE_EPOCHS, value_name = "EPOCHS")]
    pub gc_grace_epochs: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    #[command(flatten)]
    pub ledger: super::LedgerArg,
    /// How often to check the ledger for new epochs and slots.
    #[arg(long, default_value = defaults::POLL, value_parser = crate::config::units::parse_duration)]
    pub poll: Duration,
    /// How long one pass of re-verifying every stored slot against its root takes (reading at
    /// least 1 MiB/s); a damaged slot is deleted and handed back for repair.
    #[arg(long, default_value = defaults::SCRUB_PASS, value_parser = crate::config::units::parse_duration)]
    pub scrub_pass: Duration,
}

pub fn run(ctx: &Context, cmd: ProviderCommand) -> Result<()> {
    let args = match cmd {
        ProviderCommand::Run(args) => args,
        ProviderCommand::Exit { ledger } => return exit(ctx, ledger),
    };
    crate::init_logging("info,libp2p_swarm=warn,libp2p_kad=error");
    let home = ctx.home()?;
    let key = home.load_or_generate_key()?;
    let ledger = args.ledger.addr()?;
    super::runtime()?.block_on(async move {
        let shutdown = CancellationToken::new();
        let mut registry = Registry::default();
        let listen = if args.listen.is_empty() {
            super::ledger::default_listen()
        } else {
            args.listen
        };
        let running = Provider::start(
            &home.root().join("slots"),
            key,
            ProviderConfig {
                capacity: args.capacity,
                price: args.price,
                collateral: args.collateral,
                listen,
                gc_grace_epochs: args.gc_grace_epochs,
                poll: args.poll,
                scrub_pass: args.scrub_pass,
            },
            ledger,
            &mut registry,
        )
        .await?;
        let provider = running.provider.clone();
        println!("provider {}", provider.net().peer_id());
        super::announce(provider.net(), registry, args.metrics, &shutdown).await?;
        super::wait_for_signal().await;
        shutdown.cancel();
        running.stop().await;
        Ok(())
    })
}

fn exit(ctx: &Context, ledger: super::LedgerArg) -> Result<()> {
    let key = ctx.home()?.load_key()?;
    let addr = ledger.addr()?;
    super::runtime()?.block_on(async move {
        let client = crate::ledger::LedgerClient::connect(&key, addr).await?;
        let height = client
            .submit(&key, atlas_protocol::escrow::TxBody::ExitProvider)
            .await?
            .height
            .unwrap_or_default();
        let status = client.status().await?;
        let notice = status.params.exit_notice_epochs;
        if ctx.json {
            ctx.print_json(&serde_json::json!({
                "provider": key.public().to_string(),
                "block": height,
                "epoch": status.epoch,
                "slots_handed_over_at_epoch": status.epoch + notice,
            }));
        } else {
            println!(
                "exit recorded in block {height} (epoch {}); held slots are handed over at epoch {} and the collateral returns once none are left",
                status.epoch,
                status.epoch + notice
            );
        }
        Ok(())
    })
}
