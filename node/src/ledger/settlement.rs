//! The settlement boundary: everything the provider, creator, gateway and repair code need from
//! wherever deals are settled (the devnet ledger today; an EVM chain can be a second host) behind
//! one trait, so adding a host touches none of those services.

use super::client::{LedgerClient, LedgerError, Sent};
use atlas_protocol::escrow::{Account, ChainId, Deal, Provider, TxBody};
use atlas_protocol::wire::{ChainStatus, DealQuery};
use atlas_protocol::{DealId, Keypair, PublicKey};
use futures::future::BoxFuture;

type Answer<'a, T> = BoxFuture<'a, Result<T, LedgerError>>;

/// Submissions, queries, epochs and beacons of a settlement host.
///
/// Every answer is the host's view of the next block's state: what a submitter was told is
/// accepted shows at once (its nonce, a deal it opened). Events are read by polling
/// [`Settlement::status`] (its height, epoch and beacon), which a host answers in constant time.
pub trait Settlement: Send + Sync + std::fmt::Debug {
    /// Height, epoch, beacon and rules.
    fn status(&self) -> Answer<'_, ChainStatus>;
    /// The chain id every transaction must name.
    fn chain(&self) -> Answer<'_, ChainId>;
    fn account<'a>(&'a self, key: &'a PublicKey) -> Answer<'a, Account>;
    /// A registered provider, or `None`.
    fn provider<'a>(&'a self, key: &'a PublicKey) -> Answer<'a, Option<Provider>>;
    /// Every registered provider.
    fn providers(&self) -> Answer<'_, Vec<(PublicKey, Provider)>>;
    /// A deal (live, or ended from the archive), or `None` if it never existed.
    fn find(&self, id: DealId) -> Answer<'_, Option<Deal>>;
    /// Every live deal `query` selects.
    fn deals(&self, query: DealQuery) -> Answer<'_, Vec<(DealId, Deal)>>;
    /// Signs `body` with the key's next nonce and waits until it is in a block.
    fn submit<'a>(&'a self, key: &'a Keypair, body: TxBody) -> Answer<'a, Sent>;
    /// Signs `body` with the key's next nonce and waits until it is accepted and durable.
    fn enqueue<'a>(&'a self, key: &'a Keypair, body: TxBody) -> Answer<'a, Sent>;
    /// Signs `body` with exactly `nonce` and waits until it is accepted and durable.
    fn enqueue_at<'a>(&'a self, key: &'a Keypair, nonce: u64, body: TxBody) -> Answer<'a, Sent>;

    /// A deal that must exist.
    fn deal(&self, id: DealId) -> Answer<'_, Deal> {
        Box::pin(async move { self.find(id).await?.ok_or(LedgerError::NoSuchDeal(id)) })
    }
}

impl Settlement for LedgerClient {
    fn status(&self) -> Answer<'_, ChainStatus> {
        Box::pin(LedgerClient::status(self))
    }
    fn chain(&self) -> Answer<'_, ChainId> {
        Box::pin(LedgerClient::chain(self))
    }
    fn account<'a>(&'a self, key: &'a PublicKey) -> Answer<'a, Account> {
        Box::pin(LedgerClient::account(self, key))
    }
    fn provider<'a>(&'a self, key: &'a PublicKey) -> Answer<'a, Option<Provider>> {
        Box::pin(LedgerClient::provider(self, key))
    }
    fn providers(&self) -> Answer<'_, Vec<(PublicKey, Provider)>> {
        Box::pin(LedgerClient::providers(self))
    }
    fn find(&self, id: DealId) -> Answer<'_, Option<Deal>> {
        Box::pin(LedgerClient::find(self, id))
    }
    fn deals(&self, query: DealQuery) -> Answer<'_, Vec<(DealId, Deal)>> {
        Box::pin(LedgerClient::deals(self, query))
    }
    fn submit<'a>(&'a self, key: &'a Keypair, body: TxBody) -> Answer<'a, Sent> {
        Box::pin(LedgerClient::submit(self, key, body))
    }
    fn enqueue<'a>(&'a self, key: &'a Keypair, body: TxBody) -> Answer<'a, Sent> {
        Box::pin(LedgerClient::enqueue(self, key, body))
    }
    fn enqueue_at<'a>(&'a self, key: &'a Keypair, nonce: u64, body: TxBody) -> Answer<'a, Sent> {
        Box::pin(LedgerClient::enqueue_at(self, key, nonce, body))
    }
}
