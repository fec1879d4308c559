//! The `atlas` command line.

mod creator;
mod gateway;
mod key;
mod ledger;
mod local;
mod progress;
mod provider;
mod testnet;
mod wallet;

use anyhow::{anyhow, Result};
use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;
use std::path::PathBuf;

/// Where the ledger is, for every command that talks to it: parsed once, from `--ledger` or
/// `$ATLAS_LEDGER`.
#[derive(Debug, Clone, Args)]
pub struct LedgerArg {
    /// The ledger's multiaddr with /p2p/ (what `atlas ledger run` and `atlas testnet up` print).
    #[arg(
        long = "ledger",
        env = "ATLAS_LEDGER",
        global = true,
        value_name = "MULTIADDR",
        value_parser = parse_ledger
    )]
    ledger: Option<Multiaddr>,
}

fn parse_ledger(text: &str) -> Result<Multiaddr, String> {
    crate::ledger::parse_ledger_addr(text).map_err(|e| format!("{e:#}"))
}

impl LedgerArg {
    /// The address, or a clear error saying where to get one.
    pub fn addr(&self) -> Result<Multiaddr> {
        self.ledger.clone().ok_or_else(|| {
            anyhow!("no ledger address: set ATLAS_LEDGER (or --ledger) to the /p2p/ multiaddr `atlas ledger run` prints")
        })
    }
}

/// Atlas: a decentralized storage network for video.
///
/// Creators pin videos; independent providers hold erasure-coded slots of them and prove every epoch
/// that they still do. The local commands (`encode`, `decode`, `verify`) work on a directory without
/// any network.
#[derive(Debug, Parser)]
#[command(name = "atlas", version, propagate_version = true)]
pub struct Cli {
    /// Directory for this node's key, config and data [env: ATLAS_HOME, default: ~/.atlas]
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,

    /// Settings file [env: ATLAS_CONFIG, default: atlas.toml in the home, if there is one].
    /// Flags and environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print one JSON document on stdout instead of text (for commands that report state).
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress lines on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage this node's ed25519 key.
    #[command(subcommand)]
    Key(key::KeyCommand),
    /// Erasure-code a file into a directory of slot files and a signed manifest (no network).
    Encode(local::EncodeArgs),
    /// Rebuild the original file from an encoded directory, with up to m slots missing or corrupted.
    Decode(local::DecodeArgs),
    /// Check every slot of an encoded directory and name the bad ones.
    Verify(local::VerifyArgs),
    /// The settlement ledger (devnet sequencer).
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// Balance, devnet faucet and transfers for this key.
    Wallet(wallet::WalletArgs),
    /// The storage provider service.
    #[command(subcommand)]
    Provider(provider::ProviderCommand),
    /// Encode a file, open a deal with the escrow and upload its slots to providers.
    Pin(creator::PinArgs),
    /// Rebuild a pinned object from its holders, verified; works with up to m holders missing.
    Get(creator::GetArgs),
    /// Holders, slot states, proofs, payouts and escrow of one object.
    Status(creator::StatusArgs),
    /// This creator's catalogue with health and escrow.
    Ls(creator::LsArgs),
    /// Top up, extend or cancel a deal.
    Deal(creator::DealArgs),
    /// The HTTP gateway: stream pinned videos to browsers and players.
    #[command(subcommand)]
    Gateway(gateway::GatewayCommand),
    /// A local network on loopback: a ledger, providers and a gateway, one process each.
    #[command(subcommand)]
    Testnet(testnet::TestnetCommand),
}

/// Parses the command line with `atlas.toml`'s settings as the defaults of their flags. Prints
/// help, the version or a usage error and exits where clap would.
pub fn parse(args: Vec<std::ffi::OsString>) -> Result<Cli> {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let settings = match crate::config::locate(&args) {
        Ok(Some(path)) => crate::config::read(&path)?,
        // No home at all: commands that need one say so; the rest run on defaults.
        Ok(None) | Err(_) => Vec::new(),
    };
    let cmd = crate::config::apply(Cli::command(), &settings);
    let matches = cmd.try_get_matches_from(args).unwrap_or_else(|e| e.exit());
    Cli::from_arg_matches(&matches).map_err(|e| anyhow!("{e}"))
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let ctx = Context {
        home: cli.home,
        json: cli.json,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Key(cmd) => key::run(&ctx, cmd),
        Command::Encode(args) => local::encode(&ctx, args),
        Command::Decode(args) => local::decode(&ctx, args),
        Command::Verify(args) => local::verify(&ctx, args),
        Command::Ledger(cmd) => ledger::run(&ctx, cmd),
        Command::Wallet(args) => wallet::run(&ctx, args),
        Command::Provider(cmd) => provider::run(&ctx, cmd),
        Command::Pin(args) => creator::pin(&ctx, args),
        Command::Get(args) => creator::get(&ctx, args),
        Command::Status(args) => creator::status(&ctx, args),
        Command::Ls(args) => creator::ls(&ctx, args),
        Command::Deal(args) => creator::deal(&ctx, args),
        Command::Gateway(cmd) => gateway::run(&ctx, cmd),
        Command::Testnet(cmd) => testnet::run(&ctx, cmd),
    }
}

/// A multi-threaded runtime for commands that use the network.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Refuses to replace an existing output file unless `force`.
pub fn check_output(out: &std::path::Path, force: bool) -> Result<()> {
    if out.exists() && !force {
        anyhow::bail!(
            "{} already exists; choose another --out or pass --force",
            out.display()
        );
    }
    Ok(())
}

/// Prints a service's listen addresses, starts its metrics endpoint if asked, and flushes stdout
/// (scripts wait for these lines).
pub async fn announce(
    net: &crate::net::NetHandle,
    registry: prometheus_client::registry::Registry,
    metrics: Option<std::net::SocketAddr>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<()> {
    for addr in net.listen_addrs() {
        println!("listening on {addr}");
    }
    if let Some(addr) = metrics {
        let bound = crate::metrics::serve(addr, registry, shutdown.clone())
            .await
            .map_err(|e| anyhow!("cannot listen for metrics on {addr}: {e}"))?;
        println!("metrics on http://{bound}/metrics");
    }
    flush_stdout();
    Ok(())
}

/// Makes sure what was printed reaches a pipe before the process blocks (scripts read it).
pub fn flush_stdout() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

/// Options every command sees.
#[derive(Debug)]
pub struct Context {
    pub home: Option<PathBuf>,
    pub json: bool,
    pub quiet: bool,
}

impl Context {
    pub fn home(&self) -> Result<crate::config::home::Home> {
        Ok(crate::config::home::Home::resolve(self.home.clone())?)
    }

    /// Prints a JSON value as one document on stdout.
    pub fn print_json(&self, value: &serde_json::Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("a JSON value always serializes")
        );
    }
}
