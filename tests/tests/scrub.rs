//! Bit rot on a holder's own disk: the holder's scrubber finds the damaged slot, hands it back
//! at once (losing far less than missed proofs would take) and another provider repairs it; the
//! video reads back byte for byte throughout.

use atlas_tests::{new_key, read_back, wait_for, Cluster};
use std::os::unix::fs::FileExt as _;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_damaged_on_its_holders_disk_is_handed_back_and_repaired_by_another() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let dir = tempfile::tempdir().expect("temp dir");
        // Six holders and a spare that may repair.
        let cluster = Cluster::start(dir.path(), 7).await.expect("cluster");
        let (data, manifest, deal_id) = cluster
            .pin_random(dir.path(), 900_000, 4, 2)
            .await
            .expect("pinned");
        let observer = cluster.ledger.client(&new_key()).await.expect("observer");
        let before = observer.deal(deal_id).await.expect("deal");
        let victim = before.slots[0].holder.expect("slot 0 held");
        let locked = before.slots[0].collateral;
        let pool_before = observer
            .provider(&victim)
            .await
            .expect("provider")
            .expect("registered")
            .collateral;
        let params = observer.status().await.expect("status").params;

        // Flip bytes in the middle of the holder's copy of slot 0, behind its back.
        let node = cluster
            .providers
            .iter()
            .find(|p| p.key.public() == victim)
            .expect("our provider");
        let path = node
            .provider
            .store_dir()
            .join("slots")
            .join(format!("{}.0.data", manifest.id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("the slot file");
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, 70_000).expect("read");
        file.write_all_at(&[!byte[0]], 70_000).expect("write");
        file.sync_all().expect("sync");

        // The holder hands the slot back itself, and another provider rebuilds and proves it.
        wait_for(
            "slot 0 repaired by another",
            Duration::from_secs(120),
            || async {
                let d = observer.deal(deal_id).await?;
                let s = &d.slots[0];
                Ok((s.failed_by == Some(victim)
                    && s.holder.is_some_and(|h| h != victim)
                    && matches!(s.status, atlas_protocol::escrow::SlotStatus::Active { .. })
                    && s.proven.is_some())
                .then_some(()))
            },
        )
        .await
        .expect("the damaged slot is released and repaired");
        // Releasing costs one missed proof's slash (a proof in the same epoch may also have
        // sampled the damaged bytes and cost another); missing proofs until freed would have
        // cost the whole collateral.
        let slash = locked
            .saturating_mul(params.slash_bps as u128)
            .div_ceil(10_000);
        let pool_after = observer
            .provider(&victim)
            .await
            .expect("provider")
            .expect("registered")
            .collateral;
        assert!(
            pool_after >= pool_before + locked - 2 * slash,
            "the holder lost {} of {locked} locked",
            pool_before + locked - pool_after
        );
        let (read, _) = read_back(&observer, deal_id, &dir.path().join("out"))
            .await
            .expect("reads back");
        assert!(read == data, "the video differs");
    })
    .await
    .expect("within the test's time");
}
