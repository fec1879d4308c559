//! The defaults every entry point shares: `atlas ledger run`, `atlas provider run`, `atlas pin`,
//! `atlas testnet up` and the example `atlas.toml` all take theirs from here.

/// Time between ledger blocks.
pub const BLOCK_TIME: &str = "500ms";
/// Blocks per epoch.
pub const EPOCH_BLOCKS: u64 = 10;
/// Disk a provider offers.
pub const CAPACITY: &str = "4GiB";
/// A provider's price per GiB per epoch, in base units.
pub const PRICE: u128 = 1000;
/// Collateral a provider locks with the ledger.
pub const COLLATERAL: u128 = 1_000_000;
/// Epochs an unassigned slot is kept before its bytes are deleted.
pub const GC_GRACE_EPOCHS: u64 = 6;
/// How often services look at the chain's head.
pub const POLL: &str = "500ms";
/// How long the provider's scrubber takes to re-verify every stored slot once.
pub const SCRUB_PASS: &str = "24h";
/// Data shards per stripe.
pub const DATA_SHARDS: u16 = 4;
/// Parity shards per stripe.
pub const PARITY_SHARDS: u16 = 2;
/// How long `atlas pin` keeps a file.
pub const DEAL_LENGTH: &str = "7d";
/// Where the gateway listens.
pub const GATEWAY_LISTEN: &str = "127.0.0.1:8080";
/// Providers in a new testnet.
pub const TESTNET_PROVIDERS: u16 = 8;
/// A new testnet's first port.
pub const TESTNET_BASE_PORT: u16 = 7700;
