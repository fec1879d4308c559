//! The escrow: Atlas's settlement rules as a deterministic state machine.
//!
//! Same transactions and epoch boundaries in, same state out, so the rules can be hosted by the
//! embedded ledger or anything else. [`Escrow::apply`] executes one verified transaction atomically: it
//! either changes the state as the transaction says or returns an error and changes nothing.
//! [`Escrow::advance_epoch`] settles the epoch that is ending (pay proven slots, slash and count
//! misses, free slots, end deals) and starts the next one with its beacon.
//!
//! Money is conserved: only `Faucet` mints, and every other movement is between an account balance, a
//! provider's collateral pool, a slot's locked collateral, a deal's escrow and a deal's repair reserve.
//! [`Escrow::total_supply`] adds all of them up; it always equals [`Escrow::minted`].
//!
//! By concept: `types` (the records: parameters, accounts, providers, deals, slots, events),
//! `error` (why a transaction is refused), `rules` (what each transaction does), `settlement`
//! (the epoch boundary), `index` (derived look-ups over live deals), `state` (change tracking and
//! the incremental state root), `tx` (signed transactions), and for the committed rules `pool`
//! (a provider's locked collateral as shares) and `epochs` (good-epoch words and rate changes);
//! this file holds the state and its accessors.

pub mod books;
mod committed;
pub mod epochs;
mod error;
mod index;
pub mod pool;
mod rules;
mod settlement;
pub mod state;
pub mod tx;
mod types;

use crate::challenge::{Challenge, StorageProof};
use crate::id::{DealId, ObjectId};
use crate::manifest::SignedManifest;
use crate::sign::PublicKey;
use crate::tree::TreeShape;
use error::check_addrs;
pub use error::EscrowError;
pub use index::DealIndex;
use index::{listed, Indices};
use serde::{Deserialize, Serialize};
use state::Tracked;
use std::collections::{BTreeMap, BTreeSet};
pub use tx::{Amount, ChainId, SignedTx, Tx, TxBody, TxError};
pub use types::*;

/// Most addresses a provider may register.
pub const MAX_PROVIDER_ADDRS: usize = 8;
/// Longest registered address, in bytes.
pub const MAX_ADDR_LEN: usize = 128;

const GIB: u128 = 1 << 30;
const BPS: u128 = 10_000;

/// The whole settlement state.
///
/// Its records (accounts, providers, deals) are [`state::Tracked`], so [`Escrow::take_changes`]
/// hands a store only what changed and the state root is recomputed only for changed buckets.
#[derive(Debug, Clone)]
pub struct Escrow {
    params: Params,
    /// Which chain this is: what every transaction must name.
    chain: ChainId,
    epoch: u64,
    beacon: [u8; 32],
    /// Committed rules: the XOR of this epoch's checked reveals, mixed into the next beacon.
    mix: [u8; 32],
    minted: Amount,
    accounts: Tracked<PublicKey, Account>,
    providers: Tracked<PublicKey, Provider>,
    deals: Tracked<DealId, Deal>,
    /// The providers' books (committed rules): commits, good-epoch words, rate changes, audits.
    books: books::Books,
    /// The live deals of each object, for rules that hold per object rather than per deal.
    /// Derived from `deals` (rebuilt on load), so not part of the state root.
    objects: BTreeMap<ObjectId, BTreeSet<DealId>>,
    /// Who holds what, by creator and which deals have a freed slot: derived like `objects`,
    /// brought up to date from the deals changed since (see [`Escrow::refresh_indices`]).
    indices: Indices,
    /// Terms of the deals opened since the last [`Escrow::take_changes`].
    opened: Vec<(DealId, std::sync::Arc<DealTerms>)>,
    /// Deals that ended since the last [`Escrow::take_changes`]; they are no longer in `deals`.
    ended: Vec<(DealId, Deal)>,
    /// Collateral forfeited by claims never delivered. It goes to nobody: a deal's reserve is
    /// refunded to its creator, who could otherwise bait claimants with a slot nobody can rebuild.
    forfeited: Amount,
    /// Leaf and bucket hashes behind the state root; a cache, not state.
    commitment: state::Commitment,
}

impl PartialEq for Escrow {
    fn eq(&self, other: &Self) -> bool {
        self.meta() == other.meta()
            && self.accounts == other.accounts
            && self.providers == other.providers
            && self.deals == other.deals
            && self.books == other.books
    }
}

impl Eq for Escrow {}

fn ceil_div(a: u128, b: u128) -> u128 {
    a.div_ceil(b)
}

fn bps(amount: Amount, bps: u32) -> Amount {
    amount.saturating_mul(bps as u128) / BPS
}

impl Escrow {
    /// The state at genesis: epoch 0 with `beacon`.
    pub fn new(params: Params, beacon: [u8; 32]) -> Self {
        let chain = Self::chain_id(&params, &beacon);
        Self {
            params,
            chain,
            epoch: 0,
            beacon,
            mix: [0; 32],
            minted: 0,
            accounts: Tracked::default(),
            providers: Tracked::default(),
            deals: Tracked::default(),
            books: Tracked::default(),
            objects: BTreeMap::new(),
            indices: Indices::default(),
            opened: Vec::new(),
            ended: Vec::new(),
            forfeited: 0,
            commitment: state::Commitment::default(),
        }
    }

    /// A state loaded from a store's records.
    pub fn from_parts(
        meta: state::Meta,
        accounts: BTreeMap<PublicKey, Account>,
        providers: BTreeMap<PublicKey, Provider>,
        deals: BTreeMap<DealId, Deal>,
        books: BTreeMap<books::BookKey, books::BookRecord>,
    ) -> Self {
        let mut objects: BTreeMap<ObjectId, BTreeSet<DealId>> = BTreeMap::new();
        let mut indices = Indices::default();
        for (id, d) in deals.iter().filter(|(_, d)| !d.ended) {
            objects.entry(d.terms.object).or_default().insert(*id);
            indices.insert(*id, d);
        }
        Self {
            params: meta.params,
            chain: meta.chain,
            epoch: meta.epoch,
            beacon: meta.beacon,
            mix: meta.mix,
            minted: meta.minted,
            accounts: Tracked::from_map(accounts),
            providers: Tracked::from_map(providers),
            deals: Tracked::from_map(deals),
            books: Tracked::from_map(books),
            objects,
            indices,
            opened: Vec::new(),
            ended: Vec::new(),
            forfeited: meta.forfeited,
            commitment: state::Commitment::default(),
        }
    }

    /// The state's scalar part.
    pub fn meta(&self) -> state::Meta {
        state::Meta {
            params: self.params.clone(),
            chain: self.chain,
            epoch: self.epoch,
            beacon: self.beacon,
            mix: self.mix,
            minted: self.minted,
            forfeited: self.forfeited,
        }
    }

    /// The state root after everything applied so far, and the records changed since the last
    /// call (what a store must write). The first call after [`Escrow::new`] or
    /// [`Escrow::from_parts`] hashes every record once; after that only what changed.
    pub fn take_changes(&mut self) -> ([u8; 32], state::Changes) {
        let (a, p, d, b) = (
            self.accounts.take_dirty(),
            self.providers.take_dirty(),
            self.deals.take_dirty(),
            self.books.take_dirty(),
        );
        self.commitment.books.update(b'b', self.books.map(), &b);
        self.commitment
            .accounts
            .update(b'a', self.accounts.map(), &a);
        self.commitment
            .providers
            .update(b'p', self.providers.map(), &p);
        let deals = self.commitment.update_deals(self.deals.map(), &d);
        self.refresh_indices();
        let meta = self.meta();
        let root = self.commitment.root(&meta);
        let changes = state::Changes {
            accounts: a
                .into_iter()
                .map(|k| (k, self.accounts.get(&k).cloned()))
                .collect(),
            providers: p
                .into_iter()
                .map(|k| (k, self.providers.get(&k).cloned()))
                .collect(),
            deals,
            books: b
                .into_iter()
                .map(|k| (k, self.books.get(&k).cloned()))
                .collect(),
            opened: std::mem::take(&mut self.opened),
            ended: std::mem::take(&mut self.ended),
            meta,
        };
        (root, changes)
    }

    /// Brings the derived look-ups up to date with the deals changed since the last call.
    fn refresh_indices(&mut self) {
        for id in self.deals.take_stale() {
            let d = self.deals.get(&id);
            if d.is_some_and(|d| self.indices.is_current(&id, d)) {
                continue;
            }
            self.indices.remove(&id);
            if let Some(d) = d {
                self.indices.insert(id, d);
            }
        }
    }

    /// The live deals `index` lists, in id order after `after`, from the derived indices (so
    /// the cost is what is listed, not the state).
    pub fn indexed_deals(
        &mut self,
        index: DealIndex,
        after: Option<DealId>,
    ) -> impl Iterator<Item = (&DealId, &Deal)> {
        self.refresh_indices();
        let set = match index {
            DealIndex::HeldBy(p) => self.indices.by_holder.get(&p),
            DealIndex::OfCreator(c) => self.indices.by_creator.get(&c),
            DealIndex::Repairable => Some(&self.indices.repairable),
        };
        listed(&self.deals, set, after)
    }

    /// The id of the chain whose genesis has these rules and this beacon.
    pub fn chain_id(params: &Params, genesis_beacon: &[u8; 32]) -> ChainId {
        let mut h = blake3::Hasher::new();
        h.update(b"atlas/chain/v1\0");
        h.update(&postcard::to_stdvec(params).expect("serializing to a Vec cannot fail"));
        h.update(genesis_beacon);
        *h.finalize().as_bytes()
    }

    /// This chain's id.
    pub fn chain(&self) -> &ChainId {
        &self.chain
    }

    /// Collateral forfeited by undelivered claims (held by nobody, counted in the supply).
    pub fn forfeited(&self) -> Amount {
        self.forfeited
    }

    /// Live deals of `object`.
    pub fn deals_of_object(&self, object: &ObjectId) -> impl Iterator<Item = (&DealId, &Deal)> {
        self.objects
            .get(object)
            .into_iter()
            .flatten()
            .filter_map(|id| self.deals.get(id).map(|d| (id, d)))
    }

    /// Whether `provider` holds (or is assigned) a slot of `object` in any live deal.
    pub fn holds_object(&self, provider: &PublicKey, object: &ObjectId) -> bool {
        self.deals_of_object(object)
            .any(|(_, d)| d.slots.iter().any(|s| s.holder == Some(*provider)))
    }

    pub fn params(&self) -> &Params {
        &self.params
    }
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    pub fn beacon(&self) -> &[u8; 32] {
        &self.beacon
    }
    pub fn minted(&self) -> Amount {
        self.minted
    }
    pub fn account(&self, key: &PublicKey) -> Account {
        self.accounts.get(key).cloned().unwrap_or_default()
    }
    pub fn accounts(&self) -> &BTreeMap<PublicKey, Account> {
        self.accounts.map()
    }
    pub fn provider(&self, key: &PublicKey) -> Option<&Provider> {
        self.providers.get(key)
    }
    pub fn providers(&self) -> &BTreeMap<PublicKey, Provider> {
        self.providers.map()
    }
    pub fn deal(&self, id: &DealId) -> Option<&Deal> {
        self.deals.get(id)
    }
    pub fn deals(&self) -> &BTreeMap<DealId, Deal> {
        self.deals.map()
    }
    /// The providers' books (committed rules).
    pub fn books(&self) -> &BTreeMap<books::BookKey, books::BookRecord> {
        self.books.map()
    }

    /// The state root block headers commit to (see [`state`]); forgets which records changed.
    pub fn state_root(&mut self) -> [u8; 32] {
        self.take_changes().0
    }

    /// Every token in existence, wherever it sits. Equals [`Escrow::minted`].
    pub fn total_supply(&self) -> Amount {
        let balances: Amount = self.accounts.map().values().map(|a| a.balance).sum();
        let pools: Amount = self
            .providers
            .map()
            .values()
            .map(|p| p.collateral + p.stake.locked + p.streamed)
            .sum();
        let bonds: Amount = self
            .books
            .map()
            .values()
            .map(|r| match r {
                books::BookRecord::Audit(a) => a.demands.iter().map(|d| d.bond).sum(),
                _ => 0,
            })
            .sum();
        let deals: Amount = self
            .deals
            .map()
            .values()
            .map(|d| d.escrow + d.reserve + d.slots.iter().map(|s| s.collateral).sum::<Amount>())
            .sum();
        balances + pools + deals + bonds + self.forfeited
    }

    /// The id a deal opened by `creator` with `nonce` gets.
    pub fn deal_id(creator: &PublicKey, nonce: u64) -> DealId {
        let mut h = blake3::Hasher::new();
        h.update(b"atlas/deal/v1\0");
        h.update(&creator.0);
        h.update(&nonce.to_be_bytes());
        DealId(*h.finalize().as_bytes())
    }

    /// A slot's price per epoch from a provider's price per GiB-epoch (rounded up, at least 1 if
    /// the price is not zero).
    pub fn slot_price(price_per_gib: Amount, slot_len: u64) -> Amount {
        ceil_div(price_per_gib.saturating_mul(slot_len as u128), GIB)
    }

    /// Executes one verified transaction, atomically.
    pub fn apply(&mut self, tx: &Tx) -> Result<(), EscrowError> {
        if tx.chain != self.chain {
            return Err(EscrowError::WrongChain);
        }
        let want = self.account(&tx.signer).nonce;
        if tx.nonce != want {
            return Err(EscrowError::BadNonce {
                got: tx.nonce,
                want,
            });
        }
        // A refused transaction leaves no trace (the property tests compare the state before and
        // after each refusal). The per-slot rules check everything before they change anything;
        // the committed rules first apply what time has done to the slots they touch, so every
        // change is journaled and undone on a refusal.
        let scalars = (self.mix, self.forfeited, self.minted);
        self.journal(Journal::Begin);
        match self.execute(tx) {
            Ok(()) => self.journal(Journal::End),
            Err(e) => {
                self.journal(Journal::Rollback);
                (self.mix, self.forfeited, self.minted) = scalars;
                return Err(e);
            }
        }
        self.accounts.get_or_default(tx.signer).nonce += 1;
        Ok(())
    }

    fn journal(&mut self, step: Journal) {
        macro_rules! each {
            ($m:ident) => {
                self.accounts.$m();
                self.providers.$m();
                self.deals.$m();
                self.books.$m();
            };
        }
        match step {
            Journal::Begin => {
                each!(begin);
            }
            Journal::End => {
                each!(end);
            }
            Journal::Rollback => {
                each!(rollback);
            }
        }
    }

    fn check_balance(&self, who: &PublicKey, need: Amount) -> Result<(), EscrowError> {
        let have = self.accounts.get(who).map_or(0, |a| a.balance);
        if have < need {
            return Err(EscrowError::InsufficientBalance { have, need });
        }
        Ok(())
    }

    fn debit(&mut self, who: &PublicKey, amount: Amount) -> Result<(), EscrowError> {
        if amount == 0 {
            return Ok(());
        }
        self.check_balance(who, amount)?;
        self.accounts
            .get_mut(who)
            .expect("check_balance found a balance")
            .balance -= amount;
        Ok(())
    }

    fn credit(&mut self, who: &PublicKey, amount: Amount) {
        let acct = self.accounts.get_or_default(*who);
        acct.balance = acct.balance.saturating_add(amount);
    }
}

/// Ends a deal's money: the creator is owed the escrow left and at most the reserve it
/// deposited; slashed collateral in the reserve is forfeited (a creator never profits from
/// holders failing). Returns what the creator is owed.
fn wind_up(d: &mut Deal, forfeited: &mut Amount) -> Amount {
    let kept = d.reserve.min(d.reserve_deposit);
    *forfeited = forfeited.saturating_add(d.reserve - kept);
    let refunded = d.escrow + kept;
    d.escrow = 0;
    d.reserve = 0;
    d.ended = true;
    refunded
}

/// Takes an ended deal out of its object's live deals.
fn unlist_object(
    objects: &mut BTreeMap<ObjectId, BTreeSet<DealId>>,
    object: &ObjectId,
    id: &DealId,
) {
    if let Some(live) = objects.get_mut(object) {
        live.remove(id);
        if live.is_empty() {
            objects.remove(object);
        }
    }
}

/// A step of [`Escrow::apply`]'s undo journal.
enum Journal {
    Begin,
    End,
    Rollback,
}

fn free(s: &mut Slot) {
    s.holder = None;
    s.status = SlotStatus::Freed;
    s.proven = None;
    s.prove_from = u64::MAX;
    s.bounty_due = false;
}

fn pay(accounts: &mut Tracked<PublicKey, Account>, who: &PublicKey, amount: Amount) {
    if amount > 0 {
        let a = accounts.get_or_default(*who);
        a.balance = a.balance.saturating_add(amount);
    }
}
