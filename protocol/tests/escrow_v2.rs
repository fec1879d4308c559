//! The committed rules' building blocks under random use: a collateral pool never creates or
//! strands a token whatever the order of locks, slashes and unlocks, and the good-epoch words and
//! rate walk pay exactly what counting epoch by epoch would.

use atlas_protocol::escrow::epochs::{self, EpochWord, WORD_EPOCHS};
use atlas_protocol::escrow::pool::Pool;
use atlas_protocol::escrow::Amount;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
enum PoolOp {
    Lock(Amount),
    Slash(u32),
    /// Unlock the n-th outstanding holding (modulo how many there are).
    Unlock(usize),
}

fn pool_op() -> impl Strategy<Value = PoolOp> {
    prop_oneof![
        4 => (1u128..=1_000_000_000).prop_map(PoolOp::Lock),
        2 => (0u32..=9_999).prop_map(PoolOp::Slash),
        3 => any::<usize>().prop_map(PoolOp::Unlock),
    ]
}

#[derive(Debug, Clone)]
enum WordOp {
    Good(u64),
    Bad(u64),
}

fn word_op(span: u64) -> impl Strategy<Value = WordOp> {
    prop_oneof![
        3 => (0..span).prop_map(WordOp::Good),
        1 => (0..span).prop_map(WordOp::Bad),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))), ..ProptestConfig::default() })]

    /// Every token locked comes back out, as a slash or as some holder's value, and no holder is
    /// ever worth more than is locked.
    #[test]
    fn a_pool_pays_out_exactly_what_went_in(ops in prop::collection::vec(pool_op(), 1..80)) {
        let mut pool = Pool::default();
        let mut held: Vec<u128> = Vec::new();
        let (mut locked_in, mut out): (Amount, Amount) = (0, 0);
        for op in ops {
            match op {
                PoolOp::Lock(a) => match pool.lock(a) {
                    Ok(shares) => {
                        prop_assert!(shares >= a, "shares never trade above one token");
                        held.push(shares);
                        locked_in += a;
                    }
                    Err(_) => {
                        // Only a pool slashed so far that the shares would not fit refuses.
                        let minted = a.checked_mul(pool.shares).map(|p| p / pool.locked);
                        prop_assert!(minted.is_none_or(|m| m > u128::MAX - pool.shares));
                    }
                },
                PoolOp::Slash(bps) => out += pool.slash(bps),
                PoolOp::Unlock(n) if !held.is_empty() => {
                    let shares = held.swap_remove(n % held.len());
                    out += pool.unlock(shares);
                }
                PoolOp::Unlock(_) => {}
            }
            let worth: Amount = held.iter().map(|s| pool.value(*s)).sum();
            prop_assert!(worth <= pool.locked, "holders worth {worth} of {}", pool.locked);
            prop_assert_eq!(locked_in, out + pool.locked);
            prop_assert_eq!(held.is_empty(), pool.shares == 0);
            prop_assert_eq!(pool.shares, held.iter().sum::<u128>());
        }
        for shares in held.drain(..) {
            out += pool.unlock(shares);
        }
        prop_assert_eq!(pool, Pool::default());
        prop_assert_eq!(locked_in, out);
    }

    /// After any pattern of commits and faults, the words count the good epochs in any range as
    /// a plain set of epochs does.
    #[test]
    fn good_epochs_match_a_naive_count(
        ops in prop::collection::vec(word_op(4 * WORD_EPOCHS), 1..200),
        ranges in prop::collection::vec((0..5 * WORD_EPOCHS, 0..5 * WORD_EPOCHS), 8),
    ) {
        let mut words: BTreeMap<u64, EpochWord> = BTreeMap::new();
        let mut model: BTreeSet<u64> = BTreeSet::new();
        for op in ops {
            match op {
                WordOp::Good(e) => prop_assert_eq!(epochs::mark_good(&mut words, e), model.insert(e)),
                WordOp::Bad(e) => prop_assert_eq!(epochs::mark_bad(&mut words, e), model.remove(&e)),
            }
        }
        for (a, b) in ranges {
            let naive = model.range(a..b.max(a)).count() as u64;
            prop_assert_eq!(epochs::good(&words, a, b), naive, "[{}, {})", a, b);
        }
        for e in 0..5 * WORD_EPOCHS {
            prop_assert_eq!(epochs::is_good(&words, e), model.contains(&e));
        }
    }

    /// Walking the rate changes pays what summing the rate over every good epoch pays, and the
    /// walk split at any epoch pays the same as in one go.
    #[test]
    fn the_rate_walk_pays_each_good_epoch_its_rate(
        good in prop::collection::btree_set(0..600u64, 0..400),
        tenures in prop::collection::vec((0..600u64, 1..300u64, 1..1_000u128), 0..20),
        split in 0..600u64,
    ) {
        let mut words = BTreeMap::new();
        for e in &good {
            epochs::mark_good(&mut words, *e);
        }
        let mut deltas: BTreeMap<u64, i128> = BTreeMap::new();
        let mut naive: Amount = 0;
        for (from, len, price) in &tenures {
            let end = (from + len).min(600);
            *deltas.entry(*from).or_default() += *price as i128;
            *deltas.entry(end).or_default() -= *price as i128;
            naive += price * good.range(from..&end).count() as u128;
        }
        let all: Vec<(u64, i128)> = deltas.iter().filter(|(x, _)| **x < 600).map(|(x, d)| (*x, *d)).collect();
        let whole = epochs::pay_walk(&words, 0, 0, 600, all.iter().copied()).expect("a sane schedule");
        prop_assert_eq!(whole.pay, naive);
        let (left, right): (Vec<_>, Vec<_>) = all.iter().partition(|(x, _)| *x < split);
        let first = epochs::pay_walk(&words, 0, 0, split, left).expect("a sane schedule");
        let second = epochs::pay_walk(&words, first.rate, split, 600, right).expect("a sane schedule");
        prop_assert_eq!(first.pay + second.pay, naive);
        prop_assert_eq!(second.rate, whole.rate);
    }
}

/// A devnet-sized ledger under the committed rules, driven through signed transactions.
mod ledger {
    use atlas_protocol::escrow::{
        Amount, Escrow, EscrowError, Params, RulesVersion, SlotStatus, Tx, TxBody,
    };
    use atlas_protocol::layout::{Layout, ENCODING_RS_GF8_V1};
    use atlas_protocol::manifest::{Manifest, SignedManifest, MANIFEST_VERSION};
    use atlas_protocol::tree::Outboard;
    use atlas_protocol::{DealId, Keypair, PublicKey};

    const SLOT: u64 = 64 * 1024;

    pub struct Ledger {
        pub keys: Vec<Keypair>,
        pub escrow: Escrow,
    }

    impl Ledger {
        pub fn new() -> Self {
            let params = Params {
                faucet_cap: Some(10_000_000),
                rules: RulesVersion::Committed,
                ..Params::default()
            };
            Self {
                keys: (0..6u8)
                    .map(|i| Keypair::from_secret([i + 1; 32]))
                    .collect(),
                escrow: Escrow::new(params, [7; 32]),
            }
        }

        pub fn pk(&self, i: usize) -> PublicKey {
            self.keys[i].public()
        }

        /// Applies a transaction signed by key `who`; a refusal must leave the state as it was.
        pub fn submit(&mut self, who: usize, body: TxBody) -> Result<(), EscrowError> {
            let key = &self.keys[who];
            let tx = Tx {
                chain: *self.escrow.chain(),
                signer: key.public(),
                nonce: self.escrow.account(&key.public()).nonce,
                body,
            };
            let verified = tx.sign(key).expect("own key").verify().expect("verifies");
            let before = self.escrow.clone();
            let r = self.escrow.apply(&verified);
            if r.is_err() {
                assert!(self.escrow == before, "a refusal changed the state");
            }
            assert_eq!(
                self.escrow.total_supply(),
                self.escrow.minted(),
                "tokens conserved"
            );
            r
        }

        pub fn balance(&self, i: usize) -> Amount {
            self.escrow.account(&self.pk(i)).balance
        }

        /// Commits for the current epoch as provider `who` (the tree's contents are the
        /// watchers' business; the ledger records the root).
        pub fn commit(&mut self, who: usize) -> Result<(), EscrowError> {
            let epoch = self.escrow.epoch();
            let (reveal, next) = (reveal(who, epoch), reveal(who, epoch + 1));
            self.submit(
                who,
                TxBody::Commit {
                    epoch,
                    root: [who as u8; 32],
                    leaves: 16,
                    reveal,
                    next: atlas_protocol::beacon::reveal_commitment(&next),
                },
            )
        }

        pub fn advance(&mut self) {
            let e = self.escrow.epoch();
            self.escrow.advance_epoch([e as u8; 32]);
        }

        /// Key 0 funds and opens a deal for `epochs` with providers 1..=3, who register (once)
        /// and accept. Price: 1, 2 and 3 per epoch.
        pub fn open_accepted(&mut self, epochs: u64) -> DealId {
            self.submit(0, TxBody::Faucet { amount: 1_000_000 })
                .expect("faucet");
            for p in 1..=3 {
                if self.escrow.provider(&self.pk(p)).is_none() {
                    self.submit(p, TxBody::Faucet { amount: 1_000_000 })
                        .expect("faucet");
                    self.submit(
                        p,
                        TxBody::RegisterProvider {
                            peer_id: self.pk(p).peer_id_bytes(),
                            addrs: vec![],
                            capacity: 1 << 30,
                            price: 16_384 * p as Amount,
                            collateral: 500_000,
                        },
                    )
                    .expect("register");
                }
            }
            let nonce = self.escrow.account(&self.pk(0)).nonce;
            let manifest = self.object(nonce as u8);
            let providers = (1..=3).map(|p| self.pk(p)).collect();
            self.submit(
                0,
                TxBody::OpenDeal {
                    manifest,
                    providers,
                    epochs,
                    max_price: Amount::MAX,
                },
            )
            .expect("open");
            let id = Escrow::deal_id(&self.pk(0), nonce);
            for slot in 0..3u16 {
                self.submit(slot as usize + 1, TxBody::AcceptSlot { deal: id, slot })
                    .expect("accept");
            }
            id
        }

        fn object(&self, seed: u8) -> SignedManifest {
            let layout = Layout::new(2, 1, SLOT, 100_000).expect("valid");
            let roots = (0..3u8)
                .map(|j| {
                    let mut v = vec![0u8; SLOT as usize];
                    blake3::Hasher::new()
                        .update(&[seed, j])
                        .finalize_xof()
                        .fill(&mut v);
                    *Outboard::from_slot(&v)
                        .expect("valid slot")
                        .root()
                        .as_bytes()
                })
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
                slot_roots: roots,
                creator: self.pk(0),
                created_at: 0,
            };
            manifest
                .sign(&self.keys[0])
                .expect("signs")
                .signed()
                .clone()
        }

        pub fn slot_status(&self, id: &DealId, slot: u16) -> SlotStatus {
            self.escrow.deal(id).expect("live").slots[slot as usize].status
        }
    }

    fn reveal(who: usize, epoch: u64) -> [u8; 32] {
        atlas_protocol::beacon::reveal(&[who as u8; 32], &[0; 32], epoch)
    }
}

use atlas_protocol::escrow::{EscrowError, SlotStatus, TxBody};
use ledger::Ledger;

/// Three holders commit every epoch of a 6-epoch deal; once the epochs are final, settling each
/// pays it exactly its price per epoch, and finalizing credits the slot with the same; nothing
/// is created or lost.
#[test]
fn committed_holders_are_paid_exactly_per_final_good_epoch() {
    let mut l = Ledger::new();
    let id = l.open_accepted(6);
    let before: Vec<Amount> = (1..=3).map(|p| l.balance(p)).collect();
    l.advance(); // tenures start in epoch 1
    for _ in 0..6 {
        for p in 1..=3 {
            l.commit(p).expect("a provider's one commit per epoch");
        }
        assert_eq!(
            l.commit(1),
            Err(EscrowError::AlreadyCommitted(l.escrow.epoch()))
        );
        l.advance();
    }
    // Epoch 7: the deal's last paid epoch (6) is not final yet.
    let up_to = 7;
    assert!(matches!(
        l.submit(
            4,
            TxBody::SettleProvider {
                provider: l.pk(1),
                up_to
            }
        ),
        Err(EscrowError::NotFinal { .. })
    ));
    let window = l.escrow.params().dispute_epochs + l.escrow.params().reveal_epochs;
    for _ in 0..window {
        l.advance();
    }
    for p in 1..=3 {
        // Anyone may settle a provider; it is paid, not the caller.
        l.submit(
            4,
            TxBody::SettleProvider {
                provider: l.pk(p),
                up_to,
            },
        )
        .expect("final epochs settle");
        assert_eq!(l.balance(p) - before[p - 1], 6 * p as Amount, "holder {p}");
    }
    assert_eq!(l.balance(4), 0);
    for slot in 0..3u16 {
        l.submit(4, TxBody::FinalizeSlot { deal: id, slot })
            .expect("finalizes");
        let s = &l.escrow.deal(&id).expect("live until closed").slots[slot as usize];
        assert_eq!(s.status, SlotStatus::Ended);
        assert_eq!((s.paid, s.total_misses), (6 * (slot as Amount + 1), 0));
        assert!(s.closing.is_empty());
    }
    for p in 1..=3 {
        let prov = l.escrow.provider(&l.pk(p)).expect("registered");
        assert_eq!((prov.streamed, prov.tenures, prov.stake.locked), (0, 0, 0));
        assert_eq!(prov.used, 0);
    }
    assert_eq!(l.escrow.total_supply(), l.escrow.minted());
}

/// A holder that stops committing is marked missed, slashed by anyone who notices, paid only
/// for the epochs it committed, and after `max_misses` in a row loses the slot and the rest of
/// its collateral; the epochs it missed are refunded to the deal.
#[test]
fn a_silent_holder_is_slashed_then_failed_and_paid_only_for_its_commits() {
    let mut l = Ledger::new();
    let id = l.open_accepted(20);
    let before = l.balance(1);
    l.advance();
    // Two good epochs (1, 2), then silence from provider 1 in epochs 3, 4, 5.
    for _ in 0..2 {
        for p in 1..=3 {
            l.commit(p).expect("commit");
        }
        l.advance();
    }
    let locked = l
        .escrow
        .provider(&l.pk(1))
        .expect("registered")
        .stake
        .locked;
    for missed in 3..6u64 {
        for p in 2..=3 {
            l.commit(p).expect("commit");
        }
        l.advance();
        // Not for an epoch it committed, nor for one it owed nothing in, nor twice.
        assert_eq!(
            l.submit(
                4,
                TxBody::MarkMissed {
                    provider: l.pk(2),
                    epoch: missed,
                    deal: id,
                    slot: 1
                }
            ),
            Err(EscrowError::NotMissed(missed))
        );
        assert_eq!(
            l.submit(
                4,
                TxBody::MarkMissed {
                    provider: l.pk(1),
                    epoch: missed,
                    deal: id,
                    slot: 2
                }
            ),
            Err(EscrowError::NotDue(missed))
        );
        l.submit(
            4,
            TxBody::MarkMissed {
                provider: l.pk(1),
                epoch: missed,
                deal: id,
                slot: 0,
            },
        )
        .expect("a missed commit is marked");
        assert_eq!(
            l.submit(
                4,
                TxBody::MarkMissed {
                    provider: l.pk(1),
                    epoch: missed,
                    deal: id,
                    slot: 0
                }
            ),
            Err(EscrowError::AlreadyMarked(missed))
        );
    }
    let p1 = l.escrow.provider(&l.pk(1)).expect("still registered");
    assert_eq!(
        p1.stake.locked, 0,
        "the failed generation's collateral is gone"
    );
    assert!(locked > 0 && l.balance(4) > 0, "the reporter was rewarded");
    // Epoch 6: the failed tenure closes at the failure (epoch 6), the slot is freed for repair.
    l.submit(4, TxBody::FinalizeSlot { deal: id, slot: 0 })
        .expect("normalizes");
    assert_eq!(l.slot_status(&id, 0), SlotStatus::Freed);
    let window = l.escrow.params().dispute_epochs + l.escrow.params().reveal_epochs;
    for _ in 0..=window {
        l.advance();
    }
    l.submit(
        4,
        TxBody::SettleProvider {
            provider: l.pk(1),
            up_to: 6,
        },
    )
    .expect("settles");
    assert_eq!(
        l.balance(1) - before,
        2,
        "paid for epochs 1 and 2 at price 1"
    );
    l.submit(4, TxBody::FinalizeSlot { deal: id, slot: 0 })
        .expect("finalizes");
    let s = &l.escrow.deal(&id).expect("live").slots[0];
    assert_eq!((s.paid, s.total_misses), (2, 3));
    assert_eq!(s.failed_by, Some(l.pk(1)));
    assert_eq!(l.escrow.provider(&l.pk(1)).expect("registered").streamed, 0);
    assert_eq!(l.escrow.total_supply(), l.escrow.minted());
}

/// The whole life of a deal under the committed rules: a holder fails, a repairer claims,
/// accepts, proves and takes its bounty; another holder releases; the creator cancels; the deal
/// closes and everyone leaves with what the rules owe them.
#[test]
fn a_deal_is_repaired_cancelled_and_closed_under_the_committed_rules() {
    let mut l = Ledger::new();
    let id = l.open_accepted(30);
    // Provider 4 registers as a spare.
    l.submit(4, TxBody::Faucet { amount: 1_000_000 })
        .expect("faucet");
    l.submit(
        4,
        TxBody::RegisterProvider {
            peer_id: l.pk(4).peer_id_bytes(),
            addrs: vec![],
            capacity: 1 << 30,
            price: 0,
            collateral: 500_000,
        },
    )
    .expect("register");
    l.advance();
    // Provider 1 never commits; providers 2 and 3 always do.
    for e in 1..4u64 {
        for p in 2..=3 {
            l.commit(p).expect("commit");
        }
        l.advance();
        l.submit(
            5,
            TxBody::MarkMissed {
                provider: l.pk(1),
                epoch: e,
                deal: id,
                slot: 0,
            },
        )
        .expect("marked");
    }
    // A claim of a slot still held is refused; of the failed one, accepted.
    assert!(matches!(
        l.submit(4, TxBody::ClaimSlot { deal: id, slot: 1 }),
        Err(EscrowError::WrongSlotState(_))
    ));
    assert_eq!(
        l.submit(1, TxBody::ClaimSlot { deal: id, slot: 0 }),
        Err(EscrowError::FailedThisSlot)
    );
    l.submit(4, TxBody::ClaimSlot { deal: id, slot: 0 })
        .expect("repair claim");
    l.submit(4, TxBody::AcceptSlot { deal: id, slot: 0 })
        .expect("rebuilt and accepted");
    assert_eq!(
        l.submit(4, TxBody::ClaimBounty { deal: id, slot: 0 }),
        Err(EscrowError::NoBounty)
    );
    // Provider 3 finds its copy damaged and releases its slot.
    l.submit(3, TxBody::ReleaseSlot { deal: id, slot: 2 })
        .expect("released");
    assert_eq!(l.slot_status(&id, 2), SlotStatus::Freed);
    let window = l.escrow.params().dispute_epochs + l.escrow.params().reveal_epochs;
    for _ in 0..window + 2 {
        for p in [2, 4] {
            l.commit(p).expect("commit");
        }
        l.advance();
    }
    let bal = l.balance(4);
    l.submit(4, TxBody::ClaimBounty { deal: id, slot: 0 })
        .expect("bounty after a final good epoch");
    // Bounty: 2 epochs of the slot's price (1).
    assert_eq!(l.balance(4) - bal, 2);
    assert_eq!(
        l.submit(4, TxBody::ClaimBounty { deal: id, slot: 0 }),
        Err(EscrowError::NoBounty)
    );
    // The creator cancels: the deal ends after this epoch.
    assert_eq!(
        l.submit(2, TxBody::CancelDeal { deal: id }),
        Err(EscrowError::NotCreator)
    );
    l.submit(0, TxBody::CancelDeal { deal: id })
        .expect("cancelled");
    let end = l.escrow.deal(&id).expect("live").end_epoch;
    assert_eq!(end, l.escrow.epoch() + 1);
    for p in [2, 4] {
        l.commit(p).expect("commit");
    }
    l.advance();
    assert!(matches!(
        l.submit(5, TxBody::CloseDeal { deal: id }),
        Err(EscrowError::NotFinal { .. })
    ));
    for _ in 0..window {
        l.advance();
    }
    let creator = l.balance(0);
    l.submit(5, TxBody::CloseDeal { deal: id })
        .expect("closes once final");
    assert!(
        l.escrow.deal(&id).is_none(),
        "a closed deal leaves the live state"
    );
    assert!(
        l.balance(0) > creator,
        "the creator got the unearned escrow back"
    );
    for p in 1..=4 {
        let up_to = l.escrow.epoch() - window;
        l.submit(
            5,
            TxBody::SettleProvider {
                provider: l.pk(p),
                up_to,
            },
        )
        .expect("settles");
        let prov = l.escrow.provider(&l.pk(p)).expect("registered");
        assert_eq!(
            (prov.streamed, prov.tenures, prov.stake.shares),
            (0, 0, 0),
            "provider {p}"
        );
        assert_eq!(prov.used, 0, "provider {p}");
    }
    // Provider 2 leaves and takes everything back once its handover is final.
    l.submit(2, TxBody::ExitProvider).expect("exit");
    assert_eq!(
        l.submit(2, TxBody::CompleteExit)
            .map_err(|e| matches!(e, EscrowError::NotFinal { .. })),
        Err(true)
    );
    let notice = l.escrow.params().exit_notice_epochs;
    for _ in 0..notice + window + 1 {
        l.advance();
    }
    let up_to = l.escrow.epoch() - window;
    l.submit(
        5,
        TxBody::SettleProvider {
            provider: l.pk(2),
            up_to,
        },
    )
    .expect("settles");
    let pool = l.escrow.provider(&l.pk(2)).expect("registered").collateral;
    let bal = l.balance(2);
    l.submit(2, TxBody::CompleteExit).expect("exits");
    assert_eq!(l.balance(2) - bal, pool);
    assert!(l.escrow.provider(&l.pk(2)).is_none());
}
