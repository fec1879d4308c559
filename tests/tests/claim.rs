//! A repairer that claims a freed slot and then never delivers it: when the claim's deadline
//! passes it forfeits the collateral it locked (to nobody, not the creator's reserve), the slot is freed
//! again, the same provider may not claim it a second time, and an honest spare repairs it.

use atlas_protocol::escrow::{SlotStatus, TxBody};
use atlas_protocol::wire::{LedgerRequest, LedgerResponse};
use atlas_tests::{new_key, read_back, wait_for, Cluster};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_never_delivered_forfeits_its_collateral_and_the_slot_is_repaired_by_another() {
    tokio::time::timeout(Duration::from_secs(240), scenario())
        .await
        .expect("scenario finishes in time");
}

async fn collateral_pool(
    client: &atlas_node::ledger::LedgerClient,
    who: atlas_protocol::PublicKey,
) -> u128 {
    match client
        .request(LedgerRequest::Provider(who))
        .await
        .expect("provider query")
    {
        LedgerResponse::Provider(Some(p)) => p.collateral,
        other => panic!("unexpected answer {other:?}"),
    }
}

async fn scenario() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Exactly n providers: every one holds a slot, so none may claim another slot of the object
    // and the silent claimant below is the only candidate.
    let mut cluster = Cluster::start(dir.path(), 6).await.expect("cluster starts");
    let (data, _, deal_id) = cluster
        .pin_random(dir.path(), 900_000, 4, 2)
        .await
        .expect("pinned");
    let observer = cluster.ledger.client(&new_key()).await.expect("observer");

    // A registered provider that claims slots and never fetches anything.
    let silent = new_key();
    let own = cluster.ledger.client(&silent).await.expect("client");
    own.submit(&silent, TxBody::Faucet { amount: 2_000_000 })
        .await
        .expect("funded");
    own.submit(
        &silent,
        TxBody::RegisterProvider {
            peer_id: silent.public().peer_id_bytes(),
            addrs: vec!["/ip4/127.0.0.1/tcp/9".into()],
            capacity: 1 << 30,
            price: 1,
            collateral: 1_000_000,
        },
    )
    .await
    .expect("registered");

    let d = observer.deal(deal_id).await.expect("deal");
    let dead = d.slots[0].holder.expect("slot 0 held");
    cluster.take(&dead).expect("our provider").stop().await;
    wait_for("slot 0 freed", Duration::from_secs(60), || async {
        let d = observer.deal(deal_id).await?;
        Ok((d.slots[0].status == SlotStatus::Freed).then_some(()))
    })
    .await
    .expect("freed after missed proofs");

    let pool_before = collateral_pool(&observer, silent.public()).await;
    own.submit(
        &silent,
        TxBody::ClaimSlot {
            deal: deal_id,
            slot: 0,
        },
    )
    .await
    .expect("claim accepted");
    let claimed = observer.deal(deal_id).await.expect("deal");
    let locked = claimed.slots[0].collateral;
    assert_eq!(claimed.slots[0].holder, Some(silent.public()));
    assert!(locked > 0, "a claim locks collateral");
    assert_eq!(
        collateral_pool(&observer, silent.public()).await,
        pool_before - locked
    );

    // The deadline passes: the collateral is forfeited (to nobody) and the slot is free again.
    let reserve_before = claimed.reserve;
    let forfeited = wait_for("claim expired", Duration::from_secs(60), || async {
        let d = observer.deal(deal_id).await?;
        Ok((d.slots[0].status == SlotStatus::Freed).then_some(d))
    })
    .await
    .expect("the unfulfilled claim expires");
    assert_eq!(forfeited.slots[0].failed_by, Some(silent.public()));
    assert!(
        forfeited.reserve < reserve_before + locked,
        "the forfeited collateral did not go to the deal's reserve, which its creator gets back"
    );
    assert_eq!(
        collateral_pool(&observer, silent.public()).await,
        pool_before - locked,
        "the forfeited collateral is not returned"
    );
    // It may not try again.
    let again = own
        .submit(
            &silent,
            TxBody::ClaimSlot {
                deal: deal_id,
                slot: 0,
            },
        )
        .await;
    assert!(
        again.is_err(),
        "a provider that failed a slot cannot re-claim it"
    );

    // An honest spare arrives, claims, rebuilds and proves the slot.
    let spare_key = cluster.add_provider(500).await.expect("spare starts");
    wait_for("slot 0 repaired", Duration::from_secs(90), || async {
        let d = observer.deal(deal_id).await?;
        let s = &d.slots[0];
        Ok((matches!(s.status, SlotStatus::Active { .. })
            && s.holder == Some(spare_key)
            && s.proven.is_some())
        .then_some(()))
    })
    .await
    .expect("the spare repairs the slot");
    let (read, _) = read_back(&observer, deal_id, &dir.path().join("out"))
        .await
        .expect("reads back");
    assert!(read == data, "the video reads back identical");
    cluster.stop().await.expect("stops");
}
