//! A provider leaves gracefully: after the notice period its slot is handed over without slashing,
//! a spare rebuilds it, and the provider gets its whole collateral back.

use atlas_protocol::escrow::{SlotStatus, TxBody};
use atlas_tests::{read_back, wait_for, Cluster};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exiting_provider_hands_its_slot_over_and_gets_its_collateral_back() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cluster = Cluster::start(dir.path(), 7).await.expect("cluster starts");
        let (data, _, deal_id) = cluster
            .pin_random(dir.path(), 800_000, 4, 2)
            .await
            .expect("pinned");
        let observer = cluster
            .ledger
            .client(&atlas_tests::new_key())
            .await
            .expect("observer");
        let d = observer.deal(deal_id).await.expect("deal");
        let leaving = d.slots[3].holder.expect("slot 3 held");
        let leaver = cluster.take(&leaving).expect("our provider");
        wait_for("slot 3 proven", Duration::from_secs(30), || async {
            let d = observer.deal(deal_id).await?;
            Ok(d.slots[3].proven.is_some().then_some(()))
        })
        .await
        .expect("proving");
        let balance_before = observer.account(&leaving).await.expect("account").balance;
        let pool = match observer
            .request(atlas_protocol::wire::LedgerRequest::Provider(leaving))
            .await
            .expect("provider")
        {
            atlas_protocol::wire::LedgerResponse::Provider(Some(p)) => p.collateral,
            other => panic!("unexpected {other:?}"),
        };

        // `atlas provider exit` submits this with the provider's own key while it keeps running.
        let own = cluster.ledger.client(&leaver.key).await.expect("client");
        own.submit(&leaver.key, TxBody::ExitProvider)
            .await
            .expect("exit recorded");

        // The slot is handed over without a miss, rebuilt by the spare, and proven again.
        let d = wait_for(
            "slot 3 under a new holder",
            Duration::from_secs(90),
            || async {
                let d = observer.deal(deal_id).await?;
                let s = &d.slots[3];
                Ok((matches!(s.status, SlotStatus::Active { .. })
                    && s.holder.is_some_and(|h| h != leaving)
                    && s.proven.is_some()
                    && s.repairs == 1)
                    .then_some(d))
            },
        )
        .await
        .expect("handed over");
        assert_eq!(d.slots[3].total_misses, 0, "a graceful exit is not slashed");
        assert_eq!(d.slots[3].failed_by, None);

        // Once it holds nothing, the provider is gone from the registry with all its collateral
        // (the pool, plus what the slot had locked) back in its balance, and its earnings kept.
        let back = wait_for("collateral returned", Duration::from_secs(60), || async {
            let gone = matches!(
                observer
                    .request(atlas_protocol::wire::LedgerRequest::Provider(leaving))
                    .await?,
                atlas_protocol::wire::LedgerResponse::Provider(None)
            );
            let balance = observer.account(&leaving).await?.balance;
            Ok(gone.then_some(balance))
        })
        .await
        .expect("provider left");
        // What the slot had locked: the rules' collateral for its price and length.
        let params = observer.status().await.expect("status").params;
        let locked = params.slot_collateral(d.slots[3].price, d.terms.slot_len);
        assert!(
            back >= balance_before + pool + locked,
            "balance {back} < {balance_before} + pool {pool} + locked {locked}"
        );
        leaver.stop().await;

        let (got, _) = read_back(&observer, deal_id, &dir.path().join("back.mp4"))
            .await
            .expect("reads back");
        assert!(got == data, "identical bytes after the hand-over");
        drop(own);
        drop(observer);
        cluster.stop().await.expect("cluster stops");
    })
    .await
    .expect("scenario finishes in time");
}
