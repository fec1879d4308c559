//! How the escrow state is kept so that a block costs what it changes, not what the state holds.
//!
//! - [`Tracked`] is a map that remembers which keys changed since they were last taken.
//! - [`MapCommitment`] keeps a hash per record and per bucket of records (the first byte of the
//!   key picks one of 256 buckets), so the state root is recomputed only for changed buckets.
//! - [`Changes`] are the records a block changed, for a store to write and nothing more.
//!
//! The state root is `BLAKE3("atlas/state/v3" || meta || 256 account bucket hashes || 256
//! provider bucket hashes || 256 deal bucket hashes || 256 book bucket hashes)`. A bucket hash is `BLAKE3("atlas/bucket/v1"
//! || the leaf hashes of its records in key order)`, and a record's leaf is `BLAKE3(
//! "atlas/leaf/v1" || kind || key || postcard(record))`; a deal's record is its terms' digest
//! followed by its changing state (so the terms, which hold the manifest, are hashed once).

use super::books::{BookKey, BookRecord};
use super::{Account, Deal, DealTerms, Params, Provider};
use crate::id::DealId;
use crate::sign::PublicKey;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// A map that records every key changed (inserted, removed or handed out mutably).
#[derive(Clone)]
pub struct Tracked<K, V> {
    map: BTreeMap<K, V>,
    dirty: BTreeSet<K>,
    /// Keys changed since derived indices were last brought up to date.
    stale: BTreeSet<K>,
    /// While a transaction runs: each changed key's value before it (see [`Tracked::begin`]).
    journal: Option<BTreeMap<K, Option<V>>>,
}

impl<K, V> Default for Tracked<K, V> {
    fn default() -> Self {
        Self {
            map: BTreeMap::new(),
            dirty: BTreeSet::new(),
            stale: BTreeSet::new(),
            journal: None,
        }
    }
}

impl<K: std::fmt::Debug, V: std::fmt::Debug> std::fmt::Debug for Tracked<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.map.fmt(f)
    }
}

impl<K: PartialEq, V: PartialEq> PartialEq for Tracked<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl<K: Eq, V: Eq> Eq for Tracked<K, V> {}

impl<K: Ord + Copy, V: Clone> Tracked<K, V> {
    /// A map loaded from a store: nothing is dirty.
    pub fn from_map(map: BTreeMap<K, V>) -> Self {
        Self {
            map,
            dirty: BTreeSet::new(),
            stale: BTreeSet::new(),
            journal: None,
        }
    }

    /// Starts remembering what each change overwrites, so [`Tracked::rollback`] can undo them.
    pub fn begin(&mut self) {
        self.journal = Some(BTreeMap::new());
    }

    /// Keeps the changes since [`Tracked::begin`].
    pub fn end(&mut self) {
        self.journal = None;
    }

    /// Undoes every change since [`Tracked::begin`]. The keys stay marked changed: a store then
    /// rewrites them with the values they already had.
    pub fn rollback(&mut self) {
        for (k, old) in self.journal.take().unwrap_or_default() {
            match old {
                Some(v) => self.map.insert(k, v),
                None => self.map.remove(&k),
            };
        }
    }

    fn remember(&mut self, k: &K) {
        if let Some(j) = self.journal.as_mut() {
            if !j.contains_key(k) {
                j.insert(*k, self.map.get(k).cloned());
            }
        }
    }
    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }
    pub fn contains_key(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }
    fn touch(&mut self, k: K) {
        self.remember(&k);
        self.dirty.insert(k);
        self.stale.insert(k);
    }
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        if !self.map.contains_key(k) {
            return None;
        }
        self.remember(k);
        let v = self.map.get_mut(k)?;
        self.dirty.insert(*k);
        self.stale.insert(*k);
        Some(v)
    }
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        self.touch(k);
        self.map.insert(k, v)
    }
    pub fn remove(&mut self, k: &K) -> Option<V> {
        if !self.map.contains_key(k) {
            return None;
        }
        self.remember(k);
        let v = self.map.remove(k)?;
        self.dirty.insert(*k);
        self.stale.insert(*k);
        Some(v)
    }
    pub fn get_or_default(&mut self, k: K) -> &mut V
    where
        V: Default,
    {
        self.touch(k);
        self.map.entry(k).or_default()
    }
    pub fn map(&self) -> &BTreeMap<K, V> {
        &self.map
    }
    /// The keys changed since the last call.
    pub fn take_dirty(&mut self) -> BTreeSet<K> {
        std::mem::take(&mut self.dirty)
    }
    /// The keys changed since the last call, for derived indices (independent of
    /// [`Tracked::take_dirty`]).
    pub fn take_stale(&mut self) -> BTreeSet<K> {
        std::mem::take(&mut self.stale)
    }
}

/// A record key: its bytes name it in its leaf hash, and the first of them picks its bucket.
pub trait RecordKey: Ord + Copy {
    fn key_bytes(&self) -> impl AsRef<[u8]>;
    /// The smallest key in bucket `b`.
    fn bucket_start(b: u8) -> Self;
    fn bucket(&self) -> u8 {
        self.key_bytes().as_ref()[0]
    }
}

impl RecordKey for PublicKey {
    fn key_bytes(&self) -> impl AsRef<[u8]> {
        self.0
    }
    fn bucket_start(b: u8) -> Self {
        let mut k = [0u8; 32];
        k[0] = b;
        PublicKey(k)
    }
}

impl RecordKey for DealId {
    fn key_bytes(&self) -> impl AsRef<[u8]> {
        self.0
    }
    fn bucket_start(b: u8) -> Self {
        let mut k = [0u8; 32];
        k[0] = b;
        DealId(k)
    }
}

impl RecordKey for BookKey {
    fn key_bytes(&self) -> impl AsRef<[u8]> {
        self.to_bytes()
    }
    fn bucket_start(b: u8) -> Self {
        BookKey::word(PublicKey::bucket_start(b), 0)
    }
}

/// Leaf and bucket hashes of one map, kept up to date from its changed keys.
#[derive(Clone)]
pub struct MapCommitment<K> {
    leaves: BTreeMap<K, [u8; 32]>,
    buckets: Vec<[u8; 32]>,
}

impl<K> Default for MapCommitment<K> {
    fn default() -> Self {
        Self {
            leaves: BTreeMap::new(),
            buckets: Vec::new(),
        }
    }
}

impl<K> std::fmt::Debug for MapCommitment<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MapCommitment({} leaves)", self.leaves.len())
    }
}

fn leaf<K: RecordKey>(kind: u8, k: &K, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"atlas/leaf/v1\0");
    h.update(&[kind]);
    h.update(k.key_bytes().as_ref());
    for p in parts {
        h.update(p);
    }
    *h.finalize().as_bytes()
}

fn encode<V: Serialize + ?Sized>(v: &V) -> Vec<u8> {
    postcard::to_stdvec(v).expect("serializing to a Vec cannot fail")
}

/// A record's leaf hash.
fn record_leaf<K: RecordKey, V: Serialize>(kind: u8, k: &K, v: &V) -> [u8; 32] {
    leaf(kind, k, &[&encode(v)])
}

/// A deal's leaf: its terms' digest (computed once per deal) and its encoded changing state.
fn deal_leaf(
    k: &DealId,
    d: &Deal,
    state: &[u8],
    digests: &mut BTreeMap<DealId, [u8; 32]>,
) -> [u8; 32] {
    let digest = *digests.entry(*k).or_insert_with(|| d.terms.digest());
    leaf(b'd', k, &[&digest, state])
}

impl<K: RecordKey> MapCommitment<K> {
    /// Brings the hashes up to date with `map` after the keys in `dirty` changed (all of them
    /// the first time).
    pub fn update<V: Serialize>(&mut self, kind: u8, map: &BTreeMap<K, V>, dirty: &BTreeSet<K>) {
        self.update_with(map, dirty, |k, v| record_leaf(kind, k, v))
    }

    /// As [`MapCommitment::update`], with `leaf_of` giving a record's leaf hash.
    pub fn update_with<V>(
        &mut self,
        map: &BTreeMap<K, V>,
        dirty: &BTreeSet<K>,
        mut leaf_of: impl FnMut(&K, &V) -> [u8; 32],
    ) {
        let mut touched = BTreeSet::new();
        if self.buckets.is_empty() {
            self.leaves = map.iter().map(|(k, v)| (*k, leaf_of(k, v))).collect();
            self.buckets = vec![[0; 32]; 256];
            touched.extend(0..=255u8);
        } else {
            for k in dirty {
                match map.get(k) {
                    Some(v) => {
                        self.leaves.insert(*k, leaf_of(k, v));
                    }
                    None => {
                        self.leaves.remove(k);
                    }
                }
                touched.insert(k.bucket());
            }
        }
        for b in touched {
            let mut h = blake3::Hasher::new();
            h.update(b"atlas/bucket/v1\0");
            for (_, l) in self
                .leaves
                .range(K::bucket_start(b)..)
                .take_while(|(k, _)| k.bucket() == b)
            {
                h.update(l);
            }
            self.buckets[b as usize] = *h.finalize().as_bytes();
        }
    }

    fn buckets(&self) -> &[[u8; 32]] {
        &self.buckets
    }
}

/// The state's scalar part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub params: Params,
    pub chain: [u8; 32],
    pub epoch: u64,
    pub beacon: [u8; 32],
    /// Committed rules: the XOR of the current epoch's checked reveals.
    pub mix: [u8; 32],
    pub minted: u128,
    pub forfeited: u128,
}

/// The hashes behind the state root.
#[derive(Debug, Clone, Default)]
pub struct Commitment {
    pub accounts: MapCommitment<PublicKey>,
    pub providers: MapCommitment<PublicKey>,
    pub deals: MapCommitment<DealId>,
    pub books: MapCommitment<BookKey>,
    /// Each live deal's terms digest.
    terms: BTreeMap<DealId, [u8; 32]>,
}

impl Commitment {
    /// Brings the deal hashes up to date after the deals in `dirty` changed, and returns each
    /// changed deal's encoded state ([`Deal::encode_state`]; `None` where it was removed), the
    /// bytes that were hashed, for a store to write as they are.
    pub fn update_deals(
        &mut self,
        map: &BTreeMap<DealId, Deal>,
        dirty: &BTreeSet<DealId>,
    ) -> Vec<(DealId, Option<Vec<u8>>)> {
        let terms = &mut self.terms;
        let mut encoded = Vec::with_capacity(dirty.len());
        for k in dirty.iter().filter(|k| !map.contains_key(k)) {
            terms.remove(k);
            encoded.push((*k, None));
        }
        // The first time this visits every deal; after that the changed ones.
        self.deals.update_with(map, dirty, |k, d| {
            let state = d.encode_state();
            let leaf = deal_leaf(k, d, &state, terms);
            if dirty.contains(k) {
                encoded.push((*k, Some(state)));
            }
            leaf
        });
        encoded
    }

    pub fn root(&self, meta: &Meta) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"atlas/state/v3\0");
        h.update(&encode(meta));
        for buckets in [
            self.accounts.buckets(),
            self.providers.buckets(),
            self.deals.buckets(),
            self.books.buckets(),
        ] {
            for b in buckets {
                h.update(b);
            }
        }
        *h.finalize().as_bytes()
    }
}

/// What a block changed: the scalar part, and each changed record (`None` where it was removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub meta: Meta,
    pub accounts: Vec<(PublicKey, Option<Account>)>,
    pub providers: Vec<(PublicKey, Option<Provider>)>,
    /// Each changed deal's encoded state ([`Deal::encode_state`]), `None` where it left.
    pub deals: Vec<(DealId, Option<Vec<u8>>)>,
    /// Each changed record of the providers' books (committed rules).
    pub books: Vec<(BookKey, Option<BookRecord>)>,
    /// Deals opened by the block: their terms are new (a store writes terms once).
    pub opened: Vec<(DealId, std::sync::Arc<DealTerms>)>,
    /// Deals that ended and left the live state (also listed in `deals` as removed), in their
    /// final form, for a store's archive.
    pub ended: Vec<(DealId, Deal)>,
}
