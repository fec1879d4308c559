//! The ledger's metrics (`atlas_ledger_*`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Default)]
pub(crate) struct LedgerMetrics {
    pub height: Gauge,
    pub epoch: Gauge,
    pub txs: Family<Vec<(String, String)>, Counter>,
    pub paid: Counter,
    pub slashed: Counter,
}

impl LedgerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("atlas_ledger");
        r.register("height", "Height of the newest block", m.height.clone());
        r.register("epoch", "Current epoch", m.epoch.clone());
        r.register(
            "transactions",
            "Transactions by kind and result",
            m.txs.clone(),
        );
        r.register(
            "paid_tokens",
            "Tokens paid to holders for proven epochs",
            m.paid.clone(),
        );
        r.register(
            "slashed_tokens",
            "Collateral slashed for missed proofs",
            m.slashed.clone(),
        );
        m
    }
}
