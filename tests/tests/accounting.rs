//! Every provider's books agree three ways, across a deal's end and a restart: the bytes the
//! ledger says it holds for live deals, the bytes its store has reserved, and the slot files on its
//! disk. A cancelled deal's slots are deleted once the grace period has passed, and nothing
//! another live deal needs goes with them.

use atlas_node::ledger::LedgerClient;
use atlas_protocol::escrow::{SlotStatus, TxBody};
use atlas_protocol::wire::{LedgerRequest, LedgerResponse};
use atlas_tests::{new_key, read_object, wait_for, Cluster, ProviderNode};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The provider's three views of what it holds: ledger `used`, store `reserved`, and the total
/// length of its slot files; and whether its slot files are exactly the slots its store lists.
async fn books(client: &LedgerClient, p: &ProviderNode) -> anyhow::Result<(u64, u64, u64, bool)> {
    let used = match client
        .request(LedgerRequest::Provider(p.key.public()))
        .await?
    {
        LedgerResponse::Provider(Some(info)) => info.used,
        other => anyhow::bail!("provider not registered: {other:?}"),
    };
    let store = p.provider.store();
    let reserved = store.usage().await?.reserved;
    let listed: std::collections::BTreeSet<String> = store
        .list()
        .await?
        .iter()
        .map(|(k, _)| format!("{}.{}.data", k.object, k.slot))
        .collect();
    let mut on_disk = std::collections::BTreeSet::new();
    let mut disk = 0;
    for entry in std::fs::read_dir(p.provider.store_dir().join("slots"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".data") {
            disk += entry.metadata()?.len();
            on_disk.insert(name);
        }
    }
    Ok((used, reserved, disk, listed == on_disk))
}

/// Waits until every provider's books agree, and returns the total bytes held.
async fn all_agree(client: &LedgerClient, cluster: &Cluster, what: &str) -> u64 {
    wait_for(what, WAIT, || async {
        let mut total = 0;
        for p in &cluster.providers {
            let (used, reserved, disk, same_files) = books(client, p).await?;
            if !(used == reserved && reserved == disk && same_files) {
                return Ok(None);
            }
            total += used;
        }
        Ok(Some(total))
    })
    .await
    .unwrap_or_else(|e| panic!("{what}: {e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_store_and_disk_agree_across_a_deal_end_and_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 7).await.expect("cluster");
    let creator = new_key();
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).expect("dir");
    std::fs::create_dir_all(&b_dir).expect("dir");
    let (_, _, a) = cluster
        .pin_random_as(&creator, &a_dir, 300 * 1024, 4, 2)
        .await
        .expect("pin a");
    let (b_data, b_manifest, b) = cluster
        .pin_random_as(&creator, &b_dir, 200 * 1024, 2, 1)
        .await
        .expect("pin b");
    let client = cluster.ledger.client(&creator).await.expect("client");
    let a_deal = client.deal(a).await.expect("a");
    let b_deal = client.deal(b).await.expect("b");
    let both = all_agree(&client, &cluster, "the books to agree with two deals").await;
    assert_eq!(
        both,
        a_deal.terms.slot_len * 6 + b_deal.terms.slot_len * 3,
        "every slot of both deals is held once"
    );

    // Cancel A: once it has ended and the grace has passed, its slots are gone from every store
    // and disk, and the books still agree; B is untouched.
    client
        .submit(&creator, TxBody::CancelDeal { deal: a })
        .await
        .expect("cancel");
    wait_for("deal a to end", WAIT, || async {
        let d = client.deal(a).await?;
        Ok(d.ended.then_some(()))
    })
    .await
    .expect("ended");
    let only_b = wait_for("deal a's slots to be collected", WAIT, || async {
        let mut total = 0;
        for p in &cluster.providers {
            let (used, reserved, disk, same_files) = books(&client, p).await?;
            if !(used == reserved && reserved == disk && same_files) {
                return Ok(None);
            }
            total += used;
        }
        Ok((total == b_deal.terms.slot_len * 3).then_some(total))
    })
    .await
    .expect("collected");
    assert_eq!(only_b, b_deal.terms.slot_len * 3);

    // A restart of every provider changes none of it.
    let providers = std::mem::take(&mut cluster.providers);
    for p in providers {
        cluster
            .providers
            .push(p.restart().await.expect("provider restarts"));
    }
    assert_eq!(
        all_agree(&client, &cluster, "the books to agree after a restart").await,
        b_deal.terms.slot_len * 3
    );
    let d = client.deal(b).await.expect("b");
    assert!(d
        .slots
        .iter()
        .all(|s| matches!(s.status, SlotStatus::Active { misses: 0 })));
    let got = read_object(&client, &b_manifest.id(), &dir.path().join("read"))
        .await
        .expect("reads b");
    assert!(got == b_data, "the live deal's video is whole");
    drop(client);
    cluster.stop().await.expect("stop");
}
