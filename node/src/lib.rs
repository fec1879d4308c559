//! # atlas-node
//!
//! The `atlas` binary and its library, one folder per service:
//!
//! - [`net`]: the libp2p node (one task owns the swarm) and [`wire`]: the framing of its two
//!   protocols.
//! - [`ledger`]: the devnet sequencer, its typed client, and the [`ledger::Settlement`] boundary
//!   every other service talks to deals through.
//! - [`provider`]: the storage provider: shard server, store thread, submitter, prover,
//!   repairer, garbage collector.
//! - [`client`]: encode, pin, find holders and read objects, verified.
//! - [`gateway`]: HTTP for browsers and players.
//! - [`config`]: the node home, `atlas.toml`, defaults and units.
//! - [`cli`]: the command line, the only place errors become `anyhow` lines.
//!
//! The rules the services follow live in `atlas-protocol` and the bytes they keep in
//! `atlas-storage`.

pub mod cli;
pub mod client;
pub mod config;
pub mod gateway;
pub mod ledger;
pub mod metrics;
pub mod net;
pub mod provider;
pub mod wire;

/// Logs to stderr, filtered by `ATLAS_LOG` (e.g. `debug`, `atlas_node=debug`), else `default`.
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ATLAS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
