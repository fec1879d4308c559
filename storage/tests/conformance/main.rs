//! The slot-store conformance suite against both implementations: every check is its own test
//! for each store, so one failure never hides another.

mod suite;

use atlas_storage::{MemSlotStore, RocksSlotStore};
use suite::Harness;

struct Mem;

impl Harness for Mem {
    type Store = MemSlotStore;
    fn open(&mut self, capacity: u64) -> MemSlotStore {
        MemSlotStore::new(capacity)
    }
    fn reopen(&mut self, _store: MemSlotStore, _capacity: u64) -> Option<MemSlotStore> {
        None
    }
}

struct Rocks {
    dirs: Vec<tempfile::TempDir>,
}

impl Harness for Rocks {
    type Store = RocksSlotStore;
    fn open(&mut self, capacity: u64) -> RocksSlotStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = RocksSlotStore::open(dir.path(), capacity).expect("open");
        self.dirs.push(dir);
        store
    }
    fn reopen(&mut self, store: RocksSlotStore, capacity: u64) -> Option<RocksSlotStore> {
        drop(store);
        let dir = self.dirs.last().expect("opened before");
        Some(RocksSlotStore::open(dir.path(), capacity).expect("reopen"))
    }
}

/// One test per check, for the store `$harness` opens.
macro_rules! conformance {
    ($store:ident, $harness:expr, [$($check:ident),* $(,)?]) => {
        mod $store {
            use super::*;
            $(
                #[test]
                fn $check() {
                    suite::$check(&mut $harness);
                }
            )*
        }
    };
}

macro_rules! every_check {
    ($store:ident, $harness:expr) => {
        conformance!(
            $store,
            $harness,
            [
                shards_in_any_order_complete_the_slot,
                reads_and_proofs_return_the_stored_bytes,
                partial_slots_serve_stored_shards_only,
                capacity_is_enforced_and_leaves_nothing_behind,
                usage_is_exact_and_survives_restart,
                wrong_shards_and_conflicts_are_refused,
                delete_frees_everything,
                batched_puts_store_like_single_puts,
                imported_slots_are_complete_and_provable,
            ]
        );
    };
}

every_check!(memory, Mem);
every_check!(rocksdb, Rocks { dirs: Vec::new() });
