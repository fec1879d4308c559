//! # atlas-node
//!
//! The `atlas` binary and its library: command line, node home (key, config, data), progress
//! reporting. The network services (ledger, provider, client, gateway) grow here; the rules they
//! follow live in `atlas-protocol` and the bytes they keep in `atlas-storage`.
//!
//! This is the only crate that uses `anyhow`: errors become one clear line at this edge.

pub mod cli;
pub mod client;
pub mod creator;
pub mod encode;
pub mod fetch;
pub mod gateway;
pub mod home;
pub mod ledger;
pub mod metrics;
pub mod net;
pub mod progress;
pub mod provider;
pub mod shard;
pub mod units;

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
