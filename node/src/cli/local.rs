//! `atlas encode | decode | verify`: the erasure code on a local directory, no network.

use super::progress::Progress;
use super::Context;
use crate::client::encode::{encode_file, EncodeRequest};
use crate::config::units::{format_size, parse_size};
use anyhow::{bail, Result};
use atlas_protocol::erasure::DecodeError;
use atlas_storage::slot_dir::{SlotDir, SlotDirError, SlotHealth};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// The file to encode (a video, or anything).
    pub file: PathBuf,
    /// New or empty directory for the manifest and slot files.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Data shards per stripe (k): any k of the n = k + m slots rebuild the file.
    #[arg(long, short = 'k', default_value_t = 4)]
    pub data_shards: u16,
    /// Parity shards per stripe (m): how many slots may be lost.
    #[arg(long, short = 'm', default_value_t = 2)]
    pub parity_shards: u16,
    /// Shard size: a power of two from 64KiB to 4MiB.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub shard_size: u64,
    /// Name recorded in the manifest [default: the file's name].
    #[arg(long)]
    pub name: Option<String>,
    /// Media type recorded in the manifest [default: guessed from the extension].
    #[arg(long)]
    pub media_type: Option<String>,
    /// Worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// Directory written by `atlas encode`.
    pub dir: PathBuf,
    /// Where to write the rebuilt file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Directory written by `atlas encode`.
    pub dir: PathBuf,
}

pub fn encode(ctx: &Context, args: EncodeArgs) -> Result<()> {
    let key = ctx.home()?.load_key()?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut progress = Progress::new("encoding", 0, ctx.quiet);
    let signed = encode_file(
        &key,
        &EncodeRequest {
            file: &args.file,
            out: &args.out,
            data_shards: args.data_shards,
            parity_shards: args.parity_shards,
            shard_size: args.shard_size,
            name: args.name.clone(),
            media_type: args.media_type.clone(),
            threads,
        },
        &mut |done, total| {
            progress.set_total(total);
            progress.update(done)
        },
    )?;
    progress.finish();
    let secs = progress.elapsed();
    let layout = signed.layout();
    if ctx.json {
        ctx.print_json(&json!({
            "object_id": signed.id().to_string(),
            "name": signed.manifest().name,
            "media_type": signed.manifest().media_type,
            "size": layout.size(),
            "file_hash": hex::encode(signed.manifest().file_hash),
            "data_shards": layout.data_shards(),
            "parity_shards": layout.parity_shards(),
            "shard_size": layout.shard_size(),
            "stripes": layout.stripes(),
            "slot_len": layout.slot_len(),
            "slot_roots": signed.manifest().slot_roots.iter().map(hex::encode).collect::<Vec<_>>(),
            "out": args.out,
            "seconds": secs,
        }));
    } else {
        println!("{}", signed.id());
        eprintln!(
            "encoded {} ({}) as {}+{} with {} shards into {} slots of {} in {} ({:.0} MB/s)",
            args.file.display(),
            format_size(layout.size()),
            layout.data_shards(),
            layout.parity_shards(),
            format_size(layout.shard_size()),
            layout.total_shards(),
            format_size(layout.slot_len()),
            args.out.display(),
            layout.size() as f64 / secs.max(1e-9) / 1e6,
        );
    }
    Ok(())
}

pub fn decode(ctx: &Context, args: DecodeArgs) -> Result<()> {
    super::check_output(&args.out, args.force)?;
    let mut dir = open_dir(&args.dir)?;
    let size = dir.layout().size();
    let mut progress = Progress::new("decoding", size, ctx.quiet);
    let result = dir.decode_to(&args.out, &mut |done| progress.update(done));
    progress.finish();
    let health = dir.seen_health();
    let stats = match result {
        Ok(stats) => stats,
        Err(SlotDirError::Decode(DecodeError::NotEnoughShards {
            stripe,
            available,
            needed,
        })) => bail!(
            "cannot rebuild {}: stripe {stripe} has only {available} of the {needed} good shards it needs ({}); nothing was written",
            args.dir.display(),
            describe_bad(&health)
        ),
        Err(e) => return Err(e.into()),
    };
    let bad: Vec<usize> = (0..health.len()).filter(|&j| !health[j].is_ok()).collect();
    if ctx.json {
        ctx.print_json(&json!({
            "object_id": dir.manifest().id().to_string(),
            "out": args.out,
            "size": stats.bytes_written,
            "verified": true,
            "stripes": stats.stripes,
            "reconstructed_stripes": stats.reconstructed_stripes,
            "bad_slots": bad,
        }));
    } else {
        println!(
            "wrote {} ({}), BLAKE3 verified",
            args.out.display(),
            format_size(stats.bytes_written)
        );
        if !bad.is_empty() {
            eprintln!(
                "rebuilt {} of {} stripes from parity; damaged slots: {}",
                stats.reconstructed_stripes,
                stats.stripes,
                describe_bad(&health)
            );
        }
    }
    Ok(())
}

pub fn verify(ctx: &Context, args: VerifyArgs) -> Result<()> {
    let mut dir = open_dir(&args.dir)?;
    let layout = *dir.layout();
    let n = layout.total_shards();
    let mut progress = Progress::new("verifying", layout.slot_len() * n as u64, ctx.quiet);
    let mut done = 0u64;
    let health: Vec<SlotHealth> = (0..n)
        .map(|j| {
            dir.check_slot(j, &mut |bytes| {
                done += bytes;
                progress.update(done);
            })
        })
        .collect();
    progress.finish();
    // A stripe is recoverable while at least k of its shards are good.
    let stripes = layout.stripes();
    let mut good = vec![0usize; stripes as usize];
    for h in &health {
        match h {
            SlotHealth::Ok => good.iter_mut().for_each(|g| *g += 1),
            SlotHealth::BadShards(bad) => {
                for (s, g) in good.iter_mut().enumerate() {
                    if !bad.contains(&(s as u64)) {
                        *g += 1;
                    }
                }
            }
            _ => {}
        }
    }
    let recoverable = good.iter().all(|&g| g >= layout.data_shards());
    let bad: Vec<usize> = (0..n).filter(|&j| !health[j].is_ok()).collect();
    let manifest = dir.manifest();
    if ctx.json {
        ctx.print_json(&json!({
            "object_id": manifest.id().to_string(),
            "name": manifest.manifest().name,
            "size": layout.size(),
            "creator": manifest.manifest().creator.to_string(),
            "slots": health.iter().enumerate().map(|(j, h)| json!({
                "slot": j,
                "ok": h.is_ok(),
                "state": h.describe(),
            })).collect::<Vec<_>>(),
            "bad_slots": bad,
            "recoverable": recoverable,
        }));
    } else {
        println!("object   {}", manifest.id());
        println!(
            "file     {} ({}), {}+{}, {} shards",
            manifest.manifest().name,
            format_size(layout.size()),
            layout.data_shards(),
            layout.parity_shards(),
            format_size(layout.shard_size())
        );
        println!("creator  {} (signature ok)", manifest.manifest().creator);
        for (j, h) in health.iter().enumerate() {
            println!("slot {j:>3}  {}", h.describe());
        }
    }
    if bad.is_empty() {
        if !ctx.json {
            println!("all {n} slots ok");
        }
        return Ok(());
    }
    let list = bad
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if recoverable {
        bail!(
            "{} of {n} slots bad ({list}); the file is still recoverable with `atlas decode`",
            bad.len()
        )
    } else {
        bail!(
            "{} of {n} slots bad ({list}); some stripes have fewer than {} good shards: the file cannot be rebuilt",
            bad.len(),
            layout.data_shards()
        )
    }
}

fn open_dir(path: &Path) -> Result<SlotDir> {
    match SlotDir::open(path) {
        Ok(d) => Ok(d),
        Err(SlotDirError::Manifest { path, source }) => {
            bail!("{}: manifest rejected: {source}", path.display())
        }
        Err(SlotDirError::Io { path, source }) if source.kind() == std::io::ErrorKind::NotFound => {
            bail!("{} does not exist", path.display())
        }
        Err(e) => Err(e.into()),
    }
}

fn describe_bad(health: &[SlotHealth]) -> String {
    let parts: Vec<String> = health
        .iter()
        .enumerate()
        .filter(|(_, h)| !h.is_ok())
        .map(|(j, h)| format!("slot {j} {}", h.describe()))
        .collect();
    if parts.is_empty() {
        "no slot reported damage".into()
    } else {
        parts.join("; ")
    }
}
