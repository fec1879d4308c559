//! Committed epoch proofs: a provider's keccak root over its sample leaves, the paths and gap proofs a
//! dispute carries, and the per-sample challenge they answer. Every check here is one a watcher or
//! the settlement rules make about a stranger's commitment, so each property asserts that what an
//! honest provider builds verifies and that any change an attacker could make does not.

use atlas_protocol::challenge::{sample_index, verify_sample, SampleError};
use atlas_protocol::commit::{
    keccak, path_len, verify_gap, verify_path, CommitError, EpochTree, LeafHeader, LeafKey, Placed,
    SampleLeaf, EMPTY_ROOT,
};
use atlas_protocol::tree::{ChunkProof, Outboard, TreeShape, GROUP_LEN, GROUP_LOG};
use atlas_protocol::DealId;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use std::collections::BTreeSet;

/// Distinct, sorted keys over a few deals and slots, with made-up digests.
fn headers(keys: &BTreeSet<(u8, u16, u16)>) -> Vec<LeafHeader> {
    keys.iter()
        .map(|&(d, slot, k)| LeafHeader {
            key: LeafKey {
                deal: DealId([d; 32]),
                slot,
                k,
            },
            index: u64::from(k) * 3 + u64::from(slot),
            digest: keccak(&[&[d], &slot.to_be_bytes(), &k.to_be_bytes()]),
        })
        .collect()
}

fn key_set() -> impl Strategy<Value = BTreeSet<(u8, u16, u16)>> {
    prop::collection::btree_set((0u8..4, 0u16..6, 0u16..16), 1..160)
}

fn placed(tree: &EpochTree, hs: &[LeafHeader], position: u32) -> Placed {
    Placed {
        position,
        header: hs[position as usize],
        path: tree.path(position).expect("well formed"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))), ..ProptestConfig::default() })]

    #[test]
    fn every_leaf_path_verifies_and_any_tampering_fails(
        keys in key_set(),
        epoch in any::<u64>(),
        pick in any::<prop::sample::Index>(),
        other in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let hs = headers(&keys);
        let tree = EpochTree::build(epoch, &hs).expect("well formed");
        let (root, count) = (tree.root(), tree.count());
        prop_assert_eq!(count as usize, hs.len());
        for (i, h) in hs.iter().enumerate() {
            let path = tree.path(i as u32).expect("well formed");
            prop_assert_eq!(path.len(), path_len(i as u32, count));
            prop_assert_eq!(verify_path(&root, count, i as u32, h.hash(epoch), &path), Ok(()));
        }

        let p = pick.index(hs.len()) as u32;
        let path = tree.path(p).expect("well formed");
        let leaf = hs[p as usize];
        // A changed byte of the header: key, index or digest.
        let mut bad = leaf;
        match bit % 4 {
            0 => bad.key.deal.0[pick.index(32)] ^= 1 << bit,
            1 => bad.key.k ^= 1 << (bit % 4),
            2 => bad.index ^= 1 << bit,
            _ => bad.digest[pick.index(32)] ^= 1 << bit,
        }
        prop_assert!(verify_path(&root, count, p, bad.hash(epoch), &path).is_err());
        // The same leaf claimed for another epoch.
        prop_assert!(verify_path(&root, count, p, leaf.hash(epoch ^ 1), &path).is_err());
        // A changed hash of the path.
        if !path.is_empty() {
            let mut bad_path = path.clone();
            bad_path[pick.index(path.len())][other.index(32)] ^= 1 << bit;
            prop_assert!(verify_path(&root, count, p, leaf.hash(epoch), &bad_path).is_err());
        }
        // Another position with the same path. (The leaf count is not bound by the root: it is
        // committed beside it, and every check uses the committed one.)
        let q = other.index(hs.len()) as u32;
        if q != p {
            prop_assert!(verify_path(&root, count, q, leaf.hash(epoch), &path).is_err());
        }
        prop_assert!(verify_path(&root, count, count, leaf.hash(epoch), &path).is_err());
    }

    #[test]
    fn a_missing_key_is_proven_by_its_neighbours_and_a_present_one_never_is(
        keys in key_set(),
        probe in (0u8..4, 0u16..6, 0u16..16),
        epoch in any::<u64>(),
    ) {
        let hs = headers(&keys);
        let tree = EpochTree::build(epoch, &hs).expect("well formed");
        let (root, count) = (tree.root(), tree.count());
        let key = headers(&BTreeSet::from([probe]))[0].key;
        // Where the key is, or would go.
        let at = hs.partition_point(|h| h.key < key) as u32;
        let left = at.checked_sub(1).map(|p| placed(&tree, &hs, p));
        let right = (at < count).then(|| placed(&tree, &hs, at));
        let present = right.as_ref().is_some_and(|r| r.header.key == key);
        let honest = verify_gap(&root, count, epoch, &key, left.as_ref(), right.as_ref());
        if present {
            prop_assert!(honest.is_err(), "a held key is never shown missing");
            // Nor with the key's own leaf as a neighbour on either side, or any other pair.
            let r = right.clone().expect("well formed");
            let after = (at + 1 < count).then(|| placed(&tree, &hs, at + 1));
            prop_assert!(verify_gap(&root, count, epoch, &key, Some(&r), after.as_ref()).is_err());
            prop_assert!(verify_gap(&root, count, epoch, &key, left.as_ref(), Some(&r)).is_err());
        } else {
            prop_assert_eq!(honest, Ok(()));
        }
        // Neighbours that are not adjacent, or a gap at an edge that is not the edge, prove nothing.
        if count >= 3 {
            let (a, b) = (placed(&tree, &hs, 0), placed(&tree, &hs, 2));
            prop_assert_eq!(
                verify_gap(&root, count, epoch, &key, Some(&a), Some(&b)),
                Err(CommitError::NotAdjacent)
            );
        }
        if count > 1 {
            let inner = placed(&tree, &hs, 1);
            prop_assert!(verify_gap(&root, count, epoch, &key, None, Some(&inner)).is_err());
            let inner = placed(&tree, &hs, count - 2);
            prop_assert!(verify_gap(&root, count, epoch, &key, Some(&inner), None).is_err());
        }
        prop_assert!(verify_gap(&root, count, epoch, &key, None, None).is_err());
        // A forged neighbour (a header that is not in the tree) proves nothing.
        if let Some(mut r) = right.clone() {
            r.header.key.k = r.header.key.k.wrapping_add(1);
            prop_assert!(verify_gap(&root, count, epoch, &key, left.as_ref(), Some(&r)).is_err());
        }
    }
}

#[test]
fn keys_out_of_order_are_refused_and_the_empty_commitment_is_zero() {
    let hs = headers(&BTreeSet::from([(1, 0, 0), (1, 0, 1), (2, 0, 0)]));
    let swapped = [hs[0], hs[2], hs[1]];
    assert_eq!(
        EpochTree::build(3, &swapped).expect_err("refused"),
        CommitError::Unsorted { position: 2 }
    );
    let empty = EpochTree::build(3, &[]).expect("well formed");
    assert_eq!((empty.root(), empty.count()), (EMPTY_ROOT, 0));
    // An empty commitment holds no key; a non-empty one cannot be passed off as empty.
    assert_eq!(
        verify_gap(&EMPTY_ROOT, 0, 3, &hs[0].key, None, None),
        Ok(())
    );
    let tree = EpochTree::build(3, &hs).expect("well formed");
    assert!(verify_gap(&tree.root(), 3, 3, &hs[0].key, None, None).is_err());
}

/// A slot of `len` bytes with varied content, its outboard and its root.
fn slot(len: usize) -> (Vec<u8>, Outboard, blake3::Hash) {
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[2])
        .collect();
    let ob = Outboard::from_slot(&bytes).expect("well formed");
    let root = blake3::hash(&bytes);
    (bytes, ob, root)
}

/// What an honest provider puts in its commitment for sample `k`.
fn honest_leaf(
    bytes: &[u8],
    ob: &Outboard,
    shape: &TreeShape,
    beacon: &[u8; 32],
    key: LeafKey,
    epoch: u64,
) -> SampleLeaf {
    let index = sample_index(beacon, &key.deal, key.slot, epoch, key.k, shape.chunks());
    let group = index >> GROUP_LOG;
    let upper = ob.siblings(GROUP_LOG, group).expect("in range");
    let g = &bytes[(group * GROUP_LEN) as usize..((group + 1) * GROUP_LEN) as usize];
    let proof = ChunkProof::build(shape, index, g, upper).expect("in range");
    SampleLeaf { key, proof }
}

#[test]
fn honest_samples_verify_and_a_wrong_chunk_index_or_epoch_is_caught() {
    let (bytes, ob, root) = slot(5 * 64 * 1024);
    let shape = ob.shape();
    let beacon = [4u8; 32];
    let deal = DealId([6; 32]);
    let epoch = 11;
    let leaves: Vec<SampleLeaf> = (0..16)
        .map(|k| {
            honest_leaf(
                &bytes,
                &ob,
                &shape,
                &beacon,
                LeafKey { deal, slot: 2, k },
                epoch,
            )
        })
        .collect();
    for leaf in &leaves {
        assert_eq!(
            verify_sample(leaf, &beacon, epoch, 16, &shape, &root),
            Ok(())
        );
    }
    // Under the committed root, each leaf's path verifies as published.
    let hs: Vec<LeafHeader> = leaves.iter().map(SampleLeaf::header).collect();
    let tree = EpochTree::build(epoch, &hs).expect("well formed");
    for (i, leaf) in leaves.iter().enumerate() {
        let path = tree.path(i as u32).expect("well formed");
        assert_eq!(
            verify_path(&tree.root(), 16, i as u32, leaf.hash(epoch), &path),
            Ok(())
        );
    }

    let leaf = &leaves[3];
    assert!(matches!(
        verify_sample(leaf, &beacon, epoch, 3, &shape, &root),
        Err(SampleError::NoSuchSample { k: 3, samples: 3 })
    ));
    // Last epoch's answer, or another beacon's: the index is wrong.
    assert!(matches!(
        verify_sample(leaf, &beacon, epoch + 1, 16, &shape, &root),
        Err(SampleError::WrongIndex { .. })
    ));
    assert!(matches!(
        verify_sample(leaf, &[5; 32], epoch, 16, &shape, &root),
        Err(SampleError::WrongIndex { .. })
    ));
    // A chunk it does not have, garbage in its place, or a sibling off by one bit.
    let mut garbage = leaf.clone();
    garbage.proof.chunk[100] ^= 0x40;
    assert!(matches!(
        verify_sample(&garbage, &beacon, epoch, 16, &shape, &root),
        Err(SampleError::Chunk { .. })
    ));
    let mut bad_sibling = leaf.clone();
    bad_sibling.proof.siblings[0][0] ^= 1;
    assert!(verify_sample(&bad_sibling, &beacon, epoch, 16, &shape, &root).is_err());
    let mut short = leaf.clone();
    short.proof.chunk.truncate(1000);
    assert!(verify_sample(&short, &beacon, epoch, 16, &shape, &root).is_err());
    // Another slot's root.
    let (_, _, other_root) = slot(5 * 64 * 1024 + 64 * 1024);
    assert!(verify_sample(leaf, &beacon, epoch, 16, &shape, &other_root).is_err());
    // Garbage changes the leaf hash, so a committed garbage leaf is a different leaf.
    assert_ne!(garbage.hash(epoch), leaf.hash(epoch));
}

/// A provider that kept 90% of a slot passes an epoch's 16 independent samples with probability
/// 0.9^16 = 18.5%; over 20,000 beacons the rate must be within 0.012 of it, which also shows the
/// draws are uniform and independent.
#[test]
fn keeping_ninety_percent_passes_sixteen_independent_samples_at_point_nine_to_the_sixteenth() {
    let chunks = 4096u64;
    let kept = chunks * 9 / 10;
    let trials = 20_000u64;
    let deal = DealId([5; 32]);
    let passes = (0..trials)
        .filter(|&epoch| {
            let beacon = keccak(&[&epoch.to_le_bytes()]);
            (0..16).all(|k| sample_index(&beacon, &deal, 1, epoch, k, chunks) < kept)
        })
        .count() as f64;
    let rate = passes / trials as f64;
    let exact = (kept as f64 / chunks as f64).powi(16);
    assert!(
        (rate - exact).abs() < 0.012,
        "pass rate {rate}, exact {exact}"
    );
}
