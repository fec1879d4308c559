//! Which epochs a provider earned, and how fast it earns, kept so that paying it costs what
//! changed rather than how many slots or epochs it has.
//!
//! - **Good epochs** are bits in words of [`WORD_EPOCHS`] epochs: bit `e mod 224` of word
//!   `⌊e/224⌋` is set by the provider's commit for e and cleared by a fault on e. Each word also
//!   keeps `before`, the good epochs in all earlier words, so the good epochs in `[a, b)` cost two
//!   word reads whatever the distance ([`good`]). 224 bits and a 32-bit count fill one 256-bit
//!   storage word on a chain.
//! - **Rate changes** are per-epoch deltas of what the provider earns per good epoch: a slot
//!   accepted for `[from, end)` adds its price at `from` and takes it away at `end`. Paying walks
//!   the deltas between two epochs ([`pay_walk`]), not the epochs or the slots.

use super::Amount;
use serde::{Deserialize, Serialize};

/// Epochs per word.
pub const WORD_EPOCHS: u64 = 224;

/// One word of good-epoch bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochWord {
    /// Bit i (of 224; bit i of `bits[i / 64]`) is epoch `k·224 + i`.
    pub bits: [u64; 4],
    /// Good epochs in every earlier word.
    pub before: u32,
}

impl EpochWord {
    fn get(&self, i: u64) -> bool {
        self.bits[(i / 64) as usize] >> (i % 64) & 1 == 1
    }
    fn flip(&mut self, i: u64) {
        self.bits[(i / 64) as usize] ^= 1 << (i % 64);
    }
    /// Good epochs among the word's first `i`.
    fn count_below(&self, i: u64) -> u32 {
        let mut n = 0;
        for (w, bits) in self.bits.iter().enumerate() {
            let lo = w as u64 * 64;
            if i <= lo {
                break;
            }
            let take = (i - lo).min(64);
            let mask = if take == 64 {
                u64::MAX
            } else {
                (1 << take) - 1
            };
            n += (bits & mask).count_ones();
        }
        n
    }
    /// Good epochs in the word and every earlier one.
    fn through(&self) -> u32 {
        self.before + self.count_below(WORD_EPOCHS)
    }
}

/// Where one provider's words are read from: a map from word index to word.
pub trait WordRead {
    fn word(&self, k: u64) -> Option<EpochWord>;
    /// The word with the highest index below `k`, if any.
    fn last_word_below(&self, k: u64) -> Option<(u64, EpochWord)>;
    /// Indices of the words above `k`.
    fn words_above(&self, k: u64) -> Vec<u64>;
}

/// Where one provider's words are written.
pub trait WordMap: WordRead {
    fn put_word(&mut self, k: u64, w: EpochWord);
}

impl WordRead for std::collections::BTreeMap<u64, EpochWord> {
    fn word(&self, k: u64) -> Option<EpochWord> {
        self.get(&k).copied()
    }
    fn last_word_below(&self, k: u64) -> Option<(u64, EpochWord)> {
        self.range(..k).next_back().map(|(k, w)| (*k, *w))
    }
    fn words_above(&self, k: u64) -> Vec<u64> {
        self.range(k.saturating_add(1)..).map(|(k, _)| *k).collect()
    }
}

impl WordMap for std::collections::BTreeMap<u64, EpochWord> {
    fn put_word(&mut self, k: u64, w: EpochWord) {
        self.insert(k, w);
    }
}

fn split(e: u64) -> (u64, u64) {
    (e / WORD_EPOCHS, e % WORD_EPOCHS)
}

/// Whether epoch `e` is good.
pub fn is_good(m: &impl WordRead, e: u64) -> bool {
    let (k, i) = split(e);
    m.word(k).is_some_and(|w| w.get(i))
}

/// Good epochs before `e`.
pub fn cum(m: &impl WordRead, e: u64) -> u64 {
    let (k, i) = split(e);
    match m.word(k) {
        Some(w) => u64::from(w.before) + u64::from(w.count_below(i)),
        None => m
            .last_word_below(k)
            .map_or(0, |(_, w)| u64::from(w.through())),
    }
}

/// Good epochs in `[a, b)` (0 when `b ≤ a`).
pub fn good(m: &impl WordRead, a: u64, b: u64) -> u64 {
    if b <= a {
        return 0;
    }
    cum(m, b) - cum(m, a)
}

/// Marks `e` good; false if it already was.
pub fn mark_good(m: &mut impl WordMap, e: u64) -> bool {
    set_bit(m, e, true)
}

/// Marks `e` not good; false if it was not good.
pub fn mark_bad(m: &mut impl WordMap, e: u64) -> bool {
    set_bit(m, e, false)
}

fn set_bit(m: &mut impl WordMap, e: u64, good: bool) -> bool {
    let (k, i) = split(e);
    let mut w = match m.word(k) {
        Some(w) => w,
        None if !good => return false,
        None => EpochWord {
            bits: [0; 4],
            before: m.last_word_below(k).map_or(0, |(_, w)| w.through()),
        },
    };
    if w.get(i) == good {
        return false;
    }
    w.flip(i);
    m.put_word(k, w);
    // Later words count this epoch in `before`. The rules only change the current epoch or one
    // within the dispute window, so there is at most one such word in practice.
    for j in m.words_above(k) {
        let mut later = m.word(j).expect("words_above lists existing words");
        later.before = if good {
            later.before + 1
        } else {
            later.before - 1
        };
        m.put_word(j, later);
    }
    true
}

/// What paying one run of epochs came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    /// Earned over the run: each good epoch at the rate in force in it.
    pub pay: Amount,
    /// The rate in force after the run (deltas at epochs below its end applied).
    pub rate: Amount,
}

/// Pays epochs `[from, to)`: `rate` is the rate in force before `from` (every delta at an epoch
/// below `from` applied), and `deltas` are the rate changes at epochs in `[from, to)` in epoch
/// order; a delta at x applies from x on. Costs the number of deltas, not of epochs.
///
/// `None` if the deltas take the rate below zero or the pay overflows: the rules never build
/// such a schedule.
pub fn pay_walk(
    m: &impl WordRead,
    mut rate: Amount,
    from: u64,
    to: u64,
    deltas: impl IntoIterator<Item = (u64, i128)>,
) -> Option<Walk> {
    let mut pay: Amount = 0;
    let mut at = from;
    for (x, delta) in deltas {
        if x < at || x >= to {
            return None;
        }
        pay = pay.checked_add(rate.checked_mul(u128::from(good(m, at, x)))?)?;
        rate = rate.checked_add_signed(delta)?;
        at = x;
    }
    pay = pay.checked_add(rate.checked_mul(u128::from(good(m, at, to.max(at))))?)?;
    Some(Walk { pay, rate })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_fault_in_an_earlier_word_is_counted_in_the_next() {
        let mut m = BTreeMap::new();
        for e in 220..230 {
            assert!(mark_good(&mut m, e));
        }
        assert_eq!(good(&m, 0, 1_000), 10);
        assert!(mark_bad(&mut m, 221));
        assert!(!mark_bad(&mut m, 221));
        assert_eq!(good(&m, 225, 230), 5);
        assert_eq!(good(&m, 0, 230), 9);
        assert_eq!(cum(&m, 10_000), 9);
    }

    #[test]
    fn pay_walk_applies_each_delta_from_its_epoch() {
        let mut m = BTreeMap::new();
        for e in 0..10 {
            mark_good(&mut m, e);
        }
        mark_bad(&mut m, 5);
        // 3 from epoch 2, 4 more from 4, all 7 gone at 8.
        let w = pay_walk(&m, 0, 0, 10, [(2, 3), (4, 4), (8, -7)]).expect("a sane schedule");
        // Epochs 2,3 at 3; 4,6,7 at 7 (5 is bad); 8,9 at 0.
        assert_eq!(
            w,
            Walk {
                pay: 6 + 21,
                rate: 0
            }
        );
        assert_eq!(pay_walk(&m, 0, 0, 10, [(2, -1)]), None);
    }
}
