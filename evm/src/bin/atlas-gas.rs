//! Prints the gas of Atlas's on-chain checks, measured on the compiled contracts in an in-process
//! EVM (paris rules), with an ERC-20 transfer measured in the same run as the reference.
//!
//! Today: checking one sampled 1 KiB chunk against its slot's BLAKE3 root, the costly part of a
//! one-sample dispute, for slots from 64 KiB to 16 TiB.

use atlas_evm::abi::{call, uint_at, Token};
use atlas_evm::{account, Host};
use atlas_protocol::tree::{subtree_cv, TreeShape, CHUNK_LEN};

fn main() {
    let mut host = Host::new();
    let from = account(1);

    let token = host
        .deploy(
            from,
            "TestToken",
            &atlas_evm::abi::encode(&[Token::uint(1 << 100)]),
        )
        .expect("deploys TestToken");
    let mint = host.transact(
        from,
        token,
        call("mint(address,uint256)", &[addr(from), Token::uint(1 << 90)]),
    );
    mint.returned();
    // The second transfer to an account that already holds tokens: the steady-state cost.
    let transfer = call(
        "transfer(address,uint256)",
        &[addr(account(2)), Token::uint(1)],
    );
    host.transact(from, token, transfer.clone()).returned();
    let transfer_gas = host.transact(from, token, transfer).gas;

    let probe = host
        .deploy(from, "Blake3Probe", &[])
        .expect("deploys Blake3Probe");
    println!(
        "gas of on-chain checks (paris EVM, in-process; includes the 21,000 of a transaction)"
    );
    println!();
    println!("| what | slot | tree depth | gas | vs transfer |");
    println!("| --- | --- | --- | --- | --- |");
    println!("| ERC-20 transfer (reference) | | | {transfer_gas} | 1.0x |");
    for (label, slot_len) in [
        ("64 KiB", 64u64 << 10),
        ("1 GiB", 1 << 30),
        ("16 GiB", 16 << 30),
        ("1 TiB", 1 << 40),
        ("16 TiB", 16 << 40),
    ] {
        let shape = TreeShape::new(slot_len).expect("a valid slot length");
        let chunks = shape.chunks();
        let index = chunks / 3;
        let chunk: Vec<u8> = (0..CHUNK_LEN).map(|i| (i * 7 + index) as u8).collect();
        // Siblings need not come from real bytes: the root they fold to is what the check is
        // against, and the gas depends only on the path's length.
        let siblings: Vec<[u8; 32]> = shape
            .sibling_nodes(0, index)
            .expect("in range")
            .iter()
            .map(|&(l, i)| *blake3::hash(&[l as u8, i as u8]).as_bytes())
            .collect();
        let cv = subtree_cv(index * CHUNK_LEN, &chunk);
        let root = shape.fold_to_root(0, index, cv, &siblings).expect("folds");
        let r = host.transact(
            from,
            probe,
            call(
                "verifyChunkTx(bytes,uint64,bytes32[],uint64,bytes32)",
                &[
                    Token::Bytes(chunk),
                    Token::uint(index.into()),
                    Token::b32s(&siblings),
                    Token::uint(chunks.into()),
                    Token::b32(*root.as_bytes()),
                ],
            ),
        );
        assert_eq!(
            uint_at(r.returned(), 0),
            1,
            "the check accepts an honest chunk"
        );
        println!(
            "| verify one sample chunk (BLAKE3: 16 chunk + {} parent compressions) | {label} | {} | {} | {:.1}x |",
            siblings.len(),
            siblings.len(),
            r.gas,
            r.gas as f64 / transfer_gas as f64
        );
    }
}

fn addr(a: atlas_evm::Address) -> Token {
    let mut w = [0u8; 32];
    w[12..].copy_from_slice(a.as_slice());
    Token::Word(w)
}
