//! The slot-store contract as executable checks. Every [`SlotStore`] implementation runs each of
//! them as its own test (see `main.rs`); a new implementation is done when they all pass.

use atlas_protocol::challenge::Challenge;
use atlas_protocol::tree::{shard_level, verify_shard, Outboard, VerifiedShard, GROUP_LEN};
use atlas_protocol::{DealId, ObjectId};
use atlas_storage::{PutOutcome, SlotKey, SlotSpec, SlotStore, StoreError};

/// Opens stores for the suite.
pub trait Harness {
    type Store: SlotStore;
    /// A new, empty store.
    fn open(&mut self, capacity: u64) -> Self::Store;
    /// Closes `store` and opens it again over the same data, as after a restart. A store that keeps
    /// nothing across restarts returns `None`.
    fn reopen(&mut self, store: Self::Store, capacity: u64) -> Option<Self::Store>;
}

/// A slot's bytes, root and outboard, from a seed.
#[derive(Debug)]
pub struct Fixture {
    pub key: SlotKey,
    pub spec: SlotSpec,
    pub bytes: Vec<u8>,
    pub outboard: Outboard,
}

impl Fixture {
    pub fn new(seed: u8, slot: u16, stripes: u64, shard_size: u64) -> Self {
        let mut bytes = vec![0u8; (stripes * shard_size) as usize];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut bytes);
        let outboard = Outboard::from_slot(&bytes).expect("fixture length is valid");
        let spec = SlotSpec {
            root: *outboard.root().as_bytes(),
            shard_size,
            stripes,
        };
        let key = SlotKey::new(ObjectId(*blake3::hash(&[seed, 1]).as_bytes()), slot);
        Self {
            key,
            spec,
            bytes,
            outboard,
        }
    }

    pub fn shard(&self, stripe: u64) -> VerifiedShard {
        let c = self.spec.shard_size;
        let bytes = self.bytes[(stripe * c) as usize..((stripe + 1) * c) as usize].to_vec();
        let level = shard_level(c);
        let siblings = if level == self.outboard.shape().height() {
            Vec::new()
        } else {
            self.outboard
                .siblings(level, stripe)
                .expect("stripe is in range")
        };
        VerifiedShard::verify(
            &self.spec.root(),
            self.spec.stripes,
            stripe,
            bytes,
            &siblings,
        )
        .expect("fixture shards verify")
    }

    fn fill(&self, store: &impl SlotStore) {
        store.create_slot(self.key, self.spec).expect("create");
        for s in 0..self.spec.stripes {
            store.put_shard(self.key, &self.shard(s)).expect("put");
        }
    }
}

const C: u64 = 64 * 1024;
const BIG: u64 = 1 << 40;

pub fn imported_slots_are_complete_and_provable<H: Harness>(h: &mut H) {
    let store = h.open(BIG);
    let f = Fixture::new(11, 2, 5, C);
    let path = std::env::temp_dir().join(format!(
        "atlas-import-{}-{:?}.tmp",
        std::process::id(),
        std::thread::current().id()
    ));
    // A file that is not the slot is refused and leaves nothing behind.
    let mut bad = f.bytes.clone();
    bad[3 * C as usize + 7] ^= 1;
    std::fs::write(&path, &bad).expect("write");
    assert!(matches!(
        store.import_slot(f.key, f.spec, &path),
        Err(StoreError::BadImport { .. })
    ));
    std::fs::write(&path, &f.bytes[..C as usize]).expect("write");
    assert!(matches!(
        store.import_slot(f.key, f.spec, &path),
        Err(StoreError::BadImport { .. })
    ));
    assert!(store.info(f.key).expect("info").is_none());
    assert_eq!(store.usage().stored, 0);

    std::fs::write(&path, &f.bytes).expect("write");
    store.import_slot(f.key, f.spec, &path).expect("import");
    assert!(store.info(f.key).expect("info").expect("slot").complete());
    assert_eq!(store.usage().stored, f.spec.len());
    assert_eq!(store.read(f.key, 0, f.spec.len()).expect("read"), f.bytes);
    let shape = f.spec.shape().expect("valid");
    let ch = Challenge::derive(&[5; 32], &DealId([2; 32]), 2, 1, shape.chunks(), 16);
    store
        .prove(f.key, &ch)
        .expect("prove")
        .verify(&ch, &shape, &f.spec.root())
        .expect("an imported slot proves");
    for s in 0..5 {
        let sib = store.shard_siblings(f.key, s).expect("siblings");
        let bytes = store.read(f.key, s * C, C).expect("read shard");
        verify_shard(&shape, &f.spec.root(), C, s, &bytes, &sib).expect("shard proof");
    }
    // Importing over an existing slot is a conflict.
    std::fs::write(&path, &f.bytes).expect("write");
    assert!(store.import_slot(f.key, f.spec, &path).is_err());
    let _ = std::fs::remove_file(&path);
    let store = match h.reopen(store, BIG) {
        Some(s) => s,
        None => return,
    };
    assert_eq!(
        store
            .read(f.key, 0, f.spec.len())
            .expect("read after restart"),
        f.bytes
    );
    assert_eq!(store.usage().stored, f.spec.len());
    let _ = std::fs::remove_file(&path);
}

pub fn batched_puts_store_like_single_puts<H: Harness>(h: &mut H) {
    let store = h.open(BIG);
    let f = Fixture::new(9, 3, 6, C);
    store.create_slot(f.key, f.spec).expect("create");
    // A batch with a duplicate inside it counts the shard once.
    let first = [f.shard(4), f.shard(1), f.shard(4)];
    assert_eq!(
        store.put_shards(f.key, &first).expect("batch"),
        PutOutcome::Stored
    );
    assert_eq!(
        store.put_shards(f.key, &[f.shard(1)]).expect("again"),
        PutOutcome::AlreadyStored
    );
    assert_eq!(store.usage().stored, 2 * C);
    let rest: Vec<_> = [0u64, 2, 3, 5, 1].iter().map(|&s| f.shard(s)).collect();
    assert_eq!(
        store.put_shards(f.key, &rest).expect("the rest"),
        PutOutcome::Completed
    );
    assert!(store.info(f.key).expect("info").expect("slot").complete());
    assert_eq!(store.usage().stored, 6 * C);
    // A batch naming a shard of another slot is refused whole.
    let g = Fixture::new(10, 4, 2, C);
    store.create_slot(g.key, g.spec).expect("create");
    assert!(store.put_shards(g.key, &[g.shard(0), f.shard(1)]).is_err());
    assert_eq!(
        store.info(g.key).expect("info").expect("slot").present,
        0,
        "nothing of a refused batch is stored"
    );
    // Durable: a reopened store serves every byte.
    let store = h.reopen(store, BIG).unwrap_or_else(|| h.open(BIG));
    if store.info(f.key).expect("info").is_none() {
        return; // a store that keeps nothing across restarts
    }
    for s in 0..6 {
        assert_eq!(
            store.read(f.key, s * C, C).expect("read"),
            f.shard(s).bytes(),
            "stripe {s}"
        );
    }
    assert_eq!(store.usage().stored, 6 * C);
}

pub fn shards_in_any_order_complete_the_slot<H: Harness>(h: &mut H) {
    let store = h.open(BIG);
    let f = Fixture::new(1, 0, 5, C);
    store.create_slot(f.key, f.spec).expect("create");
    store
        .create_slot(f.key, f.spec)
        .expect("creating again is a no-op");
    let order = [3u64, 0, 4, 1, 2];
    for (i, &s) in order.iter().enumerate() {
        let outcome = store.put_shard(f.key, &f.shard(s)).expect("put");
        let want = if i + 1 == order.len() {
            PutOutcome::Completed
        } else {
            PutOutcome::Stored
        };
        assert_eq!(outcome, want, "shard {s}");
        assert_eq!(
            store.put_shard(f.key, &f.shard(s)).expect("put again"),
            PutOutcome::AlreadyStored
        );
    }
    let info = store.info(f.key).expect("info").expect("slot exists");
    assert!(info.complete());
    assert_eq!(store.list().expect("list"), vec![(f.key, info)]);
}

pub fn reads_and_proofs_return_the_stored_bytes<H: Harness>(h: &mut H) {
    let store = h.open(BIG);
    for (seed, stripes) in [(2u8, 1u64), (3, 3), (4, 7)] {
        let f = Fixture::new(seed, 1, stripes, C);
        f.fill(&store);
        let len = f.spec.len();
        // Whole slot, single bytes, a 16 KiB group, and a span across the last shard boundary.
        let across = (len - C).max(3) - 3;
        for (off, n) in [
            (0, len),
            (1, 1),
            (across, 6),
            (len - 1, 1),
            (GROUP_LEN, GROUP_LEN),
        ] {
            let got = store.read(f.key, off, n).expect("read");
            assert_eq!(got, &f.bytes[off as usize..(off + n) as usize], "{off}+{n}");
        }
        assert!(matches!(
            store.read(f.key, len - 1, 2),
            Err(StoreError::OutOfRange { .. })
        ));
        let shape = f.spec.shape().expect("valid");
        for epoch in 0..4 {
            let ch = Challenge::derive(&[9; 32], &DealId([1; 32]), 1, epoch, shape.chunks(), 16);
            let proof = store.prove(f.key, &ch).expect("prove");
            proof
                .verify(&ch, &shape, &f.spec.root())
                .expect("the store's proof verifies");
        }
        let level = shard_level(C);
        for s in 0..stripes {
            let sib = store.shard_siblings(f.key, s).expect("siblings");
            let bytes = store.read(f.key, s * C, C).expect("read shard");
            verify_shard(&shape, &f.spec.root(), C, s, &bytes, &sib).expect("shard proof");
            if level < shape.height() {
                assert_eq!(sib, f.outboard.siblings(level, s).expect("in range"));
            }
        }
    }
}

pub fn partial_slots_serve_stored_shards_only<H: Harness>(h: &mut H) {
    let store = h.open(BIG);
    let f = Fixture::new(5, 2, 4, C);
    store.create_slot(f.key, f.spec).expect("create");
    store.put_shard(f.key, &f.shard(1)).expect("put");
    assert_eq!(
        store.read(f.key, C, C).expect("stored shard"),
        &f.bytes[C as usize..2 * C as usize]
    );
    assert!(matches!(
        store.read(f.key, C - 1, 2),
        Err(StoreError::NotStored { .. })
    ));
    let ch = Challenge::derive(&[1; 32], &DealId([2; 32]), 2, 0, 256, 16);
    assert!(matches!(
        store.prove(f.key, &ch),
        Err(StoreError::Incomplete { present: 1, .. })
    ));
    assert_eq!(store.info(f.key).expect("info").expect("exists").present, 1);
}

pub fn capacity_is_enforced_and_leaves_nothing_behind<H: Harness>(h: &mut H) {
    let store = h.open(10 * C);
    let a = Fixture::new(6, 0, 4, C);
    let b = Fixture::new(7, 0, 4, C);
    let c = Fixture::new(8, 0, 3, C);
    a.fill(&store);
    store.create_slot(b.key, b.spec).expect("8 of 10 fits");
    let before = store.usage();
    match store.create_slot(c.key, c.spec) {
        Err(StoreError::CapacityExceeded {
            need,
            free,
            capacity,
            ..
        }) => assert_eq!((need, free, capacity), (3 * C, 2 * C, 10 * C)),
        other => panic!("expected CapacityExceeded, got {other:?}"),
    }
    assert_eq!(
        store.usage(),
        before,
        "a refused slot changes no accounting"
    );
    assert!(store.info(c.key).expect("info").is_none());
    assert_eq!(store.list().expect("list").len(), 2);
    assert!(store.delete_slot(a.key).expect("delete"));
    c.fill(&store);
    assert_eq!(store.usage().reserved, 7 * C);
    assert_eq!(store.usage().stored, 3 * C);
}

pub fn usage_is_exact_and_survives_restart<H: Harness>(h: &mut H) {
    let store = h.open(BIG);
    let a = Fixture::new(9, 0, 3, C);
    let b = Fixture::new(10, 3, 5, 2 * C);
    a.fill(&store);
    store.create_slot(b.key, b.spec).expect("create");
    store.put_shard(b.key, &b.shard(0)).expect("put");
    store.put_shard(b.key, &b.shard(4)).expect("put");
    let usage = store.usage();
    assert_eq!(usage.reserved, 3 * C + 10 * C);
    assert_eq!(usage.stored, 3 * C + 4 * C);
    let Some(store) = h.reopen(store, BIG) else {
        return;
    };
    assert_eq!(store.usage(), usage);
    assert_eq!(store.info(b.key).expect("info").expect("exists").present, 2);
    assert_eq!(
        store.read(b.key, 8 * C, 2 * C).expect("read after restart"),
        &b.bytes[8 * C as usize..]
    );
    let shape = a.spec.shape().expect("valid");
    let ch = Challenge::derive(&[3; 32], &DealId([3; 32]), 0, 1, shape.chunks(), 16);
    store
        .prove(a.key, &ch)
        .expect("prove after restart")
        .verify(&ch, &shape, &a.spec.root())
        .expect("verifies");
    // The restarted store takes the remaining shards and completes the slot.
    for s in 1..4 {
        store
            .put_shard(b.key, &b.shard(s))
            .expect("put after restart");
    }
    assert!(store.info(b.key).expect("info").expect("exists").complete());
    assert_eq!(store.usage().stored, 13 * C);
}

pub fn wrong_shards_and_conflicts_are_refused<H: Harness>(h: &mut H) {
    let store = h.open(BIG);
    let a = Fixture::new(11, 0, 3, C);
    let b = Fixture::new(12, 0, 3, C);
    store.create_slot(a.key, a.spec).expect("create");
    assert!(matches!(
        store.put_shard(a.key, &b.shard(0)),
        Err(StoreError::WrongSlot(_))
    ));
    assert!(matches!(
        store.create_slot(a.key, b.spec),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.put_shard(b.key, &b.shard(0)),
        Err(StoreError::UnknownSlot(_))
    ));
    assert_eq!(store.usage().stored, 0);
}

pub fn delete_frees_everything<H: Harness>(h: &mut H) {
    let store = h.open(BIG);
    let a = Fixture::new(13, 0, 3, C);
    a.fill(&store);
    assert!(store.delete_slot(a.key).expect("delete"));
    assert!(!store.delete_slot(a.key).expect("delete again"));
    assert!(store.info(a.key).expect("info").is_none());
    assert!(matches!(
        store.read(a.key, 0, 1),
        Err(StoreError::UnknownSlot(_))
    ));
    let usage = store.usage();
    assert_eq!((usage.reserved, usage.stored), (0, 0));
    let Some(store) = h.reopen(store, BIG) else {
        return;
    };
    assert!(store.list().expect("list").is_empty());
    // The same slot can be stored again from scratch.
    a.fill(&store);
    assert_eq!(store.usage().stored, 3 * C);
}
