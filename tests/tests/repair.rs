//! Durability without the creator: a holder dies, another's slot is corrupted on disk; both are
//! slashed, both slots are rebuilt by spare providers from the other holders, and the video still
//! reads back identical with two more holders down. Tokens are conserved throughout.

use atlas_protocol::escrow::SlotStatus;
use atlas_storage::SlotKey;
use atlas_tests::{read_back, replay_chain, wait_for, Cluster};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_and_corrupt_holders_are_slashed_and_replaced_by_spares() {
    tokio::time::timeout(Duration::from_secs(240), scenario())
        .await
        .expect("scenario finishes in time");
}

async fn scenario() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = Cluster::start(dir.path(), 8).await.expect("cluster starts");
    let (data, manifest, deal_id) = cluster
        .pin_random(dir.path(), 1_500_000, 4, 2)
        .await
        .expect("pinned");
    let observer_key = atlas_tests::new_key();
    let observer = cluster
        .ledger
        .client(&observer_key)
        .await
        .expect("observer");
    let d = observer.deal(deal_id).await.expect("deal");
    let holders: Vec<_> = d
        .slots
        .iter()
        .map(|s| s.holder.expect("assigned"))
        .collect();
    let spares: Vec<_> = cluster
        .providers
        .iter()
        .map(|p| p.key.public())
        .filter(|k| !holders.contains(k))
        .collect();
    assert_eq!(spares.len(), 2);
    wait_for("every slot active", Duration::from_secs(30), || async {
        let d = observer.deal(deal_id).await?;
        Ok(d.slots
            .iter()
            .all(|s| matches!(s.status, SlotStatus::Active { .. }) && s.proven.is_some())
            .then_some(()))
    })
    .await
    .expect("slots active and proven");

    // Fault 1: the holder of slot 0 dies.
    cluster
        .take(&holders[0])
        .expect("holder of slot 0")
        .stop()
        .await;
    // Fault 2: the holder of slot 1 keeps running but its slot's bytes rot on disk.
    let rotten = cluster.take(&holders[1]).expect("holder of slot 1");
    let key = SlotKey::new(manifest.id(), 1);
    let len = rotten
        .provider
        .store()
        .info(key)
        .await
        .expect("info")
        .expect("held")
        .spec
        .len();
    let slot_file = std::fs::read_dir(rotten.provider.store_dir().join("slots"))
        .expect("slot files")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.to_string_lossy()
                .ends_with(&format!("{}.1.data", manifest.id()))
        })
        .expect("slot 1's file");
    std::fs::write(&slot_file, vec![0x5a; len as usize]).expect("corrupt the slot");
    cluster.providers.push(rotten);

    // A reader is served rotten bytes with valid-looking proofs by slot 1's holder: it detects
    // them, stops asking that holder, and rebuilds from parity. Identical bytes all the same.
    let (got, failed) = read_back(&observer, deal_id, &dir.path().join("during.mp4"))
        .await
        .expect("reads back during the faults");
    assert!(
        got == data,
        "identical bytes while one holder is dead and one lies"
    );
    assert_eq!(failed, vec![0, 1]);

    // Both faulty holders are slashed and lose their slots; others rebuild and prove them: the
    // spares, or the holder whose slot rotted, which handed it back and may repair the other
    // (never the slot it failed).
    let params = observer.status().await.expect("status").params;
    let repaired = wait_for(
        "both slots repaired by others",
        Duration::from_secs(120),
        || async {
            let d = observer.deal(deal_id).await?;
            let ok = d.slots[..2].iter().zip(&holders).all(|(s, failer)| {
                matches!(s.status, SlotStatus::Active { .. })
                    && s.holder.is_some_and(|h| h != *failer && h != holders[0])
                    && s.proven.is_some()
                    && s.repairs == 1
            });
            Ok(ok.then_some(d))
        },
    )
    .await
    .expect("slots repaired");
    // How many epochs a repair takes is measured by the benchmark, not bounded here.
    // The dead holder is slashed out by its missed proofs; the holder whose bytes rotted finds
    // the damage itself (its scrubber) and hands the slot back, or misses until it is freed.
    assert!(
        repaired.slots[0].total_misses >= params.max_misses as u64,
        "the dead holder missed"
    );
    assert_eq!(repaired.slots[0].failed_by, Some(holders[0]));
    assert_eq!(repaired.slots[1].failed_by, Some(holders[1]));

    // Every byte is still there with two further holders down.
    for h in &holders[2..4] {
        cluster.take(h).expect("holder").stop().await;
    }
    let (got, failed) = read_back(&observer, deal_id, &dir.path().join("back.mp4"))
        .await
        .expect("reads back");
    assert!(got == data, "identical bytes");
    assert_eq!(failed, vec![2, 3]);

    // The faulty providers paid for it, and no token appeared or vanished.
    let (_, state) = replay_chain(&observer, &cluster.ledger_key.public())
        .await
        .expect("the chain replays");
    let d = state.deal(&deal_id).expect("deal");
    assert!(d.reserve > 0);
    for faulty in &holders[..2] {
        let p = state.provider(faulty).expect("still registered");
        assert!(p.collateral < 1_000_000, "collateral slashed");
    }
    drop(observer);
    cluster.stop().await.expect("cluster stops");
}
