//! `atlas provider run|status|exit`.

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
    /// What this provider holds: its registration, its slots on the ledger, and the slots its
    /// scrubber found damaged and handed back. Works whether or not the provider runs.
    Status {
        #[command(flatten)]
        ledger: super::LedgerArg,
    },
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
        ProviderCommand::Status { ledger } => return status(ctx, ledger),
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

fn status(ctx: &Context, ledger: super::LedgerArg) -> Result<()> {
    use crate::config::units::format_size;
    use atlas_protocol::escrow::SlotStatus;
    use atlas_protocol::wire::DealQuery;
    let home = ctx.home()?;
    let key = home.load_key()?;
    let me = key.public();
    let damaged = crate::provider::damage::read(&home.root().join("slots"))
        .map_err(|e| anyhow::anyhow!("reading the record of damaged slots: {e}"))?;
    let addr = ledger.addr()?;
    let (registered, held, epoch) = super::runtime()?.block_on(async move {
        let client = crate::ledger::LedgerClient::connect(&key, addr).await?;
        let registered = client.provider(&me).await?;
        let held = client.deals(DealQuery::HeldBy(me)).await?;
        let epoch = client.status().await?.epoch;
        anyhow::Ok((registered, held, epoch))
    })?;
    let mut slots = Vec::new();
    for (id, d) in &held {
        for (j, s) in d.slots.iter().enumerate() {
            if s.holder == Some(me) {
                slots.push((*id, d.terms.object, j, s.clone(), d.terms.slot_len));
            }
        }
    }
    let count = |f: fn(&SlotStatus) -> bool| slots.iter().filter(|s| f(&s.3.status)).count();
    let active = count(|s| matches!(s, SlotStatus::Active { misses: 0 }));
    let missing = count(|s| matches!(s, SlotStatus::Active { misses } if *misses > 0));
    let pending = count(|s| matches!(s, SlotStatus::Pending { claimed: false, .. }));
    let repairing = count(|s| matches!(s, SlotStatus::Pending { claimed: true, .. }));
    if ctx.json {
        ctx.print_json(&serde_json::json!({
            "provider": me.to_string(),
            "epoch": epoch,
            "registered": registered.as_ref().map(|p| serde_json::json!({
                "capacity": p.capacity,
                "used": p.used,
                "price": p.price.to_string(),
                "collateral": p.collateral.to_string(),
                "exiting_since": p.exiting_since,
            })),
            "slots": slots.iter().map(|(id, object, j, s, len)| serde_json::json!({
                "deal_id": id.to_string(),
                "object_id": object.to_string(),
                "slot": j,
                "len": len,
                "state": super::creator::slot_state(&s.status),
                "misses": s.total_misses,
                "proven_epoch": s.proven,
            })).collect::<Vec<_>>(),
            "damaged": damaged,
        }));
        return Ok(());
    }
    println!("provider {me}");
    match &registered {
        Some(p) => {
            println!(
                "ledger   registered at price {} per GiB-epoch; {} of {} taken; free collateral {}",
                p.price,
                format_size(p.used),
                format_size(p.capacity),
                p.collateral
            );
            if let Some(e) = p.exiting_since {
                println!("         exiting since epoch {e}");
            }
        }
        None => println!("ledger   not registered (start it with `atlas provider run`)"),
    }
    println!(
        "slots    {active} proving, {missing} missing proofs, {pending} waiting for bytes, {repairing} being repaired here (epoch {epoch})"
    );
    for (id, object, j, s, len) in &slots {
        println!(
            "         {} slot {j:<3} of object {}  {:<11} {:>9}  misses {}",
            id.short(),
            object.short(),
            super::creator::slot_state(&s.status),
            format_size(*len),
            s.total_misses
        );
    }
    if damaged.is_empty() {
        println!("damage   none found by the scrubber");
    } else {
        println!(
            "damage   {} slot(s) found damaged, deleted and handed back for repair:",
            damaged.len()
        );
        for d in damaged.iter().rev().take(20) {
            let short = d.object.get(..12).unwrap_or(&d.object);
            println!(
                "         {}  object {short} slot {}: {}",
                format_time(d.at_ms),
                d.slot,
                d.why
            );
        }
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS UTC` for a time in milliseconds since the Unix epoch.
fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_civil_dates() {
        assert_eq!(super::format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            super::format_time(1_796_256_000_000 + 3_723_000),
            "2026-12-03 01:02:03 UTC"
        );
    }
}
