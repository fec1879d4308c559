//! The provider's metrics (`atlas_provider_*`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Default)]
pub(crate) struct ProviderMetrics {
    pub slots: Gauge,
    pub stored_bytes: Gauge,
    pub proofs: Family<Vec<(String, String)>, Counter>,
    pub shards_received: Counter,
    pub bytes_served: Counter,
    pub balance: Gauge,
    pub gc_deleted: Counter,
    pub puts_refused: Counter,
    pub streams_refused: Counter,
    pub streams_open: Gauge,
    pub put_bytes: Gauge,
    pub scrubbed_bytes: Counter,
    pub damaged_slots: Counter,
    pub repairs_running: Gauge,
    pub repaired_slots: Counter,
}

impl ProviderMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("atlas_provider");
        r.register("slots", "Slots held", m.slots.clone());
        r.register(
            "stored_bytes",
            "Bytes of shards stored",
            m.stored_bytes.clone(),
        );
        r.register(
            "proofs",
            "Storage proofs submitted, by result",
            m.proofs.clone(),
        );
        r.register(
            "shards_received",
            "Shards received and verified",
            m.shards_received.clone(),
        );
        r.register(
            "served_bytes",
            "Shard bytes served to readers",
            m.bytes_served.clone(),
        );
        r.register(
            "gc_deleted_slots",
            "Slots deleted because no live deal assigns them here any more",
            m.gc_deleted.clone(),
        );
        r.register(
            "puts_refused",
            "Shards refused: the slot is not assigned here and waiting for bytes, or its peer is over its share of bodies in flight",
            m.puts_refused.clone(),
        );
        r.register(
            "streams_refused",
            "Shard streams answered busy because their peer had its share open",
            m.streams_refused.clone(),
        );
        r.register(
            "shard_streams_open",
            "Shard streams being served now",
            m.streams_open.clone(),
        );
        r.register(
            "put_bytes_in_flight",
            "Bytes of shard bodies being received now, all peers together",
            m.put_bytes.clone(),
        );
        r.register(
            "scrubbed_bytes",
            "Stored bytes re-verified against their slot roots by the scrubber",
            m.scrubbed_bytes.clone(),
        );
        r.register(
            "damaged_slots",
            "Slots found damaged (unreadable, wrong length or not verifying), deleted and handed back for repair",
            m.damaged_slots.clone(),
        );
        r.register(
            "repairs_running",
            "Claimed slots being rebuilt here now",
            m.repairs_running.clone(),
        );
        r.register(
            "repaired_slots",
            "Claimed slots rebuilt, stored and accepted",
            m.repaired_slots.clone(),
        );
        r.register(
            "balance_tokens",
            "Account balance (earnings)",
            m.balance.clone(),
        );
        m
    }

    pub fn count_proof(&self, result: &str) {
        self.proofs
            .get_or_create(&vec![("result".into(), result.into())])
            .inc();
    }
}
