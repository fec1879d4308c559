//! The ledger as users meet it: over real libp2p on loopback, persisted in RocksDB.

use atlas_protocol::escrow::{EscrowError, Tx, TxBody};
use atlas_protocol::wire::{LedgerRequest, LedgerResponse, Refusal};
use atlas_tests::{new_key, test_chain, LedgerNode};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_ordered_persisted_and_survive_a_restart() {
    tokio::time::timeout(TIMEOUT, async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger_key = new_key();
        let ledger = LedgerNode::start(dir.path(), ledger_key.clone(), test_chain())
            .await
            .expect("ledger starts");
        let alice = new_key();
        let bob = new_key();
        let client = ledger.client(&alice).await.expect("client connects");

        let h1 = client
            .submit(&alice, TxBody::Faucet { amount: 10_000 })
            .await
            .expect("faucet is included")
            .height
            .expect("in a block");
        client
            .submit(
                &alice,
                TxBody::Transfer {
                    to: bob.public(),
                    amount: 2_500,
                },
            )
            .await
            .expect("transfer is included");
        assert_eq!(
            client
                .account(&alice.public())
                .await
                .expect("query")
                .balance,
            7_500
        );
        assert_eq!(
            client.account(&bob.public()).await.expect("query").balance,
            2_500
        );

        // Spending more than the balance, and replaying a used nonce, are refused with a reason.
        let err = client
            .submit(
                &alice,
                TxBody::Transfer {
                    to: bob.public(),
                    amount: 1_000_000,
                },
            )
            .await
            .expect_err("overdraft is refused");
        assert!(err.to_string().contains("balance"), "{err}");
        let replay = Tx {
            chain: client.chain().await.expect("chain id"),
            signer: alice.public(),
            nonce: 0,
            body: TxBody::Faucet { amount: 10_000 },
        }
        .sign(&alice)
        .expect("signs");
        match client
            .request(LedgerRequest::Submit(replay))
            .await
            .expect("answer")
        {
            LedgerResponse::Refused(Refusal::Escrow(EscrowError::BadNonce { .. })) => {}
            other => panic!("replay was not refused: {other:?}"),
        }

        // The block that included the faucet is served, signed by the ledger.
        match client
            .request(LedgerRequest::Block(h1))
            .await
            .expect("answer")
        {
            LedgerResponse::Block(Some(block)) => {
                block
                    .header
                    .verify(Some(&ledger_key.public()))
                    .expect("signed by the sequencer");
                assert_eq!(block.txs.len(), 1);
            }
            other => panic!("block {h1} missing: {other:?}"),
        }
        let before = client.status().await.expect("status");
        drop(client);
        ledger.stop().await.expect("ledger stops cleanly");

        // Restart on the same database: same chain, same balances, and it keeps going.
        let ledger = LedgerNode::start(dir.path(), ledger_key.clone(), test_chain())
            .await
            .expect("ledger restarts");
        let client = ledger.client(&bob).await.expect("client connects");
        let after = client.status().await.expect("status");
        assert!(
            after.height >= before.height,
            "resumed at {} after {}",
            after.height,
            before.height
        );
        assert_eq!(
            client
                .account(&alice.public())
                .await
                .expect("query")
                .balance,
            7_500
        );
        assert_eq!(
            client.account(&alice.public()).await.expect("query").nonce,
            2
        );
        client
            .submit(
                &bob,
                TxBody::Transfer {
                    to: alice.public(),
                    amount: 500,
                },
            )
            .await
            .expect("the restarted ledger takes transactions");
        assert_eq!(
            client
                .account(&alice.public())
                .await
                .expect("query")
                .balance,
            8_000
        );
        drop(client);
        ledger.stop().await.expect("ledger stops cleanly");
    })
    .await
    .expect("test finishes in time");
}
