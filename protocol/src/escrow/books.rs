//! A provider's books under the committed rules: the records kept per provider and epoch (its
//! commits, its good-epoch words, its rate changes, and what was audited), one small record each,
//! so that a commit writes one word and one commit record rather than the provider's history.
//!
//! All of them live in one map keyed by [`BookKey`], ordered by provider, then kind, then
//! generation and epoch, so the records of one provider and kind are one range.

use super::epochs::{EpochWord, WordMap, WordRead};
use super::state::Tracked;
use super::Amount;
use crate::commit::LeafKey;
use crate::id::DealId;
use crate::sign::PublicKey;
use serde::{Deserialize, Serialize};

/// What a book record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BookKind {
    /// An [`EpochWord`]; `epoch` is the word's index.
    Word,
    /// An [`EpochCommit`] for `epoch`.
    Commit,
    /// A rate change (`i128`) of `generation` at `epoch`.
    Rate,
    /// An [`Audit`] of `epoch`.
    Audit,
}

impl BookKind {
    /// Its byte in [`BookKey::to_bytes`], in the kinds' order.
    fn byte(self) -> u8 {
        match self {
            BookKind::Word => 1,
            BookKind::Commit => 2,
            BookKind::Rate => 3,
            BookKind::Audit => 4,
        }
    }
}

/// Where a book record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BookKey {
    pub provider: PublicKey,
    pub kind: BookKind,
    /// The provider generation a rate change belongs to; 0 for the other kinds.
    pub generation: u32,
    pub epoch: u64,
}

const BOOK_KEY_LEN: usize = 32 + 1 + 4 + 8;

impl BookKey {
    /// Length of [`BookKey::to_bytes`].
    pub const LEN: usize = BOOK_KEY_LEN;

    pub fn word(provider: PublicKey, k: u64) -> Self {
        Self {
            provider,
            kind: BookKind::Word,
            generation: 0,
            epoch: k,
        }
    }
    pub fn commit(provider: PublicKey, epoch: u64) -> Self {
        Self {
            provider,
            kind: BookKind::Commit,
            generation: 0,
            epoch,
        }
    }
    pub fn rate(provider: PublicKey, generation: u32, epoch: u64) -> Self {
        Self {
            provider,
            kind: BookKind::Rate,
            generation,
            epoch,
        }
    }
    pub fn audit(provider: PublicKey, epoch: u64) -> Self {
        Self {
            provider,
            kind: BookKind::Audit,
            generation: 0,
            epoch,
        }
    }

    /// Fixed-width big-endian bytes that sort as the key does: provider, kind, generation,
    /// epoch.
    pub fn to_bytes(&self) -> [u8; BOOK_KEY_LEN] {
        let mut b = [0u8; BOOK_KEY_LEN];
        b[..32].copy_from_slice(&self.provider.0);
        b[32] = self.kind.byte();
        b[33..37].copy_from_slice(&self.generation.to_be_bytes());
        b[37..].copy_from_slice(&self.epoch.to_be_bytes());
        b
    }

    /// The key [`BookKey::to_bytes`] wrote.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != BOOK_KEY_LEN {
            return None;
        }
        let kind = match b[32] {
            1 => BookKind::Word,
            2 => BookKind::Commit,
            3 => BookKind::Rate,
            4 => BookKind::Audit,
            _ => return None,
        };
        Some(Self {
            provider: PublicKey(b[..32].try_into().ok()?),
            kind,
            generation: u32::from_be_bytes(b[33..37].try_into().ok()?),
            epoch: u64::from_be_bytes(b[37..].try_into().ok()?),
        })
    }
}

/// What a provider committed to for one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochCommit {
    /// Root of the epoch's leaf tree ([`crate::commit::EpochTree`]).
    pub root: [u8; 32],
    /// Leaves under the root (the root does not bind their number).
    pub leaves: u32,
    /// `keccak(reveal)` of the RANDAO value the next commit must reveal.
    pub rand_commit: [u8; 32],
}

/// A demand that one sample be revealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenDemand {
    pub key: LeafKey,
    /// Who demanded, and gets its bond back with a reward if nobody reveals.
    pub by: PublicKey,
    /// The last epoch a reveal is accepted in.
    pub deadline: u64,
    pub bond: Amount,
}

/// What watchers and the rules found about one provider-epoch, kept until the epoch is final.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    /// A missed commit was marked (and slashed) for this epoch.
    pub marked: bool,
    /// Slots found faulty in this epoch, each punished once.
    pub faulted: Vec<(DealId, u16)>,
    /// Demands not yet answered or claimed.
    pub demands: Vec<OpenDemand>,
}

/// One record of a provider's books.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BookRecord {
    Word(EpochWord),
    Commit(EpochCommit),
    Rate(i128),
    Audit(Audit),
}

/// Every provider's books.
pub type Books = Tracked<BookKey, BookRecord>;

/// One provider's words, read from the books.
#[derive(Debug)]
pub struct Words<'a> {
    pub books: &'a Books,
    pub provider: PublicKey,
}

/// One provider's words, to change in the books.
#[derive(Debug)]
pub struct WordsMut<'a> {
    pub books: &'a mut Books,
    pub provider: PublicKey,
}

fn word_in(books: &Books, provider: PublicKey, k: u64) -> Option<EpochWord> {
    match books.get(&BookKey::word(provider, k)) {
        Some(BookRecord::Word(w)) => Some(*w),
        _ => None,
    }
}

fn last_below(books: &Books, provider: PublicKey, k: u64) -> Option<(u64, EpochWord)> {
    books
        .map()
        .range(BookKey::word(provider, 0)..BookKey::word(provider, k))
        .next_back()
        .and_then(|(key, r)| match r {
            BookRecord::Word(w) => Some((key.epoch, *w)),
            _ => None,
        })
}

fn above(books: &Books, provider: PublicKey, k: u64) -> Vec<u64> {
    if k == u64::MAX {
        return Vec::new();
    }
    books
        .map()
        .range(BookKey::word(provider, k + 1)..=BookKey::word(provider, u64::MAX))
        .map(|(key, _)| key.epoch)
        .collect()
}

impl WordRead for Words<'_> {
    fn word(&self, k: u64) -> Option<EpochWord> {
        word_in(self.books, self.provider, k)
    }
    fn last_word_below(&self, k: u64) -> Option<(u64, EpochWord)> {
        last_below(self.books, self.provider, k)
    }
    fn words_above(&self, k: u64) -> Vec<u64> {
        above(self.books, self.provider, k)
    }
}

impl WordRead for WordsMut<'_> {
    fn word(&self, k: u64) -> Option<EpochWord> {
        self.read().word(k)
    }
    fn last_word_below(&self, k: u64) -> Option<(u64, EpochWord)> {
        self.read().last_word_below(k)
    }
    fn words_above(&self, k: u64) -> Vec<u64> {
        self.read().words_above(k)
    }
}

impl WordsMut<'_> {
    fn read(&self) -> Words<'_> {
        Words {
            books: self.books,
            provider: self.provider,
        }
    }
}

impl WordMap for WordsMut<'_> {
    fn put_word(&mut self, k: u64, w: EpochWord) {
        self.books
            .insert(BookKey::word(self.provider, k), BookRecord::Word(w));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_bytes_sort_as_keys_and_round_trip() {
        let p = |b| PublicKey([b; 32]);
        let mut keys = vec![
            BookKey::rate(p(2), 1, 5),
            BookKey::word(p(1), 300),
            BookKey::audit(p(1), 0),
            BookKey::commit(p(1), u64::MAX),
            BookKey::rate(p(1), 0, 7),
            BookKey::rate(p(1), 0, 6),
            BookKey::word(p(1), 2),
        ];
        let mut by_bytes = keys.clone();
        keys.sort();
        by_bytes.sort_by_key(|k| k.to_bytes());
        assert_eq!(keys, by_bytes);
        for k in keys {
            assert_eq!(BookKey::from_bytes(&k.to_bytes()), Some(k));
        }
        assert_eq!(BookKey::from_bytes(&[0; 10]), None);
    }
}
