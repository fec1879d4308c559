//! Attacks by a stranger, played through the wire protocols by a hostile peer against real
//! providers and a real ledger on loopback. Each test asserts what the victim cares about: its
//! video still reads back byte for byte, no honest holder is slashed, nothing is stored that
//! nobody pays for, an impostor never gets a slot, a pin still works after spam.

use atlas_protocol::escrow::{EscrowError, SlotStatus, TxBody};
use atlas_protocol::tree::{shard_level, Outboard, TreeShape};
use atlas_protocol::wire::{LedgerRequest, LedgerResponse, Refusal, ShardResponse, MAX_PAGE_ITEMS};
use atlas_protocol::{DealId, Keypair, PublicKey};
use atlas_storage::slot_dir;
use atlas_storage::SlotKey;
use atlas_tests::hostile::Hostile;
use atlas_tests::{new_key, read_object, wait_for, Cluster};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Funds `key` from the faucet and registers it as a provider that answers nowhere.
async fn register_sybil(h: &Hostile, key: &Keypair, price: u128) -> anyhow::Result<()> {
    h.must(key, TxBody::Faucet { amount: 200_000 }).await?;
    h.must(
        key,
        TxBody::RegisterProvider {
            peer_id: key.public().peer_id_bytes(),
            addrs: vec!["/ip4/127.0.0.1/tcp/9".into()],
            capacity: 1 << 30,
            price,
            collateral: 100_000,
        },
    )
    .await
}

async fn deal(h: &Hostile, id: DealId) -> atlas_protocol::escrow::Deal {
    match h
        .ask(LedgerRequest::Deal(id))
        .await
        .expect("ledger answers")
    {
        LedgerResponse::Deal(Some(d)) => d,
        other => panic!("deal {id} not found: {other:?}"),
    }
}

/// The attack that once destroyed a pinned video: a second deal of the same object, with the
/// creator's own signed manifest, given to free sybils that accept without data and miss. Its
/// freed slots must be repaired from the real holders, never at their expense.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copycat_deal_with_free_sybils_never_costs_the_victim_its_video() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Six holders for the victim's 4+2 object and three spares that may repair.
    let cluster = Cluster::start(dir.path(), 9).await.expect("cluster");
    let (data, manifest, victim) = cluster
        .pin_random(dir.path(), 300 * 1024, 4, 2)
        .await
        .expect("pin");
    let h = Hostile::start(&cluster.ledger.addr).await.expect("hostile");
    let before = deal(&h, victim).await;
    let honest_holders: Vec<PublicKey> = before.slots.iter().filter_map(|s| s.holder).collect();

    // A copycat deal naming a victim holder is refused: nobody holds two slots of one object.
    let attacker = new_key();
    h.must(&attacker, TxBody::Faucet { amount: 1_000_000 })
        .await
        .expect("faucet");
    let sybils: Vec<Keypair> = (0..6).map(|_| new_key()).collect();
    for s in &sybils {
        register_sybil(&h, s, 0).await.expect("sybil registers");
    }
    let mut with_victim_holder: Vec<PublicKey> = sybils.iter().map(|k| k.public()).collect();
    with_victim_holder[3] = honest_holders[0];
    match h
        .submit(
            &attacker,
            TxBody::OpenDeal {
                manifest: manifest.signed().clone(),
                providers: with_victim_holder,
                epochs: 40,
                max_price: 0,
            },
        )
        .await
        .expect("answer")
    {
        LedgerResponse::Refused(Refusal::Escrow(EscrowError::HoldsObject)) => {}
        other => panic!("a copycat deal took a victim holder's bytes: {other:?}"),
    }

    // The free copycat deal, all sybils: it opens (sponsoring an object is allowed), its sybils
    // accept without any bytes, then miss every proof.
    let nonce = h.nonce(&attacker.public()).await.expect("nonce");
    match h
        .ask(
            h.sign(
                &attacker,
                nonce,
                TxBody::OpenDeal {
                    manifest: manifest.signed().clone(),
                    providers: sybils.iter().map(|k| k.public()).collect(),
                    epochs: 40,
                    max_price: 0,
                },
            )
            .expect("signs"),
        )
        .await
        .expect("answer")
    {
        LedgerResponse::Included { .. } => {}
        other => panic!("copycat deal not opened: {other:?}"),
    }
    let copycat = atlas_protocol::escrow::Escrow::deal_id(&attacker.public(), nonce);
    for (j, s) in sybils.iter().enumerate() {
        h.must(
            s,
            TxBody::AcceptSlot {
                deal: copycat,
                slot: j as u16,
            },
        )
        .await
        .expect("sybil accepts without data");
    }

    // The sybils are slashed out; the spares, which hold nothing of the object, claim the freed
    // slots and rebuild them from the victim's holders.
    let spares: Vec<PublicKey> = cluster
        .providers
        .iter()
        .map(|p| p.key.public())
        .filter(|k| !honest_holders.contains(k))
        .collect();
    let repaired = wait_for("the spares to repair copycat slots", WAIT, || {
        let h = &h;
        let spares = spares.clone();
        async move {
            let d = deal(h, copycat).await;
            let done: Vec<_> = d
                .slots
                .iter()
                .filter(|s| {
                    s.holder.is_some_and(|k| spares.contains(&k))
                        && matches!(s.status, SlotStatus::Active { misses: 0 })
                        && s.proven.is_some()
                })
                .collect();
            Ok((done.len() == spares.len()).then_some(d))
        }
    })
    .await
    .expect("copycat slots repaired by honest spares");
    for s in repaired.slots.iter().filter(|s| s.holder.is_none()) {
        // Every honest provider now holds a slot of the object: the rest stay freed.
        assert_eq!(s.status, SlotStatus::Freed);
    }

    // The victim's deal never lost a proof, a holder or a byte.
    let after = deal(&h, victim).await;
    for (j, (s, was)) in after.slots.iter().zip(&before.slots).enumerate() {
        assert_eq!(s.holder, was.holder, "slot {j} changed hands");
        assert_eq!(s.total_misses, 0, "honest holder of slot {j} was slashed");
        assert!(matches!(s.status, SlotStatus::Active { misses: 0 }));
    }
    for (j, holder) in honest_holders.iter().enumerate() {
        let p = cluster
            .providers
            .iter()
            .find(|p| p.key.public() == *holder)
            .expect("holder in cluster");
        let info = p
            .provider
            .store()
            .info(SlotKey::new(manifest.id(), j as u16))
            .await
            .expect("store answers")
            .expect("the holder still has its slot");
        assert!(info.complete());
    }
    let client = cluster.ledger.client(&new_key()).await.expect("client");
    let got = read_object(&client, &manifest.id(), &dir.path().join("read.mp4"))
        .await
        .expect("reads");
    assert!(got == data, "the victim's video reads back byte-identical");
    // The sybils paid for it: the collateral they locked is gone.
    for s in &sybils {
        let left = match h
            .ask(LedgerRequest::Provider(s.public()))
            .await
            .expect("answer")
        {
            LedgerResponse::Provider(Some(p)) => p.collateral,
            other => panic!("{other:?}"),
        };
        assert!(left < 100_000, "a sybil kept all its collateral");
    }
    drop(client);
    cluster.stop().await.expect("stop");
}

/// A provider stores shards only for a slot the ledger assigned to it and that still waits for
/// its bytes; valid shards of someone else's slot, of its own finished slot or of a made-up deal
/// are refused before a byte is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_make_a_provider_store_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 7).await.expect("cluster");
    let creator = new_key();
    let (_, manifest, id) = cluster
        .pin_random_as(&creator, dir.path(), 200 * 1024, 4, 2)
        .await
        .expect("pin");
    let h = Hostile::start(&cluster.ledger.addr).await.expect("hostile");
    let d = deal(&h, id).await;
    let outsider = cluster
        .providers
        .iter()
        .find(|p| !d.slots.iter().any(|s| s.holder == Some(p.key.public())))
        .expect("one provider holds nothing");
    let holder0 = cluster
        .providers
        .iter()
        .find(|p| d.slots[0].holder == Some(p.key.public()))
        .expect("holder of slot 0");

    // Real, verifiable shards of slot 1, straight from the creator's encoded copy.
    let enc = dir.path().join("enc");
    let layout = manifest.layout();
    let shard_size = layout.shard_size();
    let shape = TreeShape::new(layout.slot_len()).expect("shape");
    let outboard = Outboard::from_bytes(
        shape,
        &std::fs::read(slot_dir::outboard_path(&enc, 1)).expect("outboard"),
    )
    .expect("outboard parses");
    let slot1 = std::fs::read(slot_dir::data_path(&enc, 1)).expect("slot file");
    let shard = &slot1[..shard_size as usize];
    let siblings = if shard_level(shard_size) == shape.height() {
        Vec::new()
    } else {
        outboard
            .siblings(shard_level(shard_size), 0)
            .expect("siblings")
    };

    let provider_of = |key: PublicKey| {
        let h = &h;
        async move {
            match h.ask(LedgerRequest::Provider(key)).await.expect("answer") {
                LedgerResponse::Provider(Some(p)) => p,
                other => panic!("{other:?}"),
            }
        }
    };
    let attempts = [
        (outsider, id, 1u16, "a slot of another holder"),
        (holder0, id, 1, "another slot of the object it holds"),
        (holder0, id, 0, "its own slot, already complete"),
        (outsider, DealId([7; 32]), 0, "a deal that does not exist"),
    ];
    for (victim, deal_id, slot, what) in attempts {
        let before = victim
            .provider
            .store()
            .usage()
            .await
            .expect("store answers");
        let listed = victim.provider.store().list().await.expect("list").len();
        let mut stream = h
            .shard_stream(&provider_of(victim.key.public()).await)
            .await
            .expect("stream");
        let answer = h
            .put(&mut stream, deal_id, slot, 0, shard, siblings.clone())
            .await
            .expect("the provider answers");
        assert!(
            matches!(answer, ShardResponse::Error(_)),
            "{what}: the shard was stored: {answer:?}"
        );
        let after = victim
            .provider
            .store()
            .usage()
            .await
            .expect("store answers");
        assert_eq!(after.reserved, before.reserved, "{what}: room was reserved");
        assert_eq!(after.stored, before.stored, "{what}: bytes were stored");
        assert_eq!(
            victim.provider.store().list().await.expect("list").len(),
            listed,
            "{what}: a slot was created"
        );
    }
    // And once the deal is cancelled, its slots are no longer anybody's to fill.
    let client = cluster.ledger.client(&creator).await.expect("client");
    client
        .submit(&creator, TxBody::CancelDeal { deal: id })
        .await
        .expect("cancel");
    wait_for("the deal to end", WAIT, || {
        let h = &h;
        async move { Ok(deal(h, id).await.ended.then_some(())) }
    })
    .await
    .expect("ended");
    let mut stream = h
        .shard_stream(&provider_of(outsider.key.public()).await)
        .await
        .expect("stream");
    let answer = h
        .put(&mut stream, id, 1, 0, shard, siblings)
        .await
        .expect("answer");
    assert!(matches!(answer, ShardResponse::Error(_)), "{answer:?}");
    assert_eq!(
        outsider
            .provider
            .store()
            .usage()
            .await
            .expect("store answers")
            .reserved,
        0
    );
    drop(client);
    cluster.stop().await.expect("stop");
}

/// Nobody registers another node's peer id, floods the provider list with addresses or joins
/// without a bond; hundreds of bonded sybils that answer nowhere neither take a slot nor stop
/// an honest pin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impostors_and_registration_spam_neither_take_slots_nor_block_a_pin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 6).await.expect("cluster");
    let h = Hostile::start(&cluster.ledger.addr).await.expect("hostile");
    let honest: Vec<PublicKey> = cluster.providers.iter().map(|p| p.key.public()).collect();

    let impostor = new_key();
    h.must(&impostor, TxBody::Faucet { amount: 1_000_000 })
        .await
        .expect("faucet");
    let victim_peer = honest[0].peer_id_bytes();
    let long = format!("/ip4/127.0.0.1/tcp/{}", "7".repeat(120));
    type Want = fn(&EscrowError) -> bool;
    let peer_id_refused: Want = |e| matches!(e, EscrowError::PeerIdMismatch);
    let addresses_refused: Want = |e| matches!(e, EscrowError::BadAddresses(_));
    let bond_refused: Want = |e| matches!(e, EscrowError::BondTooSmall { .. });
    for (peer_id, addrs, collateral, want) in [
        (victim_peer, vec![], 100_000, peer_id_refused),
        (
            impostor.public().peer_id_bytes(),
            vec![long.clone(); 300],
            100_000,
            addresses_refused,
        ),
        (
            impostor.public().peer_id_bytes(),
            vec![long.repeat(2)],
            100_000,
            addresses_refused,
        ),
        (impostor.public().peer_id_bytes(), vec![], 0, bond_refused),
    ] {
        match h
            .submit(
                &impostor,
                TxBody::RegisterProvider {
                    peer_id,
                    addrs,
                    capacity: 1 << 40,
                    price: 0,
                    collateral,
                },
            )
            .await
            .expect("answer")
        {
            LedgerResponse::Refused(Refusal::Escrow(e)) => assert!(want(&e), "{e:?}"),
            other => panic!("a hostile registration was accepted: {other:?}"),
        }
    }

    // 300 bonded sybils, each with the most and longest addresses allowed, all cheaper than
    // every honest provider, queued as fast as the ledger takes them.
    const SYBILS: usize = 300;
    let sybils: Vec<Keypair> = (0..SYBILS).map(|_| new_key()).collect();
    let addrs: Vec<String> = (0..atlas_protocol::escrow::MAX_PROVIDER_ADDRS)
        .map(|i| format!("/ip4/127.0.0.1/tcp/{}/{}", 9, "x".repeat(100 + i)))
        .map(|a| a[..atlas_protocol::escrow::MAX_ADDR_LEN.min(a.len())].to_string())
        .collect();
    for s in &sybils {
        let ok = |r: LedgerResponse| matches!(r, LedgerResponse::Accepted { .. });
        assert!(ok(h
            .enqueue(s, 0, TxBody::Faucet { amount: 200_000 })
            .await
            .expect("answer")));
        assert!(ok(h
            .enqueue(
                s,
                1,
                TxBody::RegisterProvider {
                    peer_id: s.public().peer_id_bytes(),
                    addrs: addrs.clone(),
                    capacity: 1 << 40,
                    price: 0,
                    collateral: 100_000,
                },
            )
            .await
            .expect("answer")));
    }
    let client = cluster.ledger.client(&new_key()).await.expect("client");
    let want = SYBILS + honest.len();
    wait_for("every sybil to be registered", WAIT, || {
        let client = &client;
        async move { Ok((client.providers().await?.len() == want).then_some(())) }
    })
    .await
    .expect("registered");
    // Every page of the listing is bounded.
    match h
        .ask(LedgerRequest::ProviderPage { after: None })
        .await
        .expect("answer")
    {
        LedgerResponse::ProviderPage { items, next } => {
            assert!(items.len() <= MAX_PAGE_ITEMS);
            assert!(next.is_some());
        }
        other => panic!("{other:?}"),
    }
    // The unbounded listing is retired, not served.
    assert!(
        h.ask(LedgerRequest::Providers).await.is_err()
            || matches!(
                h.ask(LedgerRequest::Providers).await,
                Ok(LedgerResponse::Error(_))
            )
    );

    let (data, manifest, id) = cluster
        .pin_random(dir.path(), 200 * 1024, 4, 2)
        .await
        .expect("a pin succeeds after the spam");
    let d = deal(&h, id).await;
    for s in &d.slots {
        let holder = s.holder.expect("held");
        assert!(honest.contains(&holder), "a sybil was given a slot");
    }
    let got = read_object(&client, &manifest.id(), &dir.path().join("read.mp4"))
        .await
        .expect("reads");
    assert!(got == data);
    drop(client);
    cluster.stop().await.expect("stop");
}

/// The ledger is stopped and killed mid-epoch, again and again, while providers are proving;
/// whatever it had queued and lost, no honest holder ever misses a proof, and the chain replays
/// from genesis with every state root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_restart_never_slashes_an_honest_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = Cluster::start(dir.path(), 6).await.expect("cluster");
    let (data, manifest, id) = cluster
        .pin_random(dir.path(), 200 * 1024, 4, 2)
        .await
        .expect("pin");
    let watcher = new_key();
    let watcher2 = watcher.clone();
    // The ledger keeps its address across restarts.
    let ledger_addr = cluster.ledger.addr.clone();
    let proven_all = move |epoch: u64| {
        let addr = ledger_addr.clone();
        let watcher = watcher2.clone();
        async move {
            let client = atlas_node::ledger::LedgerClient::connect(&watcher, addr).await?;
            wait_for("every slot to be proven", WAIT, || {
                let client = &client;
                async move {
                    let d = client.deal(id).await?;
                    Ok(d.slots
                        .iter()
                        .all(|s| s.proven.is_some_and(|e| e >= epoch))
                        .then_some(()))
                }
            })
            .await
        }
    };
    proven_all(0).await.expect("proving");

    for (round, kill) in [(0u64, true), (1, false), (2, true), (3, true)] {
        // Stop at a different point of the epoch each round: right after its first block,
        // then one block further each time.
        let client = cluster.ledger.client(&watcher).await.expect("client");
        wait_for("the chosen point of the epoch", WAIT, || {
            let client = &client;
            async move {
                let s = client.status().await?;
                Ok((s.height % s.epoch_blocks == round).then_some(()))
            }
        })
        .await
        .expect("height");
        drop(client);
        cluster = cluster
            .restart_ledger(kill)
            .await
            .expect("the ledger restarts where it stopped");
    }
    let client = cluster.ledger.client(&watcher).await.expect("client");
    let now = client.status().await.expect("status").epoch;
    drop(client);
    proven_all(now + 2).await.expect("proving goes on");

    let client = cluster.ledger.client(&watcher).await.expect("client");
    let d = client.deal(id).await.expect("deal");
    for (j, s) in d.slots.iter().enumerate() {
        assert_eq!(s.total_misses, 0, "the holder of slot {j} was slashed");
        assert!(matches!(s.status, SlotStatus::Active { misses: 0 }));
    }
    atlas_tests::replay_chain(&client, &cluster.ledger_key.public())
        .await
        .expect("the chain replays from genesis across the restarts");
    let got = read_object(&client, &manifest.id(), &dir.path().join("read.mp4"))
        .await
        .expect("reads");
    assert!(got == data);
    drop(client);
    cluster.stop().await.expect("stop");
}

/// One peer may hold only its share of a provider's shard streams: a stranger opening stream
/// after stream and sending nothing gets `Busy` beyond it, and the provider's video still reads
/// back for everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_flooding_a_provider_with_idle_shard_streams_is_told_busy_and_readers_still_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 6).await.expect("cluster");
    let (data, manifest, id) = cluster
        .pin_random(dir.path(), 300 * 1024, 4, 2)
        .await
        .expect("pin");
    let h = Hostile::start(&cluster.ledger.addr).await.expect("hostile");
    let victim = deal(&h, id).await.slots[0].holder.expect("slot 0 held");
    let victim_node = cluster
        .providers
        .iter()
        .find(|p| p.key.public() == victim)
        .expect("the holder is in the cluster");
    let victim = match h
        .ask(LedgerRequest::Provider(victim))
        .await
        .expect("answer")
    {
        LedgerResponse::Provider(Some(p)) => p,
        other => panic!("{other:?}"),
    };
    // One at a time, each counted by the provider before the next: libp2p hands a provider
    // inbound streams through a one-place queue and drops what arrives while it is full, so a
    // burst would lose streams before the provider ever sees them.
    let before = victim_node.provider.shard_streams_open();
    let mut idle = Vec::new();
    for i in 0..64 {
        idle.push(h.shard_stream(&victim).await.expect("stream"));
        wait_for("the provider to take the stream", WAIT, || async {
            Ok((victim_node.provider.shard_streams_open() > before + i).then_some(()))
        })
        .await
        .expect("the provider serves its first 64 streams from one peer");
    }
    let mut one_more = h.shard_stream(&victim).await.expect("stream");
    let answer = Hostile::answer(&mut one_more).await.expect("an answer");
    assert_eq!(answer, ShardResponse::Busy);

    let client = cluster.ledger.client(&new_key()).await.expect("client");
    let got = read_object(&client, &manifest.id(), &dir.path().join("read.mp4"))
        .await
        .expect("the video reads back");
    assert!(got == data, "the video differs");
    drop(idle);
}

/// A peer opens 200 uploads to one provider for a slot really assigned to it (a deal of its own),
/// sends a quarter of each announced 4 MiB body and goes silent. The provider holds at most the
/// peer's share of bodies (16 MiB; the attacker once took all 64 MiB of them, and honest uploads
/// waited until their slots expired), and an honest creator's pin to it completes while the
/// streams stay open, and reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_from_one_peer_never_block_an_honest_pin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(dir.path(), 6).await.expect("cluster");
    let victim = &cluster.providers[0];
    let victim_peer = libp2p::PeerId::from_bytes(&victim.key.public().peer_id_bytes())
        .expect("peer id")
        .to_string();
    let scratch = dir.path().join("attacker");
    std::fs::create_dir_all(&scratch).expect("scratch");
    let stalled = atlas_tests::stall::stall(
        &cluster.ledger.addr.to_string(),
        &victim_peer,
        6,
        &scratch,
        200,
    )
    .await
    .expect("the attacker's streams");
    assert_eq!(stalled.streams.len(), 200, "the attacker holds its streams");
    let held = victim.provider.put_bytes_in_flight();
    assert!(
        held <= 16 << 20,
        "one peer's stalled bodies hold {held} bytes of the provider's"
    );

    let (data, manifest, id) = cluster
        .pin_random(dir.path(), 2 << 20, 4, 2)
        .await
        .expect("the honest pin completes while the attacker's uploads stall");
    let h = &stalled.attacker;
    assert!(
        deal(h, id)
            .await
            .slots
            .iter()
            .any(|s| s.holder == Some(victim.key.public())),
        "the attacked provider holds a slot of the honest deal"
    );
    let client = cluster.ledger.client(&new_key()).await.expect("client");
    let got = read_object(&client, &manifest.id(), &dir.path().join("read.mp4"))
        .await
        .expect("the video reads back");
    assert!(got == data, "the video differs");
    drop(stalled);
    cluster.stop().await.expect("stop");
}
