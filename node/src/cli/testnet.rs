//! `atlas testnet up|status|down|kill`: a local multi-node network on loopback, one process per
//! node.

use super::Context;
use crate::config::defaults;
use crate::config::home::Home;
use crate::ledger::LedgerClient;
use crate::net;
use anyhow::{bail, Context as _, Result};
use atlas_protocol::escrow::TxBody;
use atlas_testnet::{Member, Plan, Role, Stopped, Testnet};
use clap::{Args, Subcommand};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Tokens the faucet gives the testnet's creator account when it runs low.
const CREATOR_FUNDS: u128 = 100_000_000_000;

#[derive(Debug, Subcommand)]
pub enum TestnetCommand {
    /// Start a ledger, N providers and a gateway as separate processes on loopback, fund a creator
    /// account, and wait until every provider is registered. Run again after `down` to resume.
    Up(UpArgs),
    /// Each process of the testnet: running or not, its address, metrics URL and memory.
    Status(DirArgs),
    /// Stop every process of the testnet, or the named ones. Nothing is lost: `up` resumes the
    /// same chain and slots.
    Down(DownArgs),
    /// Kill named processes at once with SIGKILL, as a crash or a power cut would, to watch the
    /// network recover (`up NAME` brings one back).
    Kill(KillArgs),
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// Stop only these members (`ledger`, `gateway`, `provider-03`, ...) [default: all].
    #[arg(value_name = "NAME")]
    pub only: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// Members to kill (`ledger`, `gateway`, `provider-03`, ...).
    #[arg(value_name = "NAME", required = true)]
    pub only: Vec<String>,
}

#[derive(Debug, Args)]
pub struct DirArgs {
    /// The testnet's directory [env: ATLAS_TESTNET_DIR, default: ~/.atlas/testnet].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// Provider processes to run [default: 8, or as many as the testnet had].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=500))]
    pub providers: Option<u16>,
    /// The ledger's TCP port; the gateway takes base+2, providers base+10 onwards (two ports each).
    /// Fixed by the first `up` [default: 7700].
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Ledger block time. Fixed by the first `up` [default: 500ms].
    #[arg(long)]
    pub block_time: Option<String>,
    /// Blocks per epoch. Fixed by the first `up` [default: 10].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub epoch_blocks: Option<u64>,
    /// Disk each provider offers. Fixed by the first `up` [default: 4GiB].
    #[arg(long)]
    pub capacity: Option<String>,
    /// How long to wait for every process to come up.
    #[arg(long, default_value = "120s", value_parser = crate::config::units::parse_duration)]
    pub timeout: Duration,
    /// Start only these members (`ledger`, `gateway`, `provider-03`, ...), say after `kill`;
    /// the others are left as they are [default: every member that is not running].
    #[arg(value_name = "NAME")]
    pub only: Vec<String>,
}

/// The members named in `only` (all of them when it is empty); an unknown name is an error that
/// lists the known ones.
fn chosen<'a>(members: &'a [Member], only: &[String]) -> Result<Vec<&'a Member>> {
    if only.is_empty() {
        return Ok(members.iter().collect());
    }
    for name in only {
        if !members.iter().any(|m| &m.name == name) {
            let known: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
            bail!(
                "this testnet has no member {name:?}; its members are {}",
                known.join(", ")
            );
        }
    }
    Ok(members.iter().filter(|m| only.contains(&m.name)).collect())
}

pub fn run(ctx: &Context, cmd: TestnetCommand) -> Result<()> {
    match cmd {
        TestnetCommand::Up(args) => up(ctx, args),
        TestnetCommand::Status(args) => status(ctx, args),
        TestnetCommand::Down(args) => down(ctx, args),
        TestnetCommand::Kill(args) => kill(ctx, args),
    }
}

fn testnet_dir(args: &DirArgs) -> Result<PathBuf> {
    if let Some(d) = &args.dir {
        return Ok(d.clone());
    }
    if let Some(d) = std::env::var_os("ATLAS_TESTNET_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; pass --dir")?;
    Ok(PathBuf::from(home).join(".atlas/testnet"))
}

fn load(args: &DirArgs) -> Result<Testnet> {
    let dir = testnet_dir(args)?;
    Testnet::load(&dir)?.with_context(|| {
        format!(
            "no testnet in {}; start one with `atlas testnet up --dir {}`",
            dir.display(),
            dir.display()
        )
    })
}

/// The ledger's full address, from its key (created here on the first `up`).
fn ledger_addr(t: &Testnet) -> Result<String> {
    let ledger = &t.members()[0];
    let key = Home::resolve(Some(ledger.home.clone()))?.load_or_generate_key()?;
    let peer = net::identity(&key)?.public().to_peer_id();
    Ok(format!(
        "/ip4/127.0.0.1/tcp/{}/p2p/{peer}",
        ledger.p2p_port.expect("the ledger listens")
    ))
}

fn say(ctx: &Context, text: impl AsRef<str>) {
    if !ctx.quiet {
        eprintln!("{}", text.as_ref());
    }
}

fn up(ctx: &Context, args: UpArgs) -> Result<()> {
    let dir = testnet_dir(&args.dir)?;
    let mut t = match Testnet::load(&dir)? {
        Some(t) => {
            let fixed = [
                (
                    "--base-port",
                    args.base_port.map(|v| v.to_string()),
                    t.plan.base_port.to_string(),
                ),
                (
                    "--block-time",
                    args.block_time.clone(),
                    t.plan.block_time.clone(),
                ),
                (
                    "--epoch-blocks",
                    args.epoch_blocks.map(|v| v.to_string()),
                    t.plan.epoch_blocks.to_string(),
                ),
                ("--capacity", args.capacity.clone(), t.plan.capacity.clone()),
            ];
            for (flag, asked, kept) in fixed {
                if asked.is_some_and(|a| a != kept) {
                    eprintln!(
                        "warning: keeping this testnet's {flag} {kept}; it is fixed by the first `up` (use a new --dir for another)"
                    );
                }
            }
            t
        }
        None => {
            let block_time = args
                .block_time
                .clone()
                .unwrap_or_else(|| defaults::BLOCK_TIME.into());
            let capacity = args
                .capacity
                .clone()
                .unwrap_or_else(|| defaults::CAPACITY.into());
            // Check what the first `up` fixes, so a typo fails here and not in a child's log.
            crate::config::units::parse_duration(&block_time)
                .map_err(|e| anyhow::anyhow!("--block-time: {e}"))?;
            crate::config::units::parse_size(&capacity)
                .map_err(|e| anyhow::anyhow!("--capacity: {e}"))?;
            Testnet {
                dir: dir.clone(),
                plan: Plan {
                    providers: defaults::TESTNET_PROVIDERS as usize,
                    base_port: args.base_port.unwrap_or(defaults::TESTNET_BASE_PORT),
                    block_time,
                    epoch_blocks: args.epoch_blocks.unwrap_or(defaults::EPOCH_BLOCKS),
                    capacity,
                },
            }
        }
    };
    if let Some(n) = args.providers {
        t.plan.providers = n as usize;
    }
    if Testnet::last_port(&t.plan).is_none() {
        bail!(
            "{} providers from base port {} run past port 65535; choose a lower --base-port",
            t.plan.providers,
            t.plan.base_port
        );
    }
    t.save()?;
    let exe = std::env::current_exe().context("cannot find the atlas binary to start")?;
    let members = t.members();
    let wanted: Vec<String> = chosen(&members, &args.only)?
        .into_iter()
        .map(|m| m.name.clone())
        .collect();
    let wanted = |m: &Member| wanted.contains(&m.name);

    // Ports of members to start must be free: say which are taken, and by whom if it is ours.
    // A member just killed may hold its ports for a moment while the kernel tears it down.
    let ports_free_by = Instant::now() + Duration::from_secs(10);
    let mut taken = Vec::new();
    for m in members
        .iter()
        .filter(|m| wanted(m) && atlas_testnet::running_pid(m).is_none())
    {
        for port in m.p2p_port.into_iter().chain([m.http_port]) {
            while !atlas_testnet::port_free(port) && Instant::now() < ports_free_by {
                std::thread::sleep(Duration::from_millis(50));
            }
            if !atlas_testnet::port_free(port) {
                taken.push(format!("{port} ({})", m.name));
            }
        }
    }
    if !taken.is_empty() {
        bail!(
            "ports already in use: {}; stop what uses them, or start a new testnet with another --dir and --base-port",
            taken.join(", ")
        );
    }

    let ledger_addr = ledger_addr(&t)?;
    let creator_home = Home::resolve(Some(t.creator_home()))?;
    let creator = creator_home.load_or_generate_key()?;
    let mut started = 0;
    let mut start = |m: &Member, env: &[(&str, &str)], extra: &[String]| -> Result<()> {
        if !wanted(m) || atlas_testnet::running_pid(m).is_some() {
            return Ok(());
        }
        let mut a = m.args(&t.plan);
        a.extend_from_slice(extra);
        atlas_testnet::spawn(&exe, m, &a, env)?;
        started += 1;
        Ok(())
    };
    let deadline = Instant::now() + args.timeout;
    let left = || deadline.saturating_duration_since(Instant::now());

    // The ledger first: everyone else needs it.
    let ledger = &members[0];
    start(ledger, &[], &[])?;
    if !wanted(ledger) && atlas_testnet::running_pid(ledger).is_none() {
        bail!("the ledger is not running; start it too (`atlas testnet up ledger ...`)");
    }
    if !atlas_testnet::wait_for_port(ledger.p2p_port.expect("listens"), left(), || {
        atlas_testnet::running_pid(ledger).is_some()
    }) {
        bail!(
            "the ledger did not come up; see {}",
            ledger.log_path().display()
        );
    }
    say(ctx, format!("ledger up at {ledger_addr}"));

    // Providers: keys made here so the wait below knows whom to look for.
    let mut provider_keys = Vec::new();
    for m in members
        .iter()
        .filter(|m| matches!(m.role, Role::Provider(_)) && wanted(m))
    {
        provider_keys.push((
            m,
            Home::resolve(Some(m.home.clone()))?
                .load_or_generate_key()?
                .public(),
        ));
        start(m, &[("ATLAS_LEDGER", &ledger_addr)], &[])?;
    }

    let runtime = super::runtime()?;
    let height = runtime.block_on(async {
        let addr = crate::ledger::parse_ledger_addr(&ledger_addr)?;
        let client = LedgerClient::connect(&creator, addr).await?;
        if client.account(&creator.public()).await?.balance < CREATOR_FUNDS / 10 {
            client
                .submit(&creator, TxBody::Faucet { amount: CREATOR_FUNDS })
                .await
                .context("funding the creator account from the faucet")?;
        }
        let mut shown = usize::MAX;
        loop {
            let mut registered = 0;
            for (_, key) in &provider_keys {
                if client.provider(key).await?.is_some() {
                    registered += 1;
                }
            }
            if registered != shown {
                say(
                    ctx,
                    format!("{registered}/{} providers registered", provider_keys.len()),
                );
                shown = registered;
            }
            if registered == provider_keys.len() {
                break;
            }
            if let Some((m, _)) = provider_keys
                .iter()
                .find(|(m, _)| atlas_testnet::running_pid(m).is_none())
            {
                bail!("{} exited; see {}", m.name, m.log_path().display());
            }
            if left().is_zero() {
                bail!(
                    "only {registered} of {} providers registered within {:?}; see their logs under {}",
                    provider_keys.len(),
                    args.timeout,
                    t.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::Ok(client.status().await?.height)
    })?;
    // A provider serves its metrics once it is registered and serving shards: on a resumed
    // testnet, registration alone says nothing about the processes just started.
    for (m, _) in &provider_keys {
        if !atlas_testnet::wait_for_port(m.http_port, left(), || {
            atlas_testnet::running_pid(m).is_some()
        }) {
            bail!("{} did not come up; see {}", m.name, m.log_path().display());
        }
    }

    let gateway = members.last().expect("planned");
    start(
        gateway,
        &[("ATLAS_LEDGER", &ledger_addr)],
        &["--creator".into(), creator.public().to_string()],
    )?;
    if wanted(gateway)
        && !atlas_testnet::wait_for_port(gateway.http_port, left(), || {
            atlas_testnet::running_pid(gateway).is_some()
        })
    {
        bail!(
            "the gateway did not come up; see {}",
            gateway.log_path().display()
        );
    }
    t.write_files(&ledger_addr)?;
    let gateway_url = format!("http://127.0.0.1:{}/", gateway.http_port);

    if ctx.json {
        ctx.print_json(&json!({
            "dir": t.dir,
            "env": t.env_path(),
            "ledger": ledger_addr,
            "gateway": gateway_url,
            "providers": t.plan.providers,
            "started": started,
            "height": height,
            "creator": creator.public().to_string(),
        }));
        return Ok(());
    }
    println!(
        "testnet up in {}: ledger, {} providers and a gateway ({started} started, the rest were running); chain at block {height}",
        t.dir.display(),
        t.plan.providers
    );
    println!();
    println!("Next:");
    println!(
        "  source {}        # use this network's ledger and funded creator key",
        t.env_path().display()
    );
    println!("  atlas pin VIDEO.mp4                # store a video; prints its object id");
    println!("  atlas ls                           # your catalogue, its health and escrow");
    println!("  open {gateway_url}          # watch it in a browser");
    println!("  atlas testnet status --dir {}", t.dir.display());
    println!(
        "  atlas testnet down --dir {}     # stop everything; `up` resumes",
        t.dir.display()
    );
    Ok(())
}

fn status(ctx: &Context, args: DirArgs) -> Result<()> {
    let t = load(&args)?;
    let ledger_addr = ledger_addr(&t)?;
    let rows: Vec<_> = t
        .members()
        .into_iter()
        .map(|m| {
            let pid = atlas_testnet::running_pid(&m);
            let addr = match (m.role, m.p2p_port) {
                (Role::Ledger, _) => ledger_addr.clone(),
                (Role::Gateway, _) => format!("http://127.0.0.1:{}/", m.http_port),
                (_, Some(port)) => format!("/ip4/127.0.0.1/tcp/{port}"),
                (_, None) => String::new(),
            };
            let rss = pid.and_then(atlas_testnet::rss_kib);
            (m, pid, addr, rss)
        })
        .collect();
    let up = rows.iter().filter(|r| r.1.is_some()).count();
    let chain = if rows[0].1.is_some() {
        let key = crate::config::home::ephemeral_key()?;
        super::runtime()?
            .block_on(async {
                let addr = crate::ledger::parse_ledger_addr(&ledger_addr)?;
                let client = LedgerClient::connect(&key, addr).await?;
                let status = tokio::time::timeout(Duration::from_secs(5), client.status())
                    .await
                    .context("the ledger did not answer")??;
                anyhow::Ok(status)
            })
            .ok()
    } else {
        None
    };
    if ctx.json {
        ctx.print_json(&json!({
            "dir": t.dir,
            "running": up,
            "total": rows.len(),
            "height": chain.as_ref().map(|c| c.height),
            "epoch": chain.as_ref().map(|c| c.epoch),
            "processes": rows.iter().map(|(m, pid, addr, rss)| json!({
                "name": m.name,
                "pid": pid,
                "running": pid.is_some(),
                "address": addr,
                "metrics": m.metrics_url(),
                "rss_kib": rss,
                "log": m.log_path(),
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    println!(
        "{:<12} {:>8} {:>8}  {:<40} metrics",
        "process", "pid", "rss", "address"
    );
    for (m, pid, addr, rss) in &rows {
        println!(
            "{:<12} {:>8} {:>8}  {:<40} {}",
            m.name,
            pid.map_or("stopped".to_string(), |p| p.to_string()),
            rss.map_or("-".to_string(), |k| format!("{:.1}M", k as f64 / 1024.0)),
            addr,
            m.metrics_url()
        );
    }
    match chain {
        Some(c) => println!(
            "{up} of {} processes running; chain at block {}, epoch {}",
            rows.len(),
            c.height,
            c.epoch
        ),
        None => println!(
            "{up} of {} processes running; the ledger is not answering",
            rows.len()
        ),
    }
    Ok(())
}

fn down(ctx: &Context, args: DownArgs) -> Result<()> {
    let t = load(&args.dir)?;
    let members = t.members();
    let chosen = chosen(&members, &args.only)?;
    // The gateway and providers first (in parallel: each gets its grace period), the ledger last,
    // so nobody is left talking to a ledger that is gone.
    let grace = Duration::from_secs(30);
    let (ledger, rest): (Vec<&Member>, Vec<&Member>) =
        chosen.into_iter().partition(|m| m.role == Role::Ledger);
    let outcomes: Vec<(String, Stopped)> = std::thread::scope(|s| {
        let handles: Vec<_> = rest
            .iter()
            .map(|m| s.spawn(move || (m.name.clone(), atlas_testnet::stop(m, grace))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("stop does not panic"))
            .collect()
    });
    let mut all = outcomes;
    for ledger in ledger {
        all.push((ledger.name.clone(), atlas_testnet::stop(ledger, grace)));
    }
    let stopped = all.iter().filter(|(_, o)| *o == Stopped::Clean).count();
    let killed: Vec<&str> = all
        .iter()
        .filter(|(_, o)| *o == Stopped::Killed)
        .map(|(n, _)| n.as_str())
        .collect();
    if ctx.json {
        ctx.print_json(&json!({
            "dir": t.dir,
            "stopped": stopped,
            "killed": killed,
            "not_running": all.iter().filter(|(_, o)| *o == Stopped::NotRunning).count(),
        }));
        return Ok(());
    }
    if args.only.is_empty() {
        println!(
            "testnet in {} is down: {stopped} processes stopped cleanly; data kept (`atlas testnet up --dir {}` resumes)",
            t.dir.display(),
            t.dir.display()
        );
    } else {
        println!(
            "stopped {} in {} ({stopped} cleanly); data kept (`atlas testnet up --dir {} NAME` restarts one)",
            args.only.join(", "),
            t.dir.display(),
            t.dir.display()
        );
    }
    if !killed.is_empty() {
        eprintln!(
            "warning: {} ignored the shutdown signal for {grace:?} and were killed",
            killed.join(", ")
        );
    }
    Ok(())
}

fn kill(ctx: &Context, args: KillArgs) -> Result<()> {
    let t = load(&args.dir)?;
    let members = t.members();
    let mut killed = Vec::new();
    let mut not_running = Vec::new();
    for m in chosen(&members, &args.only)? {
        match atlas_testnet::kill(m) {
            Stopped::NotRunning => not_running.push(m.name.as_str()),
            _ => killed.push(m.name.as_str()),
        }
    }
    if ctx.json {
        ctx.print_json(&json!({
            "dir": t.dir,
            "killed": killed,
            "not_running": not_running,
        }));
        return Ok(());
    }
    if !killed.is_empty() {
        println!(
            "killed {} (SIGKILL); `atlas testnet up --dir {} NAME` restarts one",
            killed.join(", "),
            t.dir.display()
        );
    }
    if !not_running.is_empty() {
        println!("not running: {}", not_running.join(", "));
    }
    Ok(())
}
