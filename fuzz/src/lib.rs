//! Fuzz targets: one function per decoder or verifier that takes bytes from outside. Each must
//! return (accept or refuse) for any input, never panic, abort or allocate by an untrusted
//! length; what it accepts must survive a round trip. libFuzzer drives them through
//! `fuzz/harness` (`scripts/fuzz.sh`); `tests/corpus.rs` replays the kept corpus and every crash
//! found so far as ordinary tests.

use atlas_protocol::chain::SignedHeader;
use atlas_protocol::escrow::SignedTx;
use atlas_protocol::layout::{MAX_SHARD_SIZE, MIN_SHARD_SIZE};
use atlas_protocol::manifest::{Manifest, SignedManifest, MANIFEST_VERSION};
use atlas_protocol::tree::{Outboard, TreeShape, VerifiedShard};
use atlas_protocol::wire::{
    self, LedgerRequest, LedgerResponse, ShardRequest, ShardResponse, MAX_LEDGER_REQUEST,
    MAX_LEDGER_RESPONSE, MAX_SHARD_HEADER,
};
use atlas_protocol::{Challenge, DealId, Keypair, StorageProof};
use serde::{de::DeserializeOwned, Serialize};

/// A fuzz target: takes any bytes.
pub type Target = fn(&[u8]);

/// Every target by name, as the harness and the corpus folders name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("ledger_wire", ledger_wire),
    ("shard_wire", shard_wire),
    ("signed_tx", signed_tx),
    ("block_header", block_header),
    ("manifest", manifest),
    ("range_header", range_header),
    ("storage_proof", storage_proof),
    ("outboard", outboard),
    ("shard", shard),
    ("encoded_dir", encoded_dir),
];

/// Decodes a message; whatever decodes encodes back to bytes that decode to the same value.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    data: &[u8],
    max: usize,
) {
    if let Ok(msg) = wire::decode::<T>(data, max) {
        let again: T = wire::decode(&wire::encode(&msg), max).expect("re-encoded message decodes");
        assert_eq!(again, msg);
    }
}

/// `/atlas/ledger/1` frames, both ways.
pub fn ledger_wire(data: &[u8]) {
    round_trip::<LedgerRequest>(data, MAX_LEDGER_REQUEST);
    round_trip::<LedgerResponse>(data, MAX_LEDGER_RESPONSE);
}

/// `/atlas/shard/1` header frames, both ways.
pub fn shard_wire(data: &[u8]) {
    round_trip::<ShardRequest>(data, MAX_SHARD_HEADER);
    round_trip::<ShardResponse>(data, MAX_SHARD_HEADER);
}

/// A signed transaction as it arrives: only canonical bytes with a good signature verify.
pub fn signed_tx(data: &[u8]) {
    if let Ok(signed) = postcard::from_bytes::<SignedTx>(data) {
        if let Ok(tx) = signed.verify() {
            assert_eq!(postcard::to_stdvec(&tx).expect("encodes"), signed.bytes);
        }
    }
}

/// A block header from gossip.
pub fn block_header(data: &[u8]) {
    if let Ok(header) = postcard::from_bytes::<SignedHeader>(data) {
        let _ = header.verify(None);
    }
}

/// A manifest file (`manifest.json`'s bytes, or one carried in a deal).
pub fn manifest(data: &[u8]) {
    if let Ok(signed) = SignedManifest::from_file_bytes(data) {
        if let Ok(verified) = signed.verify() {
            let layout = verified.layout();
            assert_eq!(
                layout.total_shards(),
                verified.manifest().slot_roots.len(),
                "a verified manifest has a root per slot"
            );
        }
    }
}

/// The first 8 bytes: an object size; the rest: a `Range` header.
pub fn range_header(data: &[u8]) {
    let Some((size, header)) = split_u64(data) else {
        return;
    };
    let header = String::from_utf8_lossy(header);
    if let atlas_node::gateway::RangeSpec::Bytes(r) =
        atlas_node::gateway::parse_range(&header, size)
    {
        assert!(
            r.start < r.end && r.end <= size,
            "{header:?} against {size} bytes gave {r:?}"
        );
    }
}

/// The first 8 bytes: a slot length; the rest: a storage proof, checked against a challenge.
pub fn storage_proof(data: &[u8]) {
    let Some((slot_len, rest)) = split_u64(data) else {
        return;
    };
    let Ok(shape) = TreeShape::new(slot_len) else {
        return;
    };
    if let Ok(proof) = postcard::from_bytes::<StorageProof>(rest) {
        let challenge = Challenge::derive(&[7; 32], &DealId([1; 32]), 0, 3, shape.chunks(), 16);
        let _ = proof.verify(&challenge, &shape, &blake3::hash(rest));
    }
}

/// The first 8 bytes: a slot length; the rest: its outboard file.
pub fn outboard(data: &[u8]) {
    let Some((slot_len, rest)) = split_u64(data) else {
        return;
    };
    let Ok(shape) = TreeShape::new(slot_len) else {
        return;
    };
    if let Ok(ob) = Outboard::from_bytes(shape, rest) {
        for level in 0..=shape.height() {
            let _ = ob.siblings(level, 0);
        }
    }
}

/// The first 8 bytes: the stripe count and index; the rest: 32-byte sibling CVs, then a shard.
pub fn shard(data: &[u8]) {
    let Some((word, rest)) = split_u64(data) else {
        return;
    };
    let (stripes, stripe) = (word >> 32, word & 0xffff_ffff);
    let n = (rest.first().copied().unwrap_or(0) % 24) as usize;
    let rest = rest.get(1..).unwrap_or_default();
    let (cvs, body) = rest.split_at((n * 32).min(rest.len()));
    let siblings: Vec<[u8; 32]> = cvs
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32"))
        .collect();
    let _ = VerifiedShard::verify(
        &blake3::hash(b"root"),
        stripes,
        stripe,
        body.to_vec(),
        &siblings,
    );
}

/// An encoded directory someone handed over: a manifest signed by its (here, a fixed) creator
/// with whatever geometry the input says, and slot files of whatever length, opened, checked
/// and decoded the way `atlas verify` and `atlas decode` do.
pub fn encoded_dir(data: &[u8]) {
    let Some((size, rest)) = split_u64(data) else {
        return;
    };
    let Some((&[k, m, shard_log, files], body)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let shard_size = (MIN_SHARD_SIZE << (shard_log % 7)).min(MAX_SHARD_SIZE);
    let (k, m) = (u16::from(k % 16), u16::from(m % 16));
    let stripe_len = u64::from(k.max(1)) * shard_size;
    let key = Keypair::from_secret([9; 32]);
    let n = usize::from(k + m);
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        encoding: atlas_protocol::layout::ENCODING_RS_GF8_V1.into(),
        name: "fuzz".into(),
        media_type: "video/mp4".into(),
        size,
        file_hash: *blake3::hash(body).as_bytes(),
        data_shards: k,
        parity_shards: m,
        shard_size,
        stripes: size.div_ceil(stripe_len).max(1),
        slot_roots: (0..n)
            .map(|j| *blake3::hash(&[j as u8]).as_bytes())
            .collect(),
        creator: key.public(),
        created_at: 0,
    };
    let Ok(verified) = manifest.sign(&key) else {
        return;
    };
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let write = |name: String, bytes: &[u8]| std::fs::write(dir.path().join(name), bytes);
    if write(
        atlas_storage::slot_dir::MANIFEST_FILE.into(),
        &verified.signed().to_file_bytes(),
    )
    .is_err()
    {
        return;
    }
    // Slot files cut from the input: short, long, or missing.
    let mut chunks = body.chunks(body.len().div_ceil(usize::from(files % 8).max(1)).max(1));
    for j in 0..n.min(usize::from(files % 8)) {
        let bytes = chunks.next().unwrap_or_default();
        let _ = std::fs::write(atlas_storage::slot_dir::data_path(dir.path(), j), bytes);
    }
    let Ok(mut opened) = atlas_storage::slot_dir::SlotDir::open(dir.path()) else {
        return;
    };
    for j in 0..n {
        let _ = opened.check_slot(j, &mut |_| {});
    }
    let _ = opened.decode_to(&dir.path().join("out"), &mut |_| {});
}

fn split_u64(data: &[u8]) -> Option<(u64, &[u8])> {
    let (head, rest) = data.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*head), rest))
}

/// Valid inputs for each target, to start the corpus from (`atlas-fuzz-seed` writes them):
/// libFuzzer mutates from real messages rather than finding their structure first.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use atlas_protocol::escrow::{Tx, TxBody};
    let key = Keypair::from_secret([5; 32]);
    let tx = Tx {
        chain: [3; 32],
        signer: key.public(),
        nonce: 7,
        body: TxBody::Transfer {
            to: key.public(),
            amount: 1000,
        },
    }
    .sign(&key)
    .expect("own key");
    let slot: Vec<u8> = (0..(256u32 << 10)).map(|i| (i % 251) as u8).collect();
    let ob = Outboard::from_slot(&slot).expect("outboard");
    let with_len = |len: u64, rest: &[u8]| [len.to_le_bytes().as_slice(), rest].concat();
    let mut out = vec![
        (
            "ledger_wire",
            wire::encode(&LedgerRequest::Submit(tx.clone())),
        ),
        ("ledger_wire", wire::encode(&LedgerRequest::Status)),
        (
            "ledger_wire",
            wire::encode(&LedgerRequest::DealPage {
                query: wire::DealQuery::Matching("ab".into()),
                after: None,
            }),
        ),
        (
            "shard_wire",
            wire::encode(&ShardRequest::Put {
                deal: DealId([1; 32]),
                slot: 2,
                stripe: 3,
                len: 65536,
                siblings: vec![[4; 32]; 3],
            }),
        ),
        ("shard_wire", wire::encode(&ShardResponse::Busy)),
        ("signed_tx", postcard::to_stdvec(&tx).expect("encodes")),
        ("range_header", with_len(1000, b"bytes=0-99")),
        ("range_header", with_len(0, b"bytes=-5")),
        ("range_header", with_len(1 << 40, b"bytes=500-")),
        ("outboard", with_len(slot.len() as u64, &ob.to_bytes())),
        (
            "shard",
            [
                ((4u64 << 32) | 1).to_le_bytes().as_slice(),
                &[2],
                &[7; 64],
                &slot[..65536],
            ]
            .concat(),
        ),
    ];
    let shape = ob.shape();
    let challenge = Challenge::derive(&[7; 32], &DealId([1; 32]), 0, 3, shape.chunks(), 16);
    let group = atlas_protocol::tree::GROUP_LEN as usize;
    let proof = StorageProof::build(
        &challenge,
        &shape,
        |g| Ok::<_, atlas_protocol::tree::TreeError>(slot[g as usize * group..][..group].to_vec()),
        |level, index| ob.node(level, index),
    );
    if let Ok(proof) = proof {
        // Checked against the hash of its own bytes, it is refused; mutations explore why.
        out.push((
            "storage_proof",
            with_len(
                slot.len() as u64,
                &postcard::to_stdvec(&proof).expect("encodes"),
            ),
        ));
    }
    let layout = atlas_protocol::Layout::new(4, 2, 65536, 300_000).expect("layout");
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        encoding: atlas_protocol::layout::ENCODING_RS_GF8_V1.into(),
        name: "video.mp4".into(),
        media_type: "video/mp4".into(),
        size: layout.size(),
        file_hash: [1; 32],
        data_shards: 4,
        parity_shards: 2,
        shard_size: 65536,
        stripes: layout.stripes(),
        slot_roots: vec![[2; 32]; 6],
        creator: key.public(),
        created_at: 0,
    }
    .sign(&key)
    .expect("valid manifest");
    out.push(("manifest", manifest.signed().to_file_bytes()));
    out.push((
        "encoded_dir",
        [
            300_000u64.to_le_bytes().as_slice(),
            &[4, 2, 0, 6],
            &slot[..60_000],
        ]
        .concat(),
    ));
    out
}
