//! # atlas-node
//!
//! The `atlas` binary and its library: command line, node home (key, config, data), progress
//! reporting. The network services (ledger, provider, client, gateway) grow here; the rules they
//! follow live in `atlas-protocol` and the bytes they keep in `atlas-storage`.
//!
//! This is the only crate that uses `anyhow`: errors become one clear line at this edge.

pub mod cli;
pub mod home;
pub mod progress;
pub mod units;
