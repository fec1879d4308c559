//! The Solidity libraries a dispute runs on (`Blake3.sol`, `EpochCommit.sol`) answer exactly as the
//! Rust rules do, on the compiled bytecode in an EVM: the same chunk CVs and slot roots as the
//! `blake3` crate, the same leaf hashes, paths, gaps and sample indices as `atlas_protocol`.

use atlas_evm::abi::{call, uint_at, word_at, Token};
use atlas_evm::{account, Address, Host};
use atlas_protocol::challenge::sample_index;
use atlas_protocol::commit::{
    verify_gap, verify_path, CommitError, EpochTree, LeafHeader, LeafKey, Placed,
};
use atlas_protocol::tree::{
    subtree_cv, ChunkProof, Outboard, TreeShape, CHUNK_LEN, GROUP_LEN, GROUP_LOG,
};
use atlas_protocol::DealId;
use proptest::prelude::*;

fn deployed(name: &str) -> (Host, Address) {
    let mut host = Host::new();
    let at = host.deploy(account(1), name, &[]).expect("deploys");
    (host, at)
}

fn slot(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

fn chunk_proof(bytes: &[u8], ob: &Outboard, shape: &TreeShape, index: u64) -> ChunkProof {
    let g = index >> GROUP_LOG;
    let upper = ob.siblings(GROUP_LOG, g).expect("in range");
    let group = &bytes[(g * GROUP_LEN) as usize..((g + 1) * GROUP_LEN) as usize];
    ChunkProof::build(shape, index, group, upper).expect("in range")
}

fn verify_chunk_call(p: &ChunkProof, chunks: u64, root: [u8; 32]) -> Vec<u8> {
    call(
        "verifyChunk(bytes,uint64,bytes32[],uint64,bytes32)",
        &[
            Token::Bytes(p.chunk.clone()),
            Token::uint(p.index.into()),
            Token::b32s(&p.siblings),
            Token::uint(chunks.into()),
            Token::b32(root),
        ],
    )
}

#[test]
fn blake3_in_the_evm_matches_the_blake3_crate_on_real_slots() {
    let (mut host, probe) = deployed("Blake3Probe");
    for (len, seed) in [(64 * 1024, 1u8), (5 * 64 * 1024, 2), (1 << 20, 3)] {
        let bytes = slot(len, seed);
        let ob = Outboard::from_slot(&bytes).expect("valid slot");
        let shape = ob.shape();
        let root = *blake3::hash(&bytes).as_bytes();
        let chunks = shape.chunks();
        for index in [0, 1, 17, chunks / 2 + 3, chunks - 1] {
            let start = (index * CHUNK_LEN) as usize;
            let chunk = &bytes[start..start + CHUNK_LEN as usize];
            let cv = host.call(
                account(2),
                probe,
                call(
                    "chunkCv(bytes,uint64)",
                    &[Token::Bytes(chunk.to_vec()), Token::uint(index.into())],
                ),
            );
            assert_eq!(word_at(cv.returned(), 0), subtree_cv(start as u64, chunk));

            let p = chunk_proof(&bytes, &ob, &shape, index);
            let ok = host.call(account(2), probe, verify_chunk_call(&p, chunks, root));
            assert_eq!(uint_at(ok.returned(), 0), 1, "slot {len}, chunk {index}");
            // Garbage in the chunk, a flipped sibling bit, another index, another root or one
            // sibling short: refused, as the Rust check refuses them.
            let mut bad = p.clone();
            bad.chunk[5] ^= 1;
            let mut sib = p.clone();
            sib.siblings[0][31] ^= 0x80;
            let mut moved = p.clone();
            moved.index = (index + 1) % chunks;
            let mut short = p.clone();
            short.siblings.pop();
            for (what, q, r) in [
                ("chunk", &bad, root),
                ("sibling", &sib, root),
                ("index", &moved, root),
                ("short path", &short, root),
                ("root", &p, [9; 32]),
            ] {
                assert!(q.verify(&shape, &blake3::Hash::from(r)).is_err());
                let got = host.call(account(2), probe, verify_chunk_call(q, chunks, r));
                assert_eq!(
                    uint_at(got.returned(), 0),
                    0,
                    "{what}: slot {len}, chunk {index}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn commitments_and_sample_indices_match_the_rust_rules(
        keys in prop::collection::btree_set((0u8..3, 0u16..4, 0u16..16), 1..40),
        epoch in any::<u64>(),
        beacon in any::<[u8; 32]>(),
        chunks in 1u64..(1 << 34),
        pick in any::<prop::sample::Index>(),
        probe in (0u8..3, 0u16..4, 0u16..16),
    ) {
        let (mut host, probe_at) = deployed("EpochCommitProbe");
        let hs: Vec<LeafHeader> = keys
            .iter()
            .map(|&(d, slot, k)| {
                let deal = DealId([d; 32]);
                LeafHeader {
                    key: LeafKey { deal, slot, k },
                    index: sample_index(&beacon, &deal, slot, epoch, k, chunks),
                    digest: atlas_protocol::commit::keccak(&[&[d, k as u8]]),
                }
            })
            .collect();
        let tree = EpochTree::build(epoch, &hs).expect("sorted");
        let h = hs[pick.index(hs.len())];
        let got = host.call(account(2), probe_at, call(
            "sampleIndex(bytes32,bytes32,uint16,uint64,uint16,uint64)",
            &[
                Token::b32(beacon),
                Token::b32(h.key.deal.0),
                Token::uint(h.key.slot.into()),
                Token::uint(epoch.into()),
                Token::uint(h.key.k.into()),
                Token::uint(chunks.into()),
            ],
        ));
        prop_assert_eq!(uint_at(got.returned(), 0), u128::from(h.index));

        let header = Token::Tuple(vec![
            Token::Tuple(vec![
                Token::b32(h.key.deal.0),
                Token::uint(h.key.slot.into()),
                Token::uint(h.key.k.into()),
            ]),
            Token::uint(h.index.into()),
            Token::b32(h.digest),
        ]);
        let got = host.call(account(2), probe_at, call(
            "leafHash(((bytes32,uint16,uint16),uint64,bytes32),uint64)",
            &[header, Token::uint(epoch.into())],
        ));
        prop_assert_eq!(word_at(got.returned(), 0), h.hash(epoch));

        // Every position's path, and a tampered one, get the same verdict on both hosts.
        let p = pick.index(hs.len()) as u32;
        let mut path = tree.path(p).expect("in range");
        for tamper in [false, true] {
            if tamper && !path.is_empty() {
                path[0][0] ^= 1;
            }
            let rust = verify_path(&tree.root(), tree.count(), p, hs[p as usize].hash(epoch), &path);
            let got = host.call(account(2), probe_at, call(
                "verifyPath(bytes32,uint32,uint32,bytes32,bytes32[])",
                &[
                    Token::b32(tree.root()),
                    Token::uint(tree.count().into()),
                    Token::uint(p.into()),
                    Token::b32(hs[p as usize].hash(epoch)),
                    Token::b32s(&path),
                ],
            ));
            let code = match rust {
                Ok(()) => 0,
                Err(atlas_protocol::commit::CommitError::OutOfRange { .. }) => 1,
                Err(atlas_protocol::commit::CommitError::WrongPathLength { .. }) => 2,
                Err(atlas_protocol::commit::CommitError::RootMismatch) => 3,
                Err(e) => panic!("unexpected {e}"),
            };
            prop_assert_eq!(uint_at(got.returned(), 0), code);
        }

        // A gap proof for a probe key, honest neighbours or shifted ones: the same verdict.
        let key = LeafKey { deal: DealId([probe.0; 32]), slot: probe.1, k: probe.2 };
        let at = hs.partition_point(|h| h.key < key) as u32;
        for (l, r) in [
            (at.checked_sub(1), (at < tree.count()).then_some(at)),
            (at.checked_sub(2), (at < tree.count()).then_some(at)),
            (None, (at < tree.count()).then_some(at)),
            (at.checked_sub(1), None),
        ] {
            let place = |p: u32| Placed { position: p, header: hs[p as usize], path: tree.path(p).expect("in range") };
            let (left, right) = (l.map(place), r.map(place));
            let rust = verify_gap(&tree.root(), tree.count(), epoch, &key, left.as_ref(), right.as_ref());
            let code = match rust {
                Ok(()) => 0,
                Err(CommitError::OutOfRange { .. }) => 1,
                Err(CommitError::WrongPathLength { .. }) => 2,
                Err(CommitError::RootMismatch) => 3,
                Err(CommitError::NotAdjacent) => 4,
                Err(CommitError::NotBracketed) => 5,
                Err(e) => panic!("unexpected {e}"),
            };
            let empty = Placed { position: 0, header: hs[0], path: Vec::new() };
            let got = host.call(account(2), probe_at, call(
                "verifyGap(bytes32,uint32,uint64,(bytes32,uint16,uint16),bool,(uint32,((bytes32,uint16,uint16),uint64,bytes32),bytes32[]),bool,(uint32,((bytes32,uint16,uint16),uint64,bytes32),bytes32[]))",
                &[
                    Token::b32(tree.root()),
                    Token::uint(tree.count().into()),
                    Token::uint(epoch.into()),
                    key_token(&key),
                    Token::bool(left.is_some()),
                    placed_token(left.as_ref().unwrap_or(&empty)),
                    Token::bool(right.is_some()),
                    placed_token(right.as_ref().unwrap_or(&empty)),
                ],
            ));
            prop_assert_eq!(uint_at(got.returned(), 0), code, "left {:?} right {:?}", l, r);
        }
    }
}

fn key_token(k: &LeafKey) -> Token {
    Token::Tuple(vec![
        Token::b32(k.deal.0),
        Token::uint(k.slot.into()),
        Token::uint(k.k.into()),
    ])
}

fn placed_token(p: &Placed) -> Token {
    Token::Tuple(vec![
        Token::uint(p.position.into()),
        Token::Tuple(vec![
            key_token(&p.header.key),
            Token::uint(p.header.index.into()),
            Token::b32(p.header.digest),
        ]),
        Token::b32s(&p.path),
    ])
}
