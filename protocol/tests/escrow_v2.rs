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
