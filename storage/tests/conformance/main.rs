//! The slot-store conformance suite against both implementations.

use atlas_storage::conformance::{run_all, Harness};
use atlas_storage::{MemSlotStore, RocksSlotStore};

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

#[test]
fn memory_store_meets_the_contract() {
    run_all(&mut Mem);
}

#[test]
fn rocksdb_store_meets_the_contract() {
    run_all(&mut Rocks { dirs: Vec::new() });
}
