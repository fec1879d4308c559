//! `atlas pin | get | status | ls`: the creator's commands on the network.

use super::progress::Progress;
use super::Context;
use crate::client::encode::{encode_file, EncodeRequest};
use crate::client::holders::{find_deal, margin};
use crate::client::read::{read_object, Output};
use crate::client::{self, pin};
use crate::config::defaults;
use crate::config::units::{auto_shard_size, format_size, parse_duration, parse_size};
use crate::ledger::LedgerClient;
use anyhow::Result;
use atlas_protocol::escrow::{Deal, SlotStatus};
use atlas_protocol::DealId;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PinArgs {
    /// The video (or any file) to pin.
    pub file: PathBuf,
    /// Data shards per stripe (k).
    #[arg(long, short = 'k', default_value_t = defaults::DATA_SHARDS)]
    pub data_shards: u16,
    /// Parity shards per stripe (m): how many holders may be lost.
    #[arg(long, short = 'm', default_value_t = defaults::PARITY_SHARDS)]
    pub parity_shards: u16,
    /// Shard size: a power of two from 64KiB to 4MiB [default: the file's share per data shard,
    /// rounded up to a power of two, from 64KiB to 1MiB].
    #[arg(long, value_parser = parse_size)]
    pub shard_size: Option<u64>,
    /// How long to keep the file, e.g. 30d, 12h (turned into epochs at the chain's block time).
    #[arg(long = "for", value_name = "DURATION", default_value = defaults::DEAL_LENGTH, value_parser = parse_duration, conflicts_with = "epochs")]
    pub duration: std::time::Duration,
    /// Epochs to pay for, instead of --for.
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Highest provider price per GiB-epoch to accept [default: any].
    #[arg(long)]
    pub max_price: Option<u128>,
    #[command(flatten)]
    pub ledger: super::LedgerArg,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Object id (or deal id), or any unique prefix of it.
    pub id: String,
    /// Where to write the file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub ledger: super::LedgerArg,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Object id (or deal id), or any unique prefix of it.
    pub id: String,
    #[command(flatten)]
    pub ledger: super::LedgerArg,
}

/// `atlas deal topup | extend | cancel`.
#[derive(Debug, Args)]
pub struct DealArgs {
    #[command(flatten)]
    pub ledger: super::LedgerArg,
    #[command(subcommand)]
    pub command: DealCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum DealCommand {
    /// Add AMOUNT tokens to the deal's escrow.
    Topup { id: String, amount: u128 },
    /// Pay for EPOCHS more epochs (at the deal's prices) and move its end out.
    Extend { id: String, epochs: u64 },
    /// End the deal at this epoch's boundary: holders are paid through it, the rest is refunded.
    Cancel { id: String },
}

pub fn deal(ctx: &Context, args: DealArgs) -> Result<()> {
    use atlas_protocol::escrow::TxBody;
    let key = ctx.home()?.load_key()?;
    let addr = args.ledger.addr()?;
    let (deal_id, d, epoch) = super::runtime()?.block_on(async {
        let client = LedgerClient::connect(&key, addr).await?;
        let (DealCommand::Topup { id, .. }
        | DealCommand::Extend { id, .. }
        | DealCommand::Cancel { id }) = &args.command;
        let (deal_id, _) = find_deal(&client, id).await?;
        let body = match args.command {
            DealCommand::Topup { amount, .. } => TxBody::TopUp {
                deal: deal_id,
                amount,
            },
            DealCommand::Extend { epochs, .. } => TxBody::Extend {
                deal: deal_id,
                epochs,
            },
            DealCommand::Cancel { .. } => TxBody::CancelDeal { deal: deal_id },
        };
        client.submit(&key, body).await?;
        let d = client.deal(deal_id).await?;
        let epoch = client.status().await?.epoch;
        anyhow::Ok((deal_id, d, epoch))
    })?;
    print_status(ctx, deal_id, &d, epoch)
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub ledger: super::LedgerArg,
}

pub(super) fn slot_state(s: &SlotStatus) -> String {
    match s {
        SlotStatus::Pending { claimed: false, .. } => "pending".into(),
        SlotStatus::Pending { claimed: true, .. } => "repairing".into(),
        SlotStatus::Active { misses: 0 } => "active".into(),
        SlotStatus::Active { misses } => format!("missed({misses})"),
        SlotStatus::Freed => "freed".into(),
        SlotStatus::Ended => "ended".into(),
    }
}

/// Epochs covering `d` at the chain's block time (at least one).
fn epochs_for(d: std::time::Duration, status: &atlas_protocol::wire::ChainStatus) -> u64 {
    let epoch_ms = status
        .block_time_ms
        .saturating_mul(status.epoch_blocks)
        .max(1);
    u64::try_from(d.as_millis().div_ceil(u128::from(epoch_ms)))
        .unwrap_or(u64::MAX)
        .max(1)
}

pub fn pin(ctx: &Context, args: PinArgs) -> Result<()> {
    let home = ctx.home()?;
    let key = home.load_key()?;
    let addr = args.ledger.addr()?;
    // Encode into the home's object cache; the directory is named by object id once signed.
    let objects = home.root().join("objects");
    std::fs::create_dir_all(&objects)?;
    let tmp = objects.join(format!(".encoding-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mut progress = Progress::new("encoding", 0, ctx.quiet);
    let manifest = encode_file(
        &key,
        &EncodeRequest {
            file: &args.file,
            out: &tmp,
            data_shards: args.data_shards,
            parity_shards: args.parity_shards,
            shard_size: args.shard_size.unwrap_or_else(|| {
                auto_shard_size(
                    std::fs::metadata(&args.file).map_or(0, |m| m.len()),
                    args.data_shards,
                )
            }),
            name: None,
            media_type: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        &mut |done, total| {
            progress.set_total(total);
            progress.update(done)
        },
    )?;
    progress.finish();
    let layout = manifest.layout();
    let size = layout.size();
    let dir = objects.join(manifest.id().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)?;

    let quiet = ctx.quiet;
    let deal = super::runtime()?.block_on(async {
        let client = LedgerClient::connect(&key, addr).await?;
        let epochs = match args.epochs {
            Some(e) => e,
            None => epochs_for(args.duration, &client.status().await?),
        };
        // What the deal will cost is known, and printed, before anything is paid.
        let quote = pin::quote(
            &client,
            client.net(),
            &manifest,
            args.max_price.unwrap_or(u128::MAX),
        )
        .await?;
        let params = client.status().await?.params;
        let (escrow, reserve) = params
            .deal_deposit(quote.per_epoch, epochs)
            .ok_or_else(|| anyhow::anyhow!("the price of {epochs} epochs overflows"))?;
        eprintln!(
            "paying {} for {epochs} epochs ({} per epoch to {} providers) plus {} held in reserve for repairs",
            escrow,
            quote.per_epoch,
            layout.total_shards(),
            reserve
        );
        let mut up = Progress::new(
            "uploading",
            layout.slot_len() * layout.total_shards() as u64,
            quiet,
        );
        let deal = pin::pin(
            &client,
            &key,
            &dir,
            quote,
            epochs,
            args.max_price.unwrap_or(u128::MAX),
            &mut |done, _| up.update(done),
        )
        .await?;
        up.finish();
        let info = client.deal(deal).await?;
        anyhow::Ok((deal, info))
    })?;
    let (deal_id, info) = deal;
    if ctx.json {
        ctx.print_json(&json!({
            "object_id": manifest.id().to_string(),
            "deal_id": deal_id.to_string(),
            "size": size,
            "slots": info.slots.iter().map(|s| json!({
                "holder": s.holder.map(|h| h.to_string()),
                "price_per_epoch": s.price.to_string(),
            })).collect::<Vec<_>>(),
            "escrow": info.escrow.to_string(),
            "end_epoch": info.end_epoch,
        }));
    } else {
        println!("{}", manifest.id());
        eprintln!(
            "pinned {} ({}) as {}+{} to {} providers; deal {}, {} per epoch, {} paid in escrow and {} in reserve (until epoch {})",
            args.file.display(),
            format_size(size),
            layout.data_shards(),
            layout.parity_shards(),
            layout.total_shards(),
            deal_id.short(),
            info.price_per_epoch(),
            info.escrow,
            info.reserve,
            info.end_epoch
        );
    }
    Ok(())
}

pub fn get(ctx: &Context, args: GetArgs) -> Result<()> {
    super::check_output(&args.out, args.force)?;
    let key = match ctx.home()?.load_key() {
        Ok(k) => k,
        // Reading needs no account: any key will do for the connection.
        Err(_) => crate::config::home::ephemeral_key()?,
    };
    let addr = args.ledger.addr()?;
    let quiet = ctx.quiet;
    let (report, manifest) = super::runtime()?.block_on(async {
        let client = LedgerClient::connect(&key, addr).await?;
        let (_, deal) = find_deal(&client, &args.id).await?;
        let manifest = client::manifest_of(&deal)?;
        let mut progress = Progress::new("downloading", manifest.layout().size(), quiet);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(16);
        let read = read_object(
            &client,
            client.net(),
            &deal,
            Output::File(args.out.clone()),
            move |done| {
                let _ = tx.try_send(done);
            },
        );
        tokio::pin!(read);
        let report = loop {
            tokio::select! {
                r = &mut read => break r?,
                Some(done) = rx.recv() => progress.update(done),
            }
        };
        progress.finish();
        anyhow::Ok((report, manifest))
    })?;
    let (stats, failed) = (report.stats, report.failed);
    if ctx.json {
        ctx.print_json(&json!({
            "object_id": manifest.id().to_string(),
            "out": args.out,
            "size": stats.bytes_written,
            "verified": true,
            "reconstructed_stripes": stats.reconstructed_stripes,
            "unavailable_slots": failed,
        }));
    } else {
        println!(
            "wrote {} ({}), BLAKE3 verified",
            args.out.display(),
            format_size(stats.bytes_written)
        );
        if !failed.is_empty() {
            eprintln!(
                "holders of slots {failed:?} did not serve; rebuilt {} of {} stripes from parity",
                stats.reconstructed_stripes, stats.stripes
            );
        }
    }
    Ok(())
}

pub fn status(ctx: &Context, args: StatusArgs) -> Result<()> {
    let key = match ctx.home()?.load_key() {
        Ok(k) => k,
        Err(_) => crate::config::home::ephemeral_key()?,
    };
    let addr = args.ledger.addr()?;
    let (deal_id, deal, epoch) = super::runtime()?.block_on(async {
        let client = LedgerClient::connect(&key, addr).await?;
        let (id, deal) = find_deal(&client, &args.id).await?;
        let epoch = client.status().await?.epoch;
        anyhow::Ok((id, deal, epoch))
    })?;
    print_status(ctx, deal_id, &deal, epoch)
}

fn print_status(ctx: &Context, deal_id: DealId, deal: &Deal, epoch: u64) -> Result<()> {
    let manifest = deal
        .terms
        .manifest
        .verify()
        .map_err(|e| anyhow::anyhow!("deal manifest: {e}"))?;
    let m = manifest.manifest();
    let margin = margin(deal)?;
    if ctx.json {
        ctx.print_json(&json!({
            "object_id": deal.terms.object.to_string(),
            "deal_id": deal_id.to_string(),
            "name": m.name,
            "size": m.size,
            "data_shards": m.data_shards,
            "parity_shards": m.parity_shards,
            "slot_len": deal.terms.slot_len,
            "epoch": epoch,
            "end_epoch": deal.end_epoch,
            "ended": deal.ended,
            "escrow": deal.escrow.to_string(),
            "reserve": deal.reserve.to_string(),
            "epochs_covered": deal.epochs_covered(),
            "margin": margin,
            "slots": deal.slots.iter().enumerate().map(|(j, s)| json!({
                "slot": j,
                "holder": s.holder.map(|h| h.to_string()),
                "state": slot_state(&s.status),
                "misses": s.total_misses,
                "proven_epoch": s.proven,
                "repairs": s.repairs,
                "paid": s.paid.to_string(),
                "price_per_epoch": s.price.to_string(),
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!("object   {}", deal.terms.object);
    println!("deal     {}", deal_id);
    println!(
        "file     {} ({}), {}+{}",
        m.name,
        format_size(m.size),
        m.data_shards,
        m.parity_shards
    );
    println!(
        "epoch    {epoch}; paid through epoch {} ({}), escrow {} covers {} more epochs, reserve {}",
        deal.end_epoch.saturating_sub(1),
        if deal.ended { "ended" } else { "live" },
        deal.escrow,
        deal.epochs_covered(),
        deal.reserve
    );
    if margin >= 0 {
        println!("health   {margin} slot(s) may still be lost");
    } else {
        println!(
            "health   {} slot(s) short of a readable copy: the object cannot be read back",
            -margin
        );
    }
    println!("slot  holder        state        misses  repairs  paid");
    for (j, s) in deal.slots.iter().enumerate() {
        println!(
            "{j:>4}  {:<12}  {:<11}  {:>6}  {:>7}  {}",
            s.holder
                .map(|h| h.to_string()[..12].to_string())
                .unwrap_or_else(|| "-".into()),
            slot_state(&s.status),
            s.total_misses,
            s.repairs,
            s.paid
        );
    }
    Ok(())
}

pub fn ls(ctx: &Context, args: LsArgs) -> Result<()> {
    let key = ctx.home()?.load_key()?;
    let addr = args.ledger.addr()?;
    let deals = super::runtime()?.block_on(async {
        let client = LedgerClient::connect(&key, addr).await?;
        client
            .deals(atlas_protocol::wire::DealQuery::OfCreator(key.public()))
            .await
    })?;
    let mut rows = Vec::new();
    for (id, d) in &deals {
        let m = d
            .terms
            .manifest
            .verify()
            .map_err(|e| anyhow::anyhow!("deal manifest: {e}"))?;
        rows.push((
            id,
            d,
            m.manifest().name.clone(),
            m.manifest().size,
            margin(d)?,
        ));
    }
    if ctx.json {
        ctx.print_json(&json!({
            "objects": rows.iter().map(|(id, d, name, size, margin)| json!({
                "object_id": d.terms.object.to_string(),
                "deal_id": id.to_string(),
                "name": name,
                "size": size,
                "margin": margin,
                "ended": d.ended,
                "escrow": d.escrow.to_string(),
                "epochs_covered": d.epochs_covered(),
                "end_epoch": d.end_epoch,
            })).collect::<Vec<_>>(),
            "worst_margin": rows.iter().filter(|r| !r.1.ended).map(|r| r.4).min(),
        }));
        return Ok(());
    }
    println!("object        name                      size        health  escrow      until");
    for (_, d, name, size, margin) in &rows {
        println!(
            "{}  {:<24}  {:>10}  {:>6}  {:>10}  {}",
            d.terms.object.short(),
            name.chars().take(24).collect::<String>(),
            format_size(*size),
            if d.ended {
                "ended".to_string()
            } else {
                format!("{margin:+}")
            },
            d.escrow,
            d.end_epoch
        );
    }
    let live: Vec<_> = rows.iter().filter(|r| !r.1.ended).collect();
    if let Some(worst) = live.iter().map(|r| r.4).min() {
        println!(
            "{} objects; worst health {worst:+} (slots that may still be lost)",
            live.len()
        );
    } else {
        println!("no live objects");
    }
    Ok(())
}
