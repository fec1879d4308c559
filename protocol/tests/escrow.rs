//! The escrow's invariants under random sequences of transactions and epoch boundaries: tokens are
//! conserved, a deal never pays out more than was deposited, nobody is paid without a valid proof,
//! and replayed or badly signed transactions are refused.

use atlas_protocol::challenge::{Challenge, StorageProof};
use atlas_protocol::escrow::{
    Amount, Deal, DealIndex, DealState, Escrow, EscrowError, Event, Params, SignedTx, SlotStatus,
    Tx, TxBody,
};
use atlas_protocol::layout::{Layout, ENCODING_RS_GF8_V1};
use atlas_protocol::manifest::{Manifest, MANIFEST_VERSION};
use atlas_protocol::tree::{Outboard, TreeError, GROUP_LEN};
use atlas_protocol::{DealId, Keypair, PublicKey};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use std::collections::{BTreeMap, BTreeSet};

const KEYS: usize = 8;
const SLOT: u64 = 64 * 1024;

struct World {
    keys: Vec<Keypair>,
    escrow: Escrow,
    /// Slot bytes of every object, by (creator index, object number).
    objects: Vec<(Vec<Vec<u8>>, Vec<Outboard>)>,
    deals: Vec<DealId>,
    /// Deposits into each deal (open, top-ups, extensions).
    deposited: BTreeMap<DealId, Amount>,
    /// Accepted proofs: (deal, slot, holder, epoch).
    proofs: BTreeSet<(DealId, u16, PublicKey, u64)>,
    applied: Vec<SignedTx>,
    /// What a store fed only with `take_changes` holds.
    stored: Stored,
}

#[derive(Default)]
struct Stored {
    accounts: BTreeMap<PublicKey, atlas_protocol::escrow::Account>,
    providers: BTreeMap<PublicKey, atlas_protocol::escrow::Provider>,
    deals: BTreeMap<DealId, atlas_protocol::escrow::Deal>,
    books:
        BTreeMap<atlas_protocol::escrow::books::BookKey, atlas_protocol::escrow::books::BookRecord>,
    terms: BTreeMap<DealId, std::sync::Arc<atlas_protocol::escrow::DealTerms>>,
}

fn apply_changes<K: Ord, V>(map: &mut BTreeMap<K, V>, changes: Vec<(K, Option<V>)>) {
    for (k, v) in changes {
        match v {
            Some(v) => {
                map.insert(k, v);
            }
            None => {
                map.remove(&k);
            }
        }
    }
}

impl World {
    fn new() -> Self {
        let keys = (0..KEYS as u8)
            .map(|i| Keypair::from_secret([i + 1; 32]))
            .collect();
        let params = Params {
            faucet_cap: Some(1_000_000),
            ..Params::default()
        };
        Self {
            keys,
            escrow: Escrow::new(params, [0; 32]),
            objects: Vec::new(),
            deals: Vec::new(),
            deposited: BTreeMap::new(),
            proofs: BTreeSet::new(),
            applied: Vec::new(),
            stored: Stored::default(),
        }
    }

    fn pk(&self, i: usize) -> PublicKey {
        self.keys[i % KEYS].public()
    }

    /// Signs and applies; records what succeeded.
    fn submit(&mut self, who: usize, body: TxBody) -> Result<(), EscrowError> {
        let key = &self.keys[who % KEYS];
        let nonce = self.escrow.account(&key.public()).nonce;
        let tx = Tx {
            chain: *self.escrow.chain(),
            signer: key.public(),
            nonce,
            body,
        };
        let signed = tx.clone().sign(key).expect("signer's own key");
        let verified = signed.verify().expect("fresh signature verifies");
        assert_eq!(verified, tx);
        let before = self.escrow.clone();
        if let Err(e) = self.escrow.apply(&verified) {
            assert_eq!(
                self.escrow,
                before,
                "a refused {} changed the state",
                tx.body.kind()
            );
            return Err(e);
        }
        self.applied.push(signed);
        Ok(())
    }

    fn new_object(&mut self, creator: usize, seed: u8) -> atlas_protocol::manifest::SignedManifest {
        // A one-stripe object, 2 data + 1 parity, 64 KiB shards: slots are 64 KiB.
        let layout = Layout::new(2, 1, SLOT, 100_000).expect("valid");
        let slots: Vec<Vec<u8>> = (0..3u8)
            .map(|j| {
                let mut v = vec![0u8; SLOT as usize];
                blake3::Hasher::new()
                    .update(&[seed, j, self.objects.len() as u8])
                    .finalize_xof()
                    .fill(&mut v);
                v
            })
            .collect();
        let outboards: Vec<Outboard> = slots
            .iter()
            .map(|s| Outboard::from_slot(s).expect("valid slot"))
            .collect();
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            encoding: ENCODING_RS_GF8_V1.into(),
            name: format!("video-{seed}"),
            media_type: "video/mp4".into(),
            size: layout.size(),
            file_hash: [seed; 32],
            data_shards: 2,
            parity_shards: 1,
            shard_size: SLOT,
            stripes: layout.stripes(),
            slot_roots: outboards.iter().map(|o| *o.root().as_bytes()).collect(),
            creator: self.pk(creator),
            created_at: 0,
        };
        let signed = manifest
            .sign(&self.keys[creator % KEYS])
            .expect("signs")
            .signed()
            .clone();
        self.objects.push((slots, outboards));
        signed
    }

    fn proof(&self, deal_index: usize, slot: u16, honest: bool) -> Option<(DealId, StorageProof)> {
        let id = *self.deals.get(deal_index)?;
        let (slots, outboards) = &self.objects[deal_index];
        let mut bytes = slots[slot as usize].clone();
        if !honest {
            // A provider that kept 90% of its bytes and made up the rest.
            let cut = bytes.len() * 9 / 10;
            bytes[cut..].fill(0);
        }
        let ob = &outboards[slot as usize];
        let shape = ob.shape();
        let ch = Challenge::derive(
            self.escrow.beacon(),
            &id,
            slot,
            self.escrow.epoch(),
            shape.chunks(),
            self.escrow.params().samples,
        );
        let proof = StorageProof::build::<TreeError>(
            &ch,
            &shape,
            |g| Ok(bytes[(g * GROUP_LEN) as usize..((g + 1) * GROUP_LEN) as usize].to_vec()),
            |l, i| ob.node(l, i),
        )
        .expect("builds");
        Some((id, proof))
    }

    /// `creator` opens a deal of `manifest` with key indices `providers`; its id if accepted.
    fn open(
        &mut self,
        creator: usize,
        manifest: atlas_protocol::manifest::SignedManifest,
        providers: [usize; 3],
        epochs: u8,
    ) -> Option<DealId> {
        let providers = providers.iter().map(|&p| self.pk(p)).collect();
        let nonce = self.escrow.account(&self.pk(creator)).nonce;
        self.submit(
            creator,
            TxBody::OpenDeal {
                manifest,
                providers,
                epochs: epochs as u64,
                max_price: Amount::MAX,
            },
        )
        .ok()?;
        Some(Escrow::deal_id(&self.pk(creator), nonce))
    }

    /// A store that was handed only each step's changed records holds exactly the state, and the
    /// root kept up to date record by record is the root of those records hashed from scratch.
    fn check_store_replica(&mut self) {
        let (root, changes) = self.escrow.take_changes();
        // Terms are handed over once, when a deal opens; an ended deal leaves in its final form.
        for (id, t) in &changes.opened {
            self.stored.terms.insert(*id, t.clone());
        }
        for (id, d) in &changes.ended {
            assert!(d.ended && self.escrow.deal(id).is_none());
            let paid: Amount = d.slots.iter().map(|s| s.paid).sum();
            assert!(paid <= self.deposited.get(id).copied().unwrap_or(0));
        }
        self.check_indices();
        apply_changes(&mut self.stored.accounts, changes.accounts);
        apply_changes(&mut self.stored.providers, changes.providers);
        apply_changes(&mut self.stored.books, changes.books);
        for (id, state) in changes.deals {
            match state {
                Some(bytes) => {
                    let state = DealState::decode(&bytes).expect("a deal state the store can read");
                    let terms = self
                        .stored
                        .terms
                        .get(&id)
                        .expect("a deal's terms were handed to the store when it opened")
                        .clone();
                    self.stored.deals.insert(id, Deal::from_state(terms, state));
                }
                None => {
                    self.stored.deals.remove(&id);
                    self.stored.terms.remove(&id);
                }
            }
        }
        let mut rebuilt = Escrow::from_parts(
            changes.meta,
            self.stored.accounts.clone(),
            self.stored.providers.clone(),
            self.stored.deals.clone(),
            self.stored.books.clone(),
        );
        assert!(
            rebuilt == self.escrow,
            "a change was not handed to the store"
        );
        assert_eq!(rebuilt.state_root(), root, "the incremental root drifted");
    }

    /// The indexed look-ups answer what a scan over every live deal would.
    fn check_indices(&mut self) {
        let keys: Vec<PublicKey> = (0..self.keys.len()).map(|i| self.pk(i)).collect();
        for k in keys {
            let scan = |pick: &dyn Fn(&Deal) -> bool, e: &Escrow| -> Vec<DealId> {
                e.deals()
                    .iter()
                    .filter(|(_, d)| pick(d))
                    .map(|(id, _)| *id)
                    .collect()
            };
            let held = scan(
                &|d| d.slots.iter().any(|s| s.holder == Some(k)),
                &self.escrow,
            );
            let created = scan(&|d| d.terms.creator == k, &self.escrow);
            let ids = |it: &mut dyn Iterator<Item = (&DealId, &Deal)>| -> Vec<DealId> {
                it.map(|(id, _)| *id).collect()
            };
            let mut listed = |index| ids(&mut self.escrow.indexed_deals(index, None));
            assert_eq!(listed(DealIndex::HeldBy(k)), held);
            assert_eq!(listed(DealIndex::OfCreator(k)), created);
        }
        let freed = self
            .escrow
            .deals()
            .iter()
            .filter(|(_, d)| d.slots.iter().any(|s| s.status == SlotStatus::Freed))
            .map(|(id, _)| *id)
            .collect::<Vec<_>>();
        let listed: Vec<DealId> = self
            .escrow
            .indexed_deals(DealIndex::Repairable, None)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(listed, freed);
    }

    fn check_invariants(&self, events: &[Event]) {
        // No provider holds two slots of one object, across every live deal of it.
        let mut held = BTreeMap::new();
        for deal in self.escrow.deals().values().filter(|d| !d.ended) {
            for (j, s) in deal.slots.iter().enumerate() {
                if let Some(h) = s.holder {
                    if let Some(other) = held.insert((deal.terms.object, h), j) {
                        panic!("{h:?} holds slots {other} and {j} of one object");
                    }
                }
            }
        }
        assert_eq!(
            self.escrow.total_supply(),
            self.escrow.minted(),
            "tokens are conserved"
        );
        for (id, deal) in self.escrow.deals() {
            let paid: Amount = deal.slots.iter().map(|s| s.paid).sum();
            let deposited = self.deposited.get(id).copied().unwrap_or(0);
            assert!(
                paid <= deposited,
                "deal paid {paid} of {deposited} deposited"
            );
        }
        let settled = self.escrow.epoch().saturating_sub(1);
        for e in events {
            if let Event::Paid {
                deal, slot, holder, ..
            }
            | Event::BountyPaid {
                deal, slot, holder, ..
            } = e
            {
                assert!(
                    self.proofs.contains(&(*deal, *slot, *holder, settled)),
                    "paid {holder:?} for slot {slot} in epoch {settled} without a valid proof"
                );
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Faucet(usize, u32),
    Transfer(usize, usize, u32),
    Register(usize, u16, u32, u8),
    Copycat(usize, usize, [usize; 3], u8),
    Open(usize, [usize; 3], u8),
    Accept(usize, u16),
    Prove(usize, u16, bool),
    Claim(usize, u16, usize),
    TopUp(usize, usize, u16),
    Extend(usize, usize, u8),
    Cancel(usize, usize),
    Release(usize, u16),
    Exit(usize),
    Advance,
    Replay(usize),
    Forge(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS;
    prop_oneof![
        2 => (k.clone(), 0u32..2_000_000).prop_map(|(a, b)| Op::Faucet(a, b)),
        1 => (k.clone(), k.clone(), 0u32..100_000).prop_map(|(a, b, c)| Op::Transfer(a, b, c)),
        2 => (k.clone(), 0u16..5_000, 0u32..500_000, 0u8..8).prop_map(|(a, b, c, d)| Op::Register(a, b, c, d)),
        2 => (k.clone(), 0usize..6, [k.clone(), k.clone(), k.clone()], 1u8..8).prop_map(|(a, b, c, d)| Op::Copycat(a, b, c, d)),
        2 => (k.clone(), [k.clone(), k.clone(), k.clone()], 1u8..8).prop_map(|(a, b, c)| Op::Open(a, b, c)),
        4 => (0usize..6, 0u16..3).prop_map(|(a, b)| Op::Accept(a, b)),
        6 => (0usize..6, 0u16..3, prop::bool::weighted(0.8)).prop_map(|(a, b, c)| Op::Prove(a, b, c)),
        2 => (0usize..6, 0u16..3, k.clone()).prop_map(|(a, b, c)| Op::Claim(a, b, c)),
        1 => (k.clone(), 0usize..6, 0u16..1000).prop_map(|(a, b, c)| Op::TopUp(a, b, c)),
        1 => (k.clone(), 0usize..6, 1u8..4).prop_map(|(a, b, c)| Op::Extend(a, b, c)),
        1 => (k.clone(), 0usize..6).prop_map(|(a, b)| Op::Cancel(a, b)),
        1 => (0usize..6, 0u16..3).prop_map(|(a, b)| Op::Release(a, b)),
        1 => k.clone().prop_map(Op::Exit),
        5 => Just(Op::Advance),
        1 => (0usize..64).prop_map(Op::Replay),
        1 => (0usize..64, 0usize..64).prop_map(|(a, b)| Op::Forge(a, b)),
    ]
}

fn holder_of(w: &World, deal: usize, slot: u16) -> Option<usize> {
    let id = w.deals.get(deal)?;
    let holder = w.escrow.deal(id)?.slots.get(slot as usize)?.holder?;
    (0..KEYS).find(|&i| w.pk(i) == holder)
}

fn run(w: &mut World, op: Op) {
    let mut events = Vec::new();
    match op {
        Op::Faucet(who, amount) => {
            let _ = w.submit(
                who,
                TxBody::Faucet {
                    amount: amount as Amount,
                },
            );
        }
        Op::Transfer(from, to, amount) => {
            let to = w.pk(to);
            let _ = w.submit(
                from,
                TxBody::Transfer {
                    to,
                    amount: amount as Amount,
                },
            );
        }
        Op::Register(who, price, collateral, hostile) => {
            // Hostile registrations: another key's peer id, or a flood of long addresses. The
            // rules refuse both.
            let (peer_id, addrs) = match hostile {
                0 => (w.pk(who + 1).peer_id_bytes(), vec![]),
                1 => (
                    w.pk(who).peer_id_bytes(),
                    vec![format!("/ip4/127.0.0.1/tcp/{}", "9".repeat(200)); 40],
                ),
                _ => (
                    w.pk(who).peer_id_bytes(),
                    vec!["/ip4/127.0.0.1/tcp/7000".into()],
                ),
            };
            let result = w.submit(
                who,
                TxBody::RegisterProvider {
                    peer_id,
                    addrs,
                    capacity: 10 * SLOT,
                    price: price as Amount * 1000,
                    collateral: collateral as Amount,
                },
            );
            if hostile < 2 {
                assert!(result.is_err(), "a hostile registration was accepted");
            }
        }
        Op::Copycat(creator, deal, providers, epochs) => {
            // Anyone may open another deal of an object with its creator's signed manifest (a
            // sponsor keeping it alive); it must never take bytes the first deal counts on.
            let Some(first) = w.deals.get(deal).and_then(|id| w.escrow.deal(id)).cloned() else {
                return;
            };
            if let Some(id) = w.open(creator, first.terms.manifest.clone(), providers, epochs) {
                let d = w.escrow.deal(&id).expect("opened");
                w.deposited.insert(id, d.escrow);
                w.deals.push(id);
                // The same slot bytes: proofs for it come from the first deal's object.
                let copy = w.objects[deal].clone();
                w.objects.push(copy);
            }
        }
        Op::Open(creator, providers, epochs) => {
            let manifest = w.new_object(creator, epochs);
            let before = w.escrow.account(&w.pk(creator)).balance;
            if let Some(id) = w.open(creator, manifest, providers, epochs) {
                let deal = w.escrow.deal(&id).expect("opened");
                let spent = before - w.escrow.account(&w.pk(creator)).balance;
                assert_eq!(spent, deal.escrow + deal.reserve);
                w.deposited.insert(id, deal.escrow);
                w.deals.push(id);
            } else {
                // Keep object numbering aligned with deal numbering.
                w.objects.pop();
            }
        }
        Op::Accept(deal, slot) => {
            if let (Some(&id), Some(who)) = (w.deals.get(deal), holder_of(w, deal, slot)) {
                let _ = w.submit(who, TxBody::AcceptSlot { deal: id, slot });
            }
        }
        Op::Prove(deal, slot, honest) => {
            if let (Some((id, proof)), Some(who)) =
                (w.proof(deal, slot, honest), holder_of(w, deal, slot))
            {
                let epoch = w.escrow.epoch();
                let result = w.submit(
                    who,
                    TxBody::SubmitProof {
                        deal: id,
                        slot,
                        epoch,
                        proof,
                    },
                );
                if result.is_ok() {
                    w.proofs.insert((id, slot, w.pk(who), epoch));
                }
                if !honest {
                    // Sampling 16 chunks of a slot with its last 10% zeroed may miss the damage;
                    // when it does not, the proof must be refused.
                    if let Err(e) = &result {
                        assert!(!matches!(e, EscrowError::BadNonce { .. }), "unexpected {e}");
                    }
                }
            }
        }
        Op::Claim(deal, slot, who) => {
            if let Some(&id) = w.deals.get(deal) {
                let _ = w.submit(who, TxBody::ClaimSlot { deal: id, slot });
            }
        }
        Op::TopUp(who, deal, amount) => {
            if let Some(&id) = w.deals.get(deal) {
                if w.submit(
                    who,
                    TxBody::TopUp {
                        deal: id,
                        amount: amount as Amount,
                    },
                )
                .is_ok()
                {
                    *w.deposited.entry(id).or_default() += amount as Amount;
                }
            }
        }
        Op::Extend(who, deal, epochs) => {
            if let Some(&id) = w.deals.get(deal) {
                let before = w.escrow.deal(&id).map_or(0, |d| d.escrow);
                if w.submit(
                    who,
                    TxBody::Extend {
                        deal: id,
                        epochs: epochs as u64,
                    },
                )
                .is_ok()
                {
                    let after = w.escrow.deal(&id).map_or(0, |d| d.escrow);
                    *w.deposited.entry(id).or_default() += after - before;
                }
            }
        }
        Op::Cancel(who, deal) => {
            if let Some(&id) = w.deals.get(deal) {
                let _ = w.submit(who, TxBody::CancelDeal { deal: id });
            }
        }
        Op::Release(deal, slot) => {
            if let (Some(&id), Some(who)) = (w.deals.get(deal), holder_of(w, deal, slot)) {
                let d = w.escrow.deal(&id).expect("holder_of found it");
                let live = !d.ended
                    && matches!(
                        d.slots[slot as usize].status,
                        SlotStatus::Active { .. } | SlotStatus::Pending { .. }
                    );
                let released = w.submit(who, TxBody::ReleaseSlot { deal: id, slot });
                if live {
                    released.expect("a holder may release its live slot");
                }
            }
        }
        Op::Exit(who) => {
            let _ = w.submit(who, TxBody::ExitProvider);
        }
        Op::Advance => {
            let beacon = *blake3::hash(&w.escrow.epoch().to_be_bytes()).as_bytes();
            events = w.escrow.advance_epoch(beacon);
        }
        Op::Replay(i) => {
            if let Some(signed) = w.applied.get(i).cloned() {
                let tx = signed.verify().expect("it verified once");
                let before = w.escrow.clone();
                assert!(matches!(
                    w.escrow.apply(&tx),
                    Err(EscrowError::BadNonce { .. })
                ));
                assert_eq!(w.escrow, before, "a refused replay changes nothing");
            }
        }
        Op::Forge(i, j) => {
            if let (Some(a), Some(b)) = (w.applied.get(i), w.applied.get(j)) {
                if a.bytes != b.bytes {
                    // Another transaction's signature over these bytes, or a bit flipped.
                    let swapped = SignedTx {
                        bytes: a.bytes.clone(),
                        signature: b.signature,
                    };
                    assert!(swapped.verify().is_err());
                }
                let mut flipped = a.clone();
                let n = flipped.bytes.len();
                flipped.bytes[n / 2] ^= 1;
                assert!(flipped.verify().is_err());
            }
        }
    }
    w.check_invariants(&events);
    w.check_store_replica();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))), ..ProptestConfig::default() })]

    #[test]
    fn escrow_invariants_hold_under_any_sequence(ops in prop::collection::vec(op(), 1..120)) {
        let mut w = World::new();
        for op in ops {
            run(&mut w, op);
        }
    }
}

/// Funds a creator (key 0) and three providers (keys 1..=3, price per GiB-epoch from `price`),
/// opens a deal on a fresh object for `epochs` and has every provider accept its slot.
fn open_accepted_deal(
    w: &mut World,
    seed: u8,
    epochs: u64,
    price: impl Fn(usize) -> Amount,
) -> DealId {
    w.submit(0, TxBody::Faucet { amount: 1_000_000 })
        .expect("faucet");
    for p in 1..=3 {
        w.submit(p, TxBody::Faucet { amount: 500_000 })
            .expect("faucet");
        w.submit(
            p,
            TxBody::RegisterProvider {
                peer_id: w.pk(p).peer_id_bytes(),
                addrs: vec![],
                capacity: 1 << 30,
                price: price(p),
                collateral: 100_000,
            },
        )
        .expect("register");
    }
    let manifest = w.new_object(0, seed);
    let providers = (1..=3).map(|p| w.pk(p)).collect();
    w.submit(
        0,
        TxBody::OpenDeal {
            manifest,
            providers,
            epochs,
            max_price: Amount::MAX,
        },
    )
    .expect("open");
    let id = Escrow::deal_id(&w.pk(0), 1);
    w.deals.push(id);
    for slot in 0..3u16 {
        w.submit(slot as usize + 1, TxBody::AcceptSlot { deal: id, slot })
            .expect("accept");
    }
    id
}

/// The honest path end to end: three providers hold a deal for five epochs and are each paid
/// exactly five times their slot price; the creator gets the rest back.
#[test]
fn honest_holders_are_paid_exactly_for_each_proven_epoch() {
    let mut w = World::new();
    let id = open_accepted_deal(&mut w, 1, 5, |p| 16_384 * p as Amount);
    let creator_before = w.escrow.account(&w.pk(0)).balance;
    let balances: Vec<Amount> = (1..=3)
        .map(|p| w.escrow.account(&w.pk(p)).balance)
        .collect();
    let escrow_before = w.escrow.deal(&id).expect("deal").escrow;
    w.escrow.advance_epoch([1; 32]); // epoch 0 -> 1: nothing due yet
    for _ in 0..5 {
        // Every honest proof is accepted.
        prove(&mut w, 0..3);
        let beacon = *blake3::hash(&w.escrow.epoch().to_le_bytes()).as_bytes();
        w.escrow.advance_epoch(beacon);
    }
    // 5 paid epochs after the accept epoch end the deal: it leaves the live state, and the
    // block's changes carry its final form for a store's archive.
    assert!(
        w.escrow.deal(&id).is_none(),
        "the ended deal left the live state"
    );
    let (_, changes) = w.escrow.take_changes();
    let deal = changes
        .ended
        .iter()
        .find(|(i, _)| *i == id)
        .expect("the deal ended")
        .1
        .clone();
    let mut total = 0;
    for (slot, before) in balances.iter().enumerate() {
        let price = deal.slots[slot].price;
        // 64 KiB at 16384*p per GiB-epoch: price 1, 2, 3.
        assert_eq!(price, slot as Amount + 1);
        let got = w.escrow.account(&w.pk(slot + 1)).balance - before;
        assert_eq!(got, 5 * price, "holder {slot} paid 5 x its price");
        total += got;
    }
    assert!(deal.ended);
    let creator_after = w.escrow.account(&w.pk(0)).balance;
    assert_eq!(
        creator_after - creator_before,
        escrow_before - total + deal_reserve_refund(&w, &id)
    );
    assert_eq!(w.escrow.total_supply(), w.escrow.minted());
}

fn deal_reserve_refund(w: &World, id: &DealId) -> Amount {
    let _ = (w, id);
    // The reserve was deposited at open (10% of the price total) and nothing drew on it.
    let escrow = 5 * (1 + 2 + 3);
    escrow / 10
}

/// A holder that stops proving is slashed each epoch and loses the slot after `max_misses`.
#[test]
fn a_silent_holder_is_slashed_then_freed() {
    let mut w = World::new();
    let id = open_accepted_deal(&mut w, 2, 20, |_| 16_384 * 10);
    w.escrow.advance_epoch([1; 32]);
    let max = w.escrow.params().max_misses;
    let mut slashed_total = 0;
    for round in 1..=max {
        let events = w.escrow.advance_epoch([round as u8 + 1; 32]);
        for e in &events {
            if let Event::Missed {
                slashed, misses, ..
            } = e
            {
                assert!(*slashed > 0);
                assert_eq!(*misses, round);
                slashed_total += slashed;
            }
        }
    }
    let deal = w.escrow.deal(&id).expect("deal");
    for s in &deal.slots {
        assert_eq!(s.status, atlas_protocol::escrow::SlotStatus::Freed);
        assert_eq!(s.holder, None);
    }
    assert!(slashed_total > 0);
    assert!(
        deal.reserve > slashed_total,
        "slashes and forfeits went to the reserve"
    );
    assert_eq!(w.escrow.total_supply(), w.escrow.minted());
}

/// A big slot gets longer to be fetched or rebuilt before its holder forfeits it: the deadline
/// grows with the slot's size at the slowest transfer rate the rules allow for.
#[test]
fn the_accept_deadline_grows_with_slot_size() {
    let p = Params::default();
    let small = p.accept_deadline(10, 64 << 10);
    assert_eq!(small, 10 + p.accept_epochs + 1);
    let big = p.accept_deadline(10, 1 << 30);
    assert_eq!(
        big,
        10 + p.accept_epochs + (1u64 << 30).div_ceil(p.transfer_bytes_per_epoch)
    );
    assert!(big > small);
    // An absurd size saturates instead of wrapping into the past.
    assert_eq!(p.accept_deadline(u64::MAX - 1, u64::MAX), u64::MAX);
}

/// The holders of `slots` of the first deal (keys 1, 2, 3 for slots 0, 1, 2) prove this epoch.
fn prove(w: &mut World, slots: std::ops::Range<u16>) {
    for slot in slots {
        let (id, proof) = w.proof(0, slot, true).expect("deal");
        let epoch = w.escrow.epoch();
        w.submit(
            slot as usize + 1,
            TxBody::SubmitProof {
                deal: id,
                slot,
                epoch,
                proof,
            },
        )
        .expect("an honest proof is accepted");
    }
}

/// A transaction signed for one chain is refused by another, even from the same signer with the
/// right nonce.
#[test]
fn a_transaction_for_another_chain_is_refused() {
    let mut w = World::new();
    let other = Escrow::new(w.escrow.params().clone(), [9; 32]);
    assert_ne!(other.chain(), w.escrow.chain());
    let key = &w.keys[0];
    let tx = Tx {
        chain: *other.chain(),
        signer: key.public(),
        nonce: 0,
        body: TxBody::Faucet { amount: 10 },
    };
    let verified = tx.sign(key).expect("signs").verify().expect("verifies");
    assert_eq!(w.escrow.apply(&verified), Err(EscrowError::WrongChain));
    w.submit(0, TxBody::Faucet { amount: 10 })
        .expect("the same transaction for this chain is taken");
}

/// A slot locks at least the floor per GiB, whatever its price: a provider asking nothing still
/// stakes collateral on every slot it takes.
#[test]
fn free_providers_still_stake_the_collateral_floor() {
    let mut w = World::new();
    let id = open_accepted_deal(&mut w, 3, 5, |_| 0);
    let d = w.escrow.deal(&id).expect("deal");
    let floor = w.escrow.params().slot_collateral(0, d.terms.slot_len);
    assert!(floor > 0);
    for s in &d.slots {
        assert_eq!(s.price, 0);
        assert_eq!(s.collateral, floor);
    }
    // A registration below the bond is refused.
    w.submit(5, TxBody::Faucet { amount: 500_000 })
        .expect("faucet");
    let err = w
        .submit(
            5,
            TxBody::RegisterProvider {
                peer_id: w.pk(5).peer_id_bytes(),
                addrs: vec![],
                capacity: 1 << 30,
                price: 0,
                collateral: w.escrow.params().min_provider_collateral - 1,
            },
        )
        .expect_err("under the bond");
    assert!(matches!(err, EscrowError::BondTooSmall { .. }));
}

/// A claim never delivered forfeits its collateral to nobody, and what holders were slashed
/// never flows back to the creator: a creator cannot profit from a slot it made impossible to
/// repair, or from holders failing.
#[test]
fn forfeits_never_flow_back_to_the_creator() {
    let mut w = World::new();
    let id = open_accepted_deal(&mut w, 4, 30, |_| 16_384 * 10);
    let max = w.escrow.params().max_misses;
    w.escrow.advance_epoch([1; 32]);
    // Slot 0's holder stops proving and is freed; slots 1 and 2 keep proving.
    for round in 0..=max {
        prove(&mut w, 1..3);
        w.escrow.advance_epoch([round as u8 + 2; 32]);
    }
    assert_eq!(
        w.escrow.deal(&id).expect("deal").slots[0].status,
        atlas_protocol::escrow::SlotStatus::Freed
    );
    // A fresh provider claims slot 0 and never delivers.
    w.submit(4, TxBody::Faucet { amount: 500_000 })
        .expect("faucet");
    w.submit(
        4,
        TxBody::RegisterProvider {
            peer_id: w.pk(4).peer_id_bytes(),
            addrs: vec![],
            capacity: 1 << 30,
            price: 0,
            collateral: 100_000,
        },
    )
    .expect("register");
    w.submit(4, TxBody::ClaimSlot { deal: id, slot: 0 })
        .expect("claim");
    let locked = w.escrow.deal(&id).expect("deal").slots[0].collateral;
    assert!(locked > 0);
    let reserve_before = w.escrow.deal(&id).expect("deal").reserve;
    let forfeited_before = w.escrow.forfeited();
    for round in 0..20u8 {
        prove(&mut w, 1..3);
        w.escrow.advance_epoch([round + 50; 32]);
        if w.escrow.deal(&id).expect("deal").slots[0].status
            == atlas_protocol::escrow::SlotStatus::Freed
        {
            break;
        }
    }
    let d = w.escrow.deal(&id).expect("deal").clone();
    assert_eq!(d.slots[0].failed_by, Some(w.pk(4)));
    assert_eq!(
        w.escrow.forfeited() - forfeited_before,
        locked,
        "the claimant's collateral went to nobody"
    );
    assert!(
        d.reserve <= reserve_before,
        "nothing was added to the creator's reserve"
    );
    // At the end the creator gets back its escrow and the reserve it deposited, not the
    // slashed collateral that swelled the reserve.
    assert!(
        d.reserve > d.reserve_deposit,
        "slashes went into the reserve"
    );
    let (escrow, deposit) = (d.escrow, d.reserve_deposit);
    let creator_before = w.escrow.account(&w.pk(0)).balance;
    w.submit(0, TxBody::CancelDeal { deal: id })
        .expect("cancel");
    w.escrow.advance_epoch([99; 32]);
    assert!(w.escrow.deal(&id).is_none(), "the cancelled deal ended");
    let refund = w.escrow.account(&w.pk(0)).balance - creator_before;
    assert_eq!(refund, escrow + deposit);
    assert_eq!(w.escrow.total_supply(), w.escrow.minted());
}

/// A provider that exits while missing proofs does not take its collateral with it; one that kept
/// proving through its notice gets it all back.
#[test]
fn exiting_does_not_escape_slashing() {
    let mut w = World::new();
    let id = open_accepted_deal(&mut w, 5, 40, |_| 16_384 * 10);
    let notice = w.escrow.params().exit_notice_epochs;
    assert!(notice > w.escrow.params().max_misses as u64);
    w.escrow.advance_epoch([1; 32]);
    w.submit(1, TxBody::ExitProvider)
        .expect("slot 0's holder exits");
    w.submit(2, TxBody::ExitProvider)
        .expect("slot 1's holder exits");
    let exit_epoch = w.escrow.epoch();
    let d = w.escrow.deal(&id).expect("deal").clone();
    // What each provider owns outside its slots (balance and pool), less what it was paid.
    let wealth = |w: &World, p: usize| {
        let paid = w.escrow.deal(&id).expect("deal").slots[p - 1].paid;
        w.escrow.account(&w.pk(p)).balance + w.escrow.provider(&w.pk(p)).map_or(0, |p| p.collateral)
            - paid
    };
    let before = (wealth(&w, 1), wealth(&w, 2));
    let mut round = 2u8;
    // The notice runs out at the boundary of epoch `exit_epoch + notice`.
    while w.escrow.epoch() <= exit_epoch + notice {
        let last = w.escrow.epoch() == exit_epoch + notice;
        // Slot 0's holder misses only the last epoch of its notice.
        prove(&mut w, if last { 1..2 } else { 0..2 });
        w.escrow.advance_epoch([round; 32]);
        round += 1;
    }
    let after = w.escrow.deal(&id).expect("deal");
    assert_eq!(
        after.slots[0].status,
        atlas_protocol::escrow::SlotStatus::Freed
    );
    assert_eq!(
        after.slots[1].status,
        atlas_protocol::escrow::SlotStatus::Freed
    );
    assert_eq!(
        after.slots[0].failed_by,
        Some(w.pk(1)),
        "a failing leaver is marked"
    );
    assert_eq!(
        wealth(&w, 2) - before.1,
        d.slots[1].collateral,
        "the leaver that kept proving got its slot's collateral back"
    );
    assert_eq!(
        wealth(&w, 1),
        before.0,
        "the leaver that missed got none of its slot's collateral back"
    );
    assert_eq!(w.escrow.total_supply(), w.escrow.minted());
}

/// The provider that failed a slot may not claim that slot back, but may repair another slot of
/// the same deal: excluding it from the whole deal let repeated outages on a small network use up
/// every spare, and freed slots then waited for ever.
#[test]
fn a_failed_holder_may_repair_another_slot_of_the_deal() {
    let mut w = World::new();
    let id = open_accepted_deal(&mut w, 6, 30, |_| 16_384 * 10);
    let max = w.escrow.params().max_misses;
    w.escrow.advance_epoch([1; 32]);
    // Slot 0's holder (key 1) stops proving and is freed.
    for round in 0..=max {
        prove(&mut w, 1..3);
        w.escrow.advance_epoch([round as u8 + 2; 32]);
    }
    let d = w.escrow.deal(&id).expect("deal");
    assert_eq!(d.slots[0].status, SlotStatus::Freed);
    assert_eq!(d.slots[0].failed_by, Some(w.pk(1)));
    let err = w
        .submit(1, TxBody::ClaimSlot { deal: id, slot: 0 })
        .expect_err("the failer claims its slot back");
    assert!(matches!(err, EscrowError::FailedThisSlot), "{err:?}");
    // Slot 1's holder hands its slot back; the provider that failed slot 0 may take it.
    w.submit(2, TxBody::ReleaseSlot { deal: id, slot: 1 })
        .expect("release");
    w.submit(1, TxBody::ClaimSlot { deal: id, slot: 1 })
        .expect("a failer of one slot may repair another");
    let d = w.escrow.deal(&id).expect("deal");
    assert_eq!(d.slots[1].holder, Some(w.pk(1)));
    // ...and the one that released slot 1 may not claim it back, but may claim slot 0.
    let err = w
        .submit(2, TxBody::ClaimSlot { deal: id, slot: 1 })
        .expect_err("slot 1 is taken");
    assert!(matches!(err, EscrowError::WrongSlotState(_)), "{err:?}");
    w.submit(2, TxBody::ClaimSlot { deal: id, slot: 0 })
        .expect("the releaser repairs slot 0");
    assert_eq!(w.escrow.total_supply(), w.escrow.minted());
}
