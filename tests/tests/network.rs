//! The whole network on loopback: a ledger and six providers (real libp2p, real RocksDB), a creator
//! who pins a video at 4+2 and goes away, payments for proven epochs, two providers killed, the video
//! still read back identical, and the dead providers slashed.

use atlas_node::client::pin;
use atlas_node::client::read::{read_object, Output};
use atlas_node::ledger::ChainConfig;
use atlas_protocol::escrow::{Escrow, SlotStatus, TxBody};
use atlas_tests::{encode, new_key, random_file, replay_chain, wait_for, Cluster};
use std::time::Duration;

const EPOCH_BLOCKS: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_video_is_paid_for_survives_two_dead_holders_and_they_are_slashed() {
    tokio::time::timeout(Duration::from_secs(240), scenario())
        .await
        .expect("scenario finishes in time");
}

async fn scenario() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = Cluster::builder(dir.path())
        .providers(6)
        .price(|i| 1000 * (i as u128 + 1))
        .chain(ChainConfig {
            block_time: Duration::from_millis(100),
            epoch_blocks: EPOCH_BLOCKS,
            faucet: true,
        })
        .build()
        .await
        .expect("cluster starts");
    let Cluster {
        ledger,
        ledger_key,
        mut providers,
        ..
    } = cluster;

    // The creator funds itself, encodes a video and pins it.
    let creator_key = new_key();
    let video = dir.path().join("video.mp4");
    let data = random_file(&video, 3_000_000, 7);
    let enc = dir.path().join("enc");
    let manifest = encode(&creator_key, &video, &enc, 4, 2, 64 * 1024).expect("encodes");
    let deal_id = {
        let client = ledger.client(&creator_key).await.expect("creator connects");
        client
            .submit(&creator_key, TxBody::Faucet { amount: 10_000_000 })
            .await
            .expect("faucet");
        let quote = pin::quote(&client, client.net(), &manifest, u128::MAX)
            .await
            .expect("providers answer");
        pin::pin(
            &client,
            &creator_key,
            &enc,
            quote,
            60,
            u128::MAX,
            &mut |_, _| {},
        )
        .await
        .expect("pin succeeds")
        // The creator's node goes away here: everything below runs without it.
    };

    let observer_key = new_key();
    let observer = ledger
        .client(&observer_key)
        .await
        .expect("observer connects");
    let opened = observer.deal(deal_id).await.expect("deal");
    assert_eq!(opened.terms.object, manifest.id());

    // Every holder is paid for five proven epochs.
    wait_for(
        "five paid epochs on every slot",
        Duration::from_secs(90),
        || async {
            let d = observer.deal(deal_id).await?;
            Ok(d.slots.iter().all(|s| s.paid >= 5 * s.price).then_some(()))
        },
    )
    .await
    .expect("holders are paid");

    // Replay the chain from genesis: every block's state root must match, and the state right after
    // five epochs' settlement shows exact payments.
    let (snapshots, _) = replay_chain(&observer, &ledger_key.public())
        .await
        .expect("the chain replays");
    let first_due = opened_slots_first_epoch(&snapshots, deal_id);
    let after_five = snapshots
        .iter()
        .find(|s| s.epoch() == first_due + 5)
        .expect("the chain reached five settled epochs");
    let d = after_five.deal(&deal_id).expect("deal");
    let escrow_at_open = snapshots
        .iter()
        .find_map(|s| {
            s.deal(&deal_id)
                .map(|d| d.escrow + d.slots.iter().map(|x| x.paid).sum::<u128>())
        })
        .expect("deal in a snapshot");
    let mut paid_total = 0;
    for (j, s) in d.slots.iter().enumerate() {
        let due_epochs = (first_due + 5).saturating_sub(s.prove_from) as u128;
        assert_eq!(
            s.paid,
            due_epochs * s.price,
            "slot {j} paid for each proven epoch"
        );
        assert_eq!(s.total_misses, 0, "slot {j} missed nothing");
        paid_total += s.paid;
    }
    assert_eq!(
        escrow_at_open - d.escrow,
        paid_total,
        "escrow fell by what was paid"
    );

    // A provider restarts on its own store: it keeps its slot without downloading it again and
    // goes on proving.
    let live = observer.deal(deal_id).await.expect("deal");
    let restarted = live.slots[2].holder.expect("slot 2 has a holder");
    let index = providers
        .iter()
        .position(|p| p.key.public() == restarted)
        .expect("holder is one of ours");
    let p = providers.remove(index);
    let stored_before = p
        .provider
        .store()
        .usage()
        .await
        .expect("store answers")
        .stored;
    let p = p.restart().await.expect("provider restarts");
    assert_eq!(
        p.provider
            .store()
            .usage()
            .await
            .expect("store answers")
            .stored,
        stored_before,
        "nothing lost or re-fetched"
    );
    let epoch_at_restart = observer.status().await.expect("status").epoch;
    providers.push(p);
    wait_for(
        "the restarted provider proves again",
        Duration::from_secs(60),
        || async {
            let d = observer.deal(deal_id).await?;
            Ok(d.slots[2]
                .proven
                .is_some_and(|e| e > epoch_at_restart)
                .then_some(()))
        },
    )
    .await
    .expect("restarted provider proves");

    // Kill the holders of slots 0 and 1.
    let live = observer.deal(deal_id).await.expect("deal");
    let doomed: Vec<_> = live.slots[..2]
        .iter()
        .map(|s| s.holder.expect("active slot has a holder"))
        .collect();
    let mut kept = Vec::new();
    for p in providers {
        if doomed.contains(&p.key.public()) {
            p.stop().await;
        } else {
            kept.push(p);
        }
    }

    // The video still reads back identical from the four left.
    let out = dir.path().join("back.mp4");
    let report = read_object(
        &observer,
        observer.net(),
        &live,
        Output::File(out.clone()),
        |_| {},
    )
    .await
    .expect("decodes with two holders down");
    let (stats, failed) = (report.stats, report.failed);
    assert!(
        std::fs::read(&out).expect("output") == data,
        "identical bytes"
    );
    assert_eq!(failed, vec![0, 1]);
    assert_eq!(stats.reconstructed_stripes, stats.stripes);

    // The dead holders miss their proofs, are slashed, and lose their slots.
    wait_for(
        "dead holders slashed and freed",
        Duration::from_secs(60),
        || async {
            let d = observer.deal(deal_id).await?;
            Ok(d.slots[..2]
                .iter()
                .all(|s| s.status == SlotStatus::Freed && s.total_misses >= 3 && s.collateral == 0)
                .then_some(()))
        },
    )
    .await
    .expect("dead providers are slashed");
    let d = observer.deal(deal_id).await.expect("deal");
    assert!(
        d.reserve > opened.reserve,
        "slashed collateral went to the repair reserve"
    );
    for s in &d.slots[2..] {
        assert!(
            matches!(s.status, SlotStatus::Active { misses: 0 }),
            "live holders keep proving"
        );
    }

    drop(observer);
    for p in kept {
        p.stop().await;
    }
    ledger.stop().await.expect("ledger stops");
}

/// The first epoch in which every slot of the deal was due a proof.
fn opened_slots_first_epoch(snapshots: &[Escrow], deal: atlas_protocol::DealId) -> u64 {
    snapshots
        .iter()
        .filter_map(|s| s.deal(&deal))
        .find_map(|d| {
            d.slots
                .iter()
                .all(|s| s.prove_from != u64::MAX)
                .then(|| d.slots.iter().map(|s| s.prove_from).max().unwrap_or(0))
        })
        .expect("all slots were accepted")
}
