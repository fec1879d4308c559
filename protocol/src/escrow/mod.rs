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

pub mod state;
pub mod tx;

use crate::challenge::{Challenge, StorageProof};
use crate::id::{DealId, ObjectId};
use crate::manifest::SignedManifest;
use crate::sign::PublicKey;
use crate::tree::TreeShape;
use serde::{Deserialize, Serialize};
use state::Tracked;
use std::collections::{BTreeMap, BTreeSet};
pub use tx::{Amount, ChainId, SignedTx, Tx, TxBody, TxError};

/// Most addresses a provider may register.
pub const MAX_PROVIDER_ADDRS: usize = 8;
/// Longest registered address, in bytes.
pub const MAX_ADDR_LEN: usize = 128;

const GIB: u128 = 1 << 30;
const BPS: u128 = 10_000;

/// The rules' tunable numbers. Part of the ledger's genesis: every host must use the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Largest single `Faucet`; `None` disables the faucet (anything but a devnet).
    pub faucet_cap: Option<Amount>,
    /// Consecutive missed proofs after which a slot is freed.
    pub max_misses: u32,
    /// Share of a slot's locked collateral slashed into the repair reserve per miss, in basis points.
    pub slash_bps: u32,
    /// Epochs a provider has to accept an assigned or claimed slot, on top of the transfer time
    /// that `transfer_bytes_per_epoch` allows for its size.
    pub accept_epochs: u64,
    /// The slowest transfer or rebuild the rules allow for, in slot bytes per epoch: a slot of
    /// `len` bytes gets `ceil(len / transfer_bytes_per_epoch)` more epochs to be accepted, so a big
    /// slot is not forfeited by an honest provider that simply needs longer to fetch it.
    pub transfer_bytes_per_epoch: u64,
    /// A slot's collateral is this many epochs of its price.
    pub collateral_epochs: u64,
    /// The repair reserve a deal deposits, in basis points of its total price.
    pub reserve_bps: u32,
    /// A repairer's bounty is this many epochs of the slot's price (capped by the reserve).
    pub bounty_epochs: u64,
    /// Chunks sampled per slot per epoch.
    pub samples: usize,
    /// Epochs between `ExitProvider` and the provider's slots being handed over. Longer than
    /// `max_misses`, so a provider that lost data is slashed out of its slots before it can hand
    /// them over whole.
    pub exit_notice_epochs: u64,
    /// The least collateral a slot locks per GiB of its length, whatever the holder's price: a
    /// provider asking nothing still stakes this much on every slot it takes, and loses it if it
    /// does not hold the bytes.
    pub collateral_floor_per_gib: Amount,
    /// The least collateral a provider registers with (its bond): each registration, and the
    /// ledger state it takes, costs this much locked capital.
    pub min_provider_collateral: Amount,
}

impl Params {
    /// Collateral a slot of `slot_len` bytes priced `price` per epoch locks: `collateral_epochs`
    /// of its price, and never less than the floor for its size.
    pub fn slot_collateral(&self, price: Amount, slot_len: u64) -> Amount {
        let by_price = price.saturating_mul(self.collateral_epochs as u128);
        let floor = ceil_div(
            self.collateral_floor_per_gib
                .saturating_mul(slot_len as u128),
            GIB,
        );
        by_price.max(floor)
    }

    /// The epoch by which a slot of `slot_len` bytes assigned or claimed in `epoch` must be accepted.
    pub fn accept_deadline(&self, epoch: u64, slot_len: u64) -> u64 {
        let transfer = slot_len.div_ceil(self.transfer_bytes_per_epoch.max(1));
        epoch
            .saturating_add(self.accept_epochs)
            .saturating_add(transfer)
    }
}

impl Default for Params {
    fn default() -> Self {
        Self {
            faucet_cap: None,
            max_misses: 3,
            slash_bps: 2_000,
            accept_epochs: 3,
            // 64 MiB an epoch: 6.4 MiB/s with the default 10-second epoch, far below what a
            // provider on a home connection sustains.
            transfer_bytes_per_epoch: 64 << 20,
            collateral_epochs: 10,
            reserve_bps: 1_000,
            bounty_epochs: 2,
            samples: crate::challenge::DEFAULT_SAMPLES,
            exit_notice_epochs: 4,
            // A provider with the default 1,000,000 collateral can take 10 GiB of slots.
            collateral_floor_per_gib: 100_000,
            min_provider_collateral: 100_000,
        }
    }
}

/// An account: spendable balance and the next nonce it must use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub balance: Amount,
    pub nonce: u64,
}

/// A registered storage provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    pub peer_id: Vec<u8>,
    pub addrs: Vec<String>,
    /// Bytes offered.
    pub capacity: u64,
    /// Bytes of slots assigned to it.
    pub used: u64,
    /// Price per GiB per epoch.
    pub price: Amount,
    /// Collateral not locked in any slot.
    pub collateral: Amount,
    /// The epoch `ExitProvider` was accepted in.
    pub exiting_since: Option<u64>,
}

/// Where a slot stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotStatus {
    /// Assigned (or claimed, when `claimed`), waiting for `AcceptSlot` until `deadline` (an epoch).
    Pending { deadline: u64, claimed: bool },
    /// Held and proving; `misses` counts consecutive missed epochs (0 when all is well).
    Active { misses: u32 },
    /// Nobody holds it: waiting for a repairer's `ClaimSlot`.
    Freed,
    /// The deal is over.
    Ended,
}

/// One slot of a deal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub status: SlotStatus,
    pub holder: Option<PublicKey>,
    /// Price per epoch, fixed when the deal opened.
    pub price: Amount,
    /// Collateral locked by the holder.
    pub collateral: Amount,
    /// Paid to holders of this slot so far.
    pub paid: Amount,
    /// First epoch the holder must prove.
    pub prove_from: u64,
    /// The last epoch a valid proof was recorded for.
    pub proven: Option<u64>,
    /// Missed epochs, all holders together.
    pub total_misses: u64,
    /// Times the slot was claimed for repair.
    pub repairs: u32,
    /// A repair bounty is owed at the holder's first valid proof.
    pub bounty_due: bool,
    /// The last holder that lost this slot by failing it (missed proofs, or a claim never
    /// delivered): it may not claim any slot of this deal again.
    pub failed_by: Option<PublicKey>,
}

/// What a deal fixed when it opened. It never changes, so it is stored and hashed once: what an
/// epoch rewrites of a deal is its [`Deal`] state alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealTerms {
    pub creator: PublicKey,
    pub object: ObjectId,
    pub manifest: SignedManifest,
    pub slot_len: u64,
    pub slot_roots: Vec<[u8; 32]>,
    /// Epoch the deal opened in.
    pub start_epoch: u64,
}

impl DealTerms {
    /// What the state root commits to for these terms.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"atlas/deal-terms/v1\0");
        h.update(&postcard::to_stdvec(self).expect("serializing to a Vec cannot fail"));
        *h.finalize().as_bytes()
    }
}

/// One pinned object: its fixed terms and what changes as it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deal {
    pub terms: std::sync::Arc<DealTerms>,
    /// The first epoch not paid for.
    pub end_epoch: u64,
    /// Tokens left to pay holders with.
    pub escrow: Amount,
    /// Slashed collateral and the deposited reserve: pays repair bounties. At the end the creator
    /// gets back at most `reserve_deposit` of it; the rest (slashed collateral) is forfeited, so a
    /// creator gains nothing from holders failing its deal.
    pub reserve: Amount,
    /// What the creator deposited into the reserve.
    pub reserve_deposit: Amount,
    pub slots: Vec<Slot>,
    pub ended: bool,
}

/// The part of a [`Deal`] that changes, as a store holds it (`S` is `&[Slot]` when borrowed
/// from a deal for hashing and storing: both encode alike).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DealState<S = Vec<Slot>> {
    pub end_epoch: u64,
    pub escrow: Amount,
    pub reserve: Amount,
    pub reserve_deposit: Amount,
    pub slots: S,
    pub ended: bool,
}

/// A deal's changing part, borrowed.
pub type DealStateRef<'a> = DealState<&'a [Slot]>;

impl DealState {
    /// Decodes [`Deal::encode_state`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

impl Deal {
    /// The part that changes, encoded: what the state root hashes and a store writes.
    pub fn encode_state(&self) -> Vec<u8> {
        // Sized for the usual record, so encoding allocates once.
        let buf = Vec::with_capacity(64 + 96 * self.slots.len());
        postcard::to_extend(&self.state(), buf).expect("serializing to a Vec cannot fail")
    }

    /// The part that changes, for hashing and storing.
    pub fn state(&self) -> DealStateRef<'_> {
        DealStateRef {
            end_epoch: self.end_epoch,
            escrow: self.escrow,
            reserve: self.reserve,
            reserve_deposit: self.reserve_deposit,
            slots: &self.slots,
            ended: self.ended,
        }
    }

    /// A deal from its terms and its stored state.
    pub fn from_state(terms: std::sync::Arc<DealTerms>, s: DealState) -> Self {
        Self {
            terms,
            end_epoch: s.end_epoch,
            escrow: s.escrow,
            reserve: s.reserve,
            reserve_deposit: s.reserve_deposit,
            slots: s.slots,
            ended: s.ended,
        }
    }

    /// Per-epoch price of all slots.
    pub fn price_per_epoch(&self) -> Amount {
        self.slots.iter().map(|s| s.price).sum()
    }

    /// Epochs the escrow still pays for at the full price.
    pub fn epochs_covered(&self) -> u64 {
        let p = self.price_per_epoch();
        if p == 0 {
            return u64::MAX;
        }
        u64::try_from(self.escrow / p).unwrap_or(u64::MAX)
    }
}

/// Something that happened at an epoch boundary, for logs, metrics and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Paid {
        deal: DealId,
        slot: u16,
        holder: PublicKey,
        amount: Amount,
    },
    BountyPaid {
        deal: DealId,
        slot: u16,
        holder: PublicKey,
        amount: Amount,
    },
    Missed {
        deal: DealId,
        slot: u16,
        holder: PublicKey,
        slashed: Amount,
        misses: u32,
    },
    Freed {
        deal: DealId,
        slot: u16,
        reason: FreeReason,
    },
    DealEnded {
        deal: DealId,
        refunded: Amount,
    },
    ProviderExited {
        provider: PublicKey,
    },
}

/// Why a slot was freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FreeReason {
    MissedProofs,
    NotAccepted,
    ProviderExit,
}

/// Why a transaction was refused. The state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum EscrowError {
    #[error("nonce {got} is not the account's next nonce {want}")]
    BadNonce { got: u64, want: u64 },
    #[error("balance {have} is less than the {need} needed")]
    InsufficientBalance { have: Amount, need: Amount },
    #[error("the faucet is disabled on this ledger")]
    FaucetDisabled,
    #[error("faucet gives at most {cap} per request")]
    FaucetCap { cap: Amount },
    #[error("already registered as a provider")]
    AlreadyProvider,
    #[error("not a registered provider")]
    NotProvider,
    #[error("provider is exiting")]
    ProviderExiting,
    #[error("unknown deal")]
    UnknownDeal,
    #[error("deal has ended")]
    DealEnded,
    #[error("slot {0} does not exist in this deal")]
    UnknownSlot(u16),
    #[error("manifest: {0}")]
    Manifest(String),
    #[error("a deal needs one provider per slot: {want} slots, {got} providers")]
    ProviderCount { got: usize, want: usize },
    #[error("a provider may hold only one slot of an object")]
    DuplicateProvider,
    #[error("provider {0} is not registered")]
    UnknownProvider(PublicKey),
    #[error("provider {provider} lacks capacity for a {need}-byte slot")]
    NoCapacity { provider: PublicKey, need: u64 },
    #[error("provider {provider} asks {price} per GiB-epoch, above the maximum {max}")]
    TooExpensive {
        provider: PublicKey,
        price: Amount,
        max: Amount,
    },
    #[error("a deal must last at least one epoch")]
    NoEpochs,
    #[error("slot is not in a state that allows this ({0:?})")]
    WrongSlotState(SlotStatus),
    #[error("only the slot's holder may do this")]
    NotHolder,
    #[error("only the deal's creator may do this")]
    NotCreator,
    #[error("collateral pool {have} is less than the {need} this slot locks")]
    InsufficientCollateral { have: Amount, need: Amount },
    #[error("proof is for epoch {got}, the ledger is in epoch {current}")]
    WrongEpoch { got: u64, current: u64 },
    #[error("slot is not due a proof before epoch {0}")]
    NotYetDue(u64),
    #[error("a proof for this slot and epoch is already recorded")]
    AlreadyProven,
    #[error("invalid proof: {0}")]
    InvalidProof(String),
    #[error("this provider lost a slot of this object by failing it and may not claim any back")]
    FailedThisSlot,
    #[error("arithmetic overflow")]
    Overflow,
    #[error("the transaction was signed for another chain")]
    WrongChain,
    #[error("the registered peer id is not the signing key's own")]
    PeerIdMismatch,
    #[error("addresses refused: {0}")]
    BadAddresses(String),
    #[error("collateral {have} is below the {need} a provider must register with")]
    BondTooSmall { have: Amount, need: Amount },
    #[error("the provider already holds a slot of this object in a live deal")]
    HoldsObject,
}

/// Checks a provider's addresses: few, short, printable multiaddr text without a `/p2p/` part
/// (the ledger knows the peer id; dialers add it).
fn check_addrs(addrs: &[String]) -> Result<(), EscrowError> {
    if addrs.len() > MAX_PROVIDER_ADDRS {
        return Err(EscrowError::BadAddresses("more than 8 addresses".into()));
    }
    for a in addrs {
        if a.len() > MAX_ADDR_LEN {
            return Err(EscrowError::BadAddresses(
                "an address is over 128 bytes".into(),
            ));
        }
        if !a.starts_with('/') || !a.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(EscrowError::BadAddresses(
                "an address is not multiaddr text".into(),
            ));
        }
        if a.contains("/p2p/") {
            return Err(EscrowError::BadAddresses(
                "an address names a peer id (leave /p2p/ out)".into(),
            ));
        }
    }
    Ok(())
}

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
    minted: Amount,
    accounts: Tracked<PublicKey, Account>,
    providers: Tracked<PublicKey, Provider>,
    deals: Tracked<DealId, Deal>,
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
    }
}

impl Eq for Escrow {}

/// Which live deals [`Escrow::indexed_deals`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DealIndex {
    /// Those in which this provider holds (or is assigned) a slot.
    HeldBy(PublicKey),
    /// Those this creator opened.
    OfCreator(PublicKey),
    /// Those with a freed slot.
    Repairable,
}

/// Look-ups over the live deals, derived from them.
#[derive(Debug, Clone, Default)]
struct Indices {
    by_holder: BTreeMap<PublicKey, BTreeSet<DealId>>,
    by_creator: BTreeMap<PublicKey, BTreeSet<DealId>>,
    /// Live deals with a freed slot.
    repairable: BTreeSet<DealId>,
    /// Each indexed deal's creator and holders, to take it out again when it changes.
    entries: BTreeMap<DealId, (PublicKey, Vec<PublicKey>)>,
}

fn unlist(index: &mut BTreeMap<PublicKey, BTreeSet<DealId>>, key: &PublicKey, id: &DealId) {
    if let Some(set) = index.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// The deals of `set` after `after`, with their records.
fn listed<'a>(
    deals: &'a Tracked<DealId, Deal>,
    set: Option<&'a BTreeSet<DealId>>,
    after: Option<DealId>,
) -> impl Iterator<Item = (&'a DealId, &'a Deal)> {
    use std::ops::Bound;
    let from = after.map_or(Bound::Unbounded, Bound::Excluded);
    set.into_iter()
        .flat_map(move |s| s.range((from, Bound::Unbounded)))
        .filter_map(move |id| deals.get(id).map(|d| (id, d)))
}

impl Indices {
    fn remove(&mut self, id: &DealId) {
        if let Some((creator, holders)) = self.entries.remove(id) {
            for h in &holders {
                unlist(&mut self.by_holder, h, id);
            }
            unlist(&mut self.by_creator, &creator, id);
        }
        self.repairable.remove(id);
    }

    fn holders(d: &Deal) -> Vec<PublicKey> {
        let mut holders: Vec<PublicKey> = d.slots.iter().filter_map(|s| s.holder).collect();
        holders.sort();
        holders.dedup();
        holders
    }

    /// Whether the deal is indexed as it is (most changes, a proof or a payment, move nothing).
    fn is_current(&self, id: &DealId, d: &Deal) -> bool {
        let holds = |h: &PublicKey| d.slots.iter().any(|s| s.holder.as_ref() == Some(h));
        self.entries.get(id).is_some_and(|(_, holders)| {
            holders.iter().all(holds)
                && d.slots
                    .iter()
                    .filter_map(|s| s.holder.as_ref())
                    .all(|h| holders.contains(h))
        }) && self.repairable.contains(id) == d.slots.iter().any(|s| s.status == SlotStatus::Freed)
    }

    fn insert(&mut self, id: DealId, d: &Deal) {
        let holders = Self::holders(d);
        for h in &holders {
            self.by_holder.entry(*h).or_default().insert(id);
        }
        self.by_creator
            .entry(d.terms.creator)
            .or_default()
            .insert(id);
        self.entries.insert(id, (d.terms.creator, holders));
        if d.slots.iter().any(|s| s.status == SlotStatus::Freed) {
            self.repairable.insert(id);
        }
    }
}

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
            minted: 0,
            accounts: Tracked::default(),
            providers: Tracked::default(),
            deals: Tracked::default(),
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
            minted: meta.minted,
            accounts: Tracked::from_map(accounts),
            providers: Tracked::from_map(providers),
            deals: Tracked::from_map(deals),
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
            minted: self.minted,
            forfeited: self.forfeited,
        }
    }

    /// The state root after everything applied so far, and the records changed since the last
    /// call (what a store must write). The first call after [`Escrow::new`] or
    /// [`Escrow::from_parts`] hashes every record once; after that only what changed.
    pub fn take_changes(&mut self) -> ([u8; 32], state::Changes) {
        let (a, p, d) = (
            self.accounts.take_dirty(),
            self.providers.take_dirty(),
            self.deals.take_dirty(),
        );
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

    /// The state root block headers commit to (see [`state`]); forgets which records changed.
    pub fn state_root(&mut self) -> [u8; 32] {
        self.take_changes().0
    }

    /// Every token in existence, wherever it sits. Equals [`Escrow::minted`].
    pub fn total_supply(&self) -> Amount {
        let balances: Amount = self.accounts.map().values().map(|a| a.balance).sum();
        let pools: Amount = self.providers.map().values().map(|p| p.collateral).sum();
        let deals: Amount = self
            .deals
            .map()
            .values()
            .map(|d| d.escrow + d.reserve + d.slots.iter().map(|s| s.collateral).sum::<Amount>())
            .sum();
        balances + pools + deals + self.forfeited
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
        // Every rule checks everything before it changes anything, so a refused transaction leaves
        // no trace (the property tests compare the state before and after each refusal).
        self.execute(tx)?;
        self.accounts.get_or_default(tx.signer).nonce += 1;
        Ok(())
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

    fn execute(&mut self, tx: &Tx) -> Result<(), EscrowError> {
        let signer = tx.signer;
        match &tx.body {
            TxBody::Transfer { to, amount } => {
                self.debit(&signer, *amount)?;
                self.credit(to, *amount);
            }
            TxBody::Faucet { amount } => {
                let cap = self.params.faucet_cap.ok_or(EscrowError::FaucetDisabled)?;
                if *amount > cap {
                    return Err(EscrowError::FaucetCap { cap });
                }
                self.minted = self
                    .minted
                    .checked_add(*amount)
                    .ok_or(EscrowError::Overflow)?;
                self.credit(&signer, *amount);
            }
            TxBody::RegisterProvider {
                peer_id,
                addrs,
                capacity,
                price,
                collateral,
            } => {
                if self.providers.contains_key(&signer) {
                    return Err(EscrowError::AlreadyProvider);
                }
                if *peer_id != signer.peer_id_bytes() {
                    return Err(EscrowError::PeerIdMismatch);
                }
                check_addrs(addrs)?;
                if *collateral < self.params.min_provider_collateral {
                    return Err(EscrowError::BondTooSmall {
                        have: *collateral,
                        need: self.params.min_provider_collateral,
                    });
                }
                self.debit(&signer, *collateral)?;
                self.providers.insert(
                    signer,
                    Provider {
                        peer_id: peer_id.clone(),
                        addrs: addrs.clone(),
                        capacity: *capacity,
                        used: 0,
                        price: *price,
                        collateral: *collateral,
                        exiting_since: None,
                    },
                );
            }
            TxBody::UpdateProvider {
                addrs,
                capacity,
                price,
                add_collateral,
            } => {
                if !self.providers.contains_key(&signer) {
                    return Err(EscrowError::NotProvider);
                }
                check_addrs(addrs)?;
                self.debit(&signer, *add_collateral)?;
                let p = self.providers.get_mut(&signer).expect("checked above");
                p.addrs = addrs.clone();
                p.capacity = *capacity;
                p.price = *price;
                p.collateral += add_collateral;
            }
            TxBody::ExitProvider => {
                let epoch = self.epoch;
                let p = self
                    .providers
                    .get_mut(&signer)
                    .ok_or(EscrowError::NotProvider)?;
                if p.exiting_since.is_some() {
                    return Err(EscrowError::ProviderExiting);
                }
                p.exiting_since = Some(epoch);
            }
            TxBody::OpenDeal {
                manifest,
                providers,
                epochs,
                max_price,
            } => self.open_deal(tx, manifest, providers, *epochs, *max_price)?,
            TxBody::AcceptSlot { deal, slot } => {
                let epoch = self.epoch;
                let slot_len = self.live_deal(deal)?.terms.slot_len;
                let s = self.slot(deal, *slot)?;
                let SlotStatus::Pending { claimed, .. } = s.status else {
                    return Err(EscrowError::WrongSlotState(s.status));
                };
                if s.holder != Some(signer) {
                    return Err(EscrowError::NotHolder);
                }
                // A claimant locked its collateral when it claimed.
                let need = if claimed {
                    0
                } else {
                    self.params.slot_collateral(s.price, slot_len)
                };
                self.lock_collateral(&signer, need)?;
                let s = self.slot_mut(deal, *slot)?;
                s.collateral += need;
                s.status = SlotStatus::Active { misses: 0 };
                s.prove_from = epoch + 1;
            }
            TxBody::SubmitProof {
                deal,
                slot,
                epoch,
                proof,
            } => self.submit_proof(&signer, deal, *slot, *epoch, proof)?,
            TxBody::ClaimSlot { deal, slot } => {
                let epoch = self.epoch;
                let d = self.live_deal(deal)?;
                let s = d
                    .slots
                    .get(*slot as usize)
                    .ok_or(EscrowError::UnknownSlot(*slot))?;
                if s.status != SlotStatus::Freed {
                    return Err(EscrowError::WrongSlotState(s.status));
                }
                if d.slots.iter().any(|other| other.failed_by == Some(signer)) {
                    return Err(EscrowError::FailedThisSlot);
                }
                // One slot of an object per provider, across every live deal of it: a provider
                // never holds bytes that two deals of one object both count on.
                if self.holds_object(&signer, &d.terms.object) {
                    return Err(EscrowError::HoldsObject);
                }
                let need = self.params.slot_collateral(s.price, d.terms.slot_len);
                let slot_len = d.terms.slot_len;
                self.check_capacity(&signer, slot_len)?;
                self.lock_collateral(&signer, need)?;
                self.providers
                    .get_mut(&signer)
                    .expect("checked by check_capacity")
                    .used += slot_len;
                let deadline = self.params.accept_deadline(epoch, slot_len);
                let s = self.slot_mut(deal, *slot)?;
                s.holder = Some(signer);
                s.collateral = need;
                s.status = SlotStatus::Pending {
                    deadline,
                    claimed: true,
                };
                s.repairs += 1;
                s.bounty_due = true;
            }
            TxBody::TopUp { deal, amount } => {
                let escrow = self
                    .live_deal(deal)?
                    .escrow
                    .checked_add(*amount)
                    .ok_or(EscrowError::Overflow)?;
                self.debit(&signer, *amount)?;
                self.deals.get_mut(deal).expect("checked above").escrow = escrow;
            }
            TxBody::Extend { deal, epochs } => {
                let d = self.deals.get(deal).ok_or(EscrowError::UnknownDeal)?;
                if d.ended {
                    return Err(EscrowError::DealEnded);
                }
                let cost = d
                    .price_per_epoch()
                    .checked_mul(*epochs as u128)
                    .ok_or(EscrowError::Overflow)?;
                let end_epoch = d
                    .end_epoch
                    .checked_add(*epochs)
                    .ok_or(EscrowError::Overflow)?;
                let escrow = d.escrow.checked_add(cost).ok_or(EscrowError::Overflow)?;
                self.debit(&signer, cost)?;
                let d = self.deals.get_mut(deal).expect("checked above");
                d.escrow = escrow;
                d.end_epoch = end_epoch;
            }
            TxBody::CancelDeal { deal } => {
                let epoch = self.epoch;
                let d = self.deals.get_mut(deal).ok_or(EscrowError::UnknownDeal)?;
                if d.ended {
                    return Err(EscrowError::DealEnded);
                }
                if d.terms.creator != signer {
                    return Err(EscrowError::NotCreator);
                }
                // Proofs of the current epoch are still paid; the deal ends at its boundary.
                d.end_epoch = d.end_epoch.min(epoch + 1);
            }
        }
        Ok(())
    }

    fn live_deal(&self, deal: &DealId) -> Result<&Deal, EscrowError> {
        let d = self.deals.get(deal).ok_or(EscrowError::UnknownDeal)?;
        if d.ended {
            return Err(EscrowError::DealEnded);
        }
        Ok(d)
    }

    fn slot(&self, deal: &DealId, slot: u16) -> Result<&Slot, EscrowError> {
        self.live_deal(deal)?
            .slots
            .get(slot as usize)
            .ok_or(EscrowError::UnknownSlot(slot))
    }

    fn slot_mut(&mut self, deal: &DealId, slot: u16) -> Result<&mut Slot, EscrowError> {
        self.live_deal(deal)?;
        self.deals
            .get_mut(deal)
            .and_then(|d| d.slots.get_mut(slot as usize))
            .ok_or(EscrowError::UnknownSlot(slot))
    }

    fn lock_collateral(&mut self, who: &PublicKey, need: Amount) -> Result<(), EscrowError> {
        let p = self
            .providers
            .get_mut(who)
            .ok_or(EscrowError::NotProvider)?;
        if need == 0 {
            return Ok(());
        }
        if p.collateral < need {
            return Err(EscrowError::InsufficientCollateral {
                have: p.collateral,
                need,
            });
        }
        p.collateral -= need;
        Ok(())
    }

    fn check_capacity(&self, who: &PublicKey, len: u64) -> Result<(), EscrowError> {
        let p = self
            .providers
            .get(who)
            .ok_or(EscrowError::UnknownProvider(*who))?;
        if p.exiting_since.is_some() {
            return Err(EscrowError::ProviderExiting);
        }
        if p.capacity.saturating_sub(p.used) < len {
            return Err(EscrowError::NoCapacity {
                provider: *who,
                need: len,
            });
        }
        Ok(())
    }

    fn open_deal(
        &mut self,
        tx: &Tx,
        manifest: &SignedManifest,
        providers: &[PublicKey],
        epochs: u64,
        max_price: Amount,
    ) -> Result<(), EscrowError> {
        let verified = manifest
            .verify()
            .map_err(|e| EscrowError::Manifest(e.to_string()))?;
        let layout = verified.layout();
        let n = layout.total_shards();
        if providers.len() != n {
            return Err(EscrowError::ProviderCount {
                got: providers.len(),
                want: n,
            });
        }
        if epochs == 0 {
            return Err(EscrowError::NoEpochs);
        }
        let mut seen = std::collections::BTreeSet::new();
        if !providers.iter().all(|p| seen.insert(*p)) {
            return Err(EscrowError::DuplicateProvider);
        }
        let object = verified.id();
        if providers.iter().any(|p| self.holds_object(p, &object)) {
            return Err(EscrowError::HoldsObject);
        }
        let end_epoch = self
            .epoch
            .checked_add(1)
            .and_then(|e| e.checked_add(epochs))
            .ok_or(EscrowError::Overflow)?;
        let slot_len = layout.slot_len();
        let mut prices = Vec::with_capacity(n);
        for p in providers {
            let info = self
                .providers
                .get(p)
                .ok_or(EscrowError::UnknownProvider(*p))?;
            if info.price > max_price {
                return Err(EscrowError::TooExpensive {
                    provider: *p,
                    price: info.price,
                    max: max_price,
                });
            }
            prices.push(Self::slot_price(info.price, slot_len));
        }
        for p in providers {
            self.check_capacity(p, slot_len)?;
        }
        let per_epoch = prices
            .iter()
            .try_fold(0u128, |sum, p| sum.checked_add(*p))
            .ok_or(EscrowError::Overflow)?;
        let escrow = per_epoch
            .checked_mul(epochs as u128)
            .ok_or(EscrowError::Overflow)?;
        let reserve = bps(escrow, self.params.reserve_bps);
        let deposit = escrow.checked_add(reserve).ok_or(EscrowError::Overflow)?;
        self.check_balance(&tx.signer, deposit)?;
        // Checks are done: from here on nothing fails.
        self.debit(&tx.signer, deposit)?;
        for p in providers {
            self.providers.get_mut(p).expect("checked above").used += slot_len;
        }
        let id = Self::deal_id(&tx.signer, tx.nonce);
        let deadline = self.params.accept_deadline(self.epoch, slot_len);
        let slots = providers
            .iter()
            .zip(&prices)
            .map(|(p, price)| Slot {
                status: SlotStatus::Pending {
                    deadline,
                    claimed: false,
                },
                holder: Some(*p),
                price: *price,
                collateral: 0,
                paid: 0,
                prove_from: u64::MAX,
                proven: None,
                total_misses: 0,
                repairs: 0,
                bounty_due: false,
                failed_by: None,
            })
            .collect::<Vec<_>>();
        self.objects.entry(object).or_default().insert(id);
        let terms = std::sync::Arc::new(DealTerms {
            creator: tx.signer,
            object,
            manifest: manifest.clone(),
            slot_len,
            slot_roots: verified.manifest().slot_roots.clone(),
            start_epoch: self.epoch,
        });
        self.opened.push((id, terms.clone()));
        self.deals.insert(
            id,
            Deal {
                terms,
                end_epoch,
                escrow,
                reserve,
                reserve_deposit: reserve,
                slots,
                ended: false,
            },
        );
        Ok(())
    }

    fn submit_proof(
        &mut self,
        signer: &PublicKey,
        deal: &DealId,
        slot: u16,
        epoch: u64,
        proof: &StorageProof,
    ) -> Result<(), EscrowError> {
        if epoch != self.epoch {
            return Err(EscrowError::WrongEpoch {
                got: epoch,
                current: self.epoch,
            });
        }
        let beacon = self.beacon;
        // At least one sample: an empty challenge would be answered by an empty proof.
        let samples = self.params.samples.max(1);
        let d = self.live_deal(deal)?;
        let s = d
            .slots
            .get(slot as usize)
            .ok_or(EscrowError::UnknownSlot(slot))?;
        if !matches!(s.status, SlotStatus::Active { .. }) {
            return Err(EscrowError::WrongSlotState(s.status));
        }
        if s.holder != Some(*signer) {
            return Err(EscrowError::NotHolder);
        }
        if epoch < s.prove_from {
            return Err(EscrowError::NotYetDue(s.prove_from));
        }
        if s.proven == Some(epoch) {
            return Err(EscrowError::AlreadyProven);
        }
        let shape = TreeShape::new(d.terms.slot_len)
            .map_err(|e| EscrowError::InvalidProof(e.to_string()))?;
        let root = blake3::Hash::from_bytes(d.terms.slot_roots[slot as usize]);
        let challenge = Challenge::derive(&beacon, deal, slot, epoch, shape.chunks(), samples);
        proof
            .verify(&challenge, &shape, &root)
            .map_err(|e| EscrowError::InvalidProof(e.to_string()))?;
        let s = self.slot_mut(deal, slot)?;
        s.proven = Some(epoch);
        Ok(())
    }

    /// Settles the ending epoch and enters the next one with `beacon`. Returns what happened.
    pub fn advance_epoch(&mut self, beacon: [u8; 32]) -> Vec<Event> {
        let epoch = self.epoch;
        let mut events = Vec::new();
        let params = self.params.clone();
        // Providers whose exit notice has run out hand their slots over now.
        let leaving: Vec<PublicKey> = self
            .providers
            .map()
            .iter()
            .filter(|(_, p)| {
                p.exiting_since
                    .is_some_and(|since| epoch >= since + params.exit_notice_epochs)
            })
            .map(|(k, _)| *k)
            .collect();

        // What each holder earned this epoch, paid once per holder after the sweep.
        let mut payouts: BTreeMap<PublicKey, Amount> = BTreeMap::new();
        // Only live deals are touched (and so written and rehashed).
        let ids: Vec<DealId> = self
            .deals
            .map()
            .iter()
            .filter(|(_, d)| !d.ended)
            .map(|(k, _)| *k)
            .collect();
        for id in ids {
            let d = self.deals.get_mut(&id).expect("id listed above");
            if d.ended {
                continue;
            }
            let mut released: Vec<(PublicKey, Amount, u64)> = Vec::new();
            for (j, s) in d.slots.iter_mut().enumerate() {
                let j = j as u16;
                match s.status {
                    SlotStatus::Active { misses } if epoch >= s.prove_from => {
                        let holder = s.holder.expect("active slots have a holder");
                        if s.proven == Some(epoch) {
                            let amount = s.price.min(d.escrow);
                            d.escrow -= amount;
                            s.paid += amount;
                            *payouts.entry(holder).or_default() += amount;
                            events.push(Event::Paid {
                                deal: id,
                                slot: j,
                                holder,
                                amount,
                            });
                            if s.bounty_due {
                                let bounty = s
                                    .price
                                    .saturating_mul(params.bounty_epochs as u128)
                                    .min(d.reserve);
                                d.reserve -= bounty;
                                *payouts.entry(holder).or_default() += bounty;
                                s.bounty_due = false;
                                events.push(Event::BountyPaid {
                                    deal: id,
                                    slot: j,
                                    holder,
                                    amount: bounty,
                                });
                            }
                            s.status = SlotStatus::Active { misses: 0 };
                        } else {
                            let slashed = ceil_div(
                                s.collateral.saturating_mul(params.slash_bps as u128),
                                BPS,
                            )
                            .min(s.collateral);
                            s.collateral -= slashed;
                            d.reserve += slashed;
                            let misses = misses + 1;
                            s.total_misses += 1;
                            events.push(Event::Missed {
                                deal: id,
                                slot: j,
                                holder,
                                slashed,
                                misses,
                            });
                            if misses >= params.max_misses {
                                // The rest of its collateral is forfeited to the repair reserve.
                                d.reserve += s.collateral;
                                s.collateral = 0;
                                released.push((holder, 0, d.terms.slot_len));
                                free(s);
                                s.failed_by = Some(holder);
                                events.push(Event::Freed {
                                    deal: id,
                                    slot: j,
                                    reason: FreeReason::MissedProofs,
                                });
                            } else {
                                s.status = SlotStatus::Active { misses };
                            }
                        }
                    }
                    SlotStatus::Pending { deadline, claimed } if epoch >= deadline => {
                        let holder = s.holder.expect("pending slots have a holder");
                        if claimed {
                            // A claimant that never delivered loses the collateral it locked,
                            // to nobody (see `forfeited`).
                            self.forfeited = self.forfeited.saturating_add(s.collateral);
                            s.collateral = 0;
                        }
                        released.push((holder, 0, d.terms.slot_len));
                        free(s);
                        s.failed_by = Some(holder);
                        events.push(Event::Freed {
                            deal: id,
                            slot: j,
                            reason: FreeReason::NotAccepted,
                        });
                    }
                    _ => {}
                }
                if let Some(holder) = s.holder {
                    if leaving.contains(&holder)
                        && matches!(
                            s.status,
                            SlotStatus::Active { .. } | SlotStatus::Pending { .. }
                        )
                    {
                        // A holder that is missing proofs when its notice runs out does not walk
                        // away with the collateral of a slot it may have lost.
                        let failing =
                            matches!(s.status, SlotStatus::Active { misses } if misses > 0);
                        if failing {
                            d.reserve = d.reserve.saturating_add(s.collateral);
                            s.failed_by = Some(holder);
                            released.push((holder, 0, d.terms.slot_len));
                        } else {
                            released.push((holder, s.collateral, d.terms.slot_len));
                        }
                        s.collateral = 0;
                        free(s);
                        events.push(Event::Freed {
                            deal: id,
                            slot: j,
                            reason: FreeReason::ProviderExit,
                        });
                    }
                }
            }
            let ends = epoch + 1 >= d.end_epoch;
            if ends {
                for s in d.slots.iter_mut() {
                    if let Some(holder) = s.holder.take() {
                        released.push((holder, s.collateral, d.terms.slot_len));
                    }
                    s.collateral = 0;
                    s.status = SlotStatus::Ended;
                }
                let kept = d.reserve.min(d.reserve_deposit);
                self.forfeited = self.forfeited.saturating_add(d.reserve - kept);
                let refunded = d.escrow + kept;
                d.escrow = 0;
                d.reserve = 0;
                d.ended = true;
                let (creator, object) = (d.terms.creator, d.terms.object);
                pay(&mut self.accounts, &creator, refunded);
                events.push(Event::DealEnded { deal: id, refunded });
                if let Some(live) = self.objects.get_mut(&object) {
                    live.remove(&id);
                    if live.is_empty() {
                        self.objects.remove(&object);
                    }
                }
                // An ended deal leaves the live state: a store archives it.
                let d = self.deals.remove(&id).expect("id listed above");
                self.ended.push((id, d));
            }
            for (holder, collateral, len) in released {
                if let Some(p) = self.providers.get_mut(&holder) {
                    p.collateral += collateral;
                    p.used = p.used.saturating_sub(len);
                } else {
                    pay(&mut self.accounts, &holder, collateral);
                }
            }
        }
        for (holder, amount) in payouts {
            pay(&mut self.accounts, &holder, amount);
        }
        // A provider that has left and holds nothing gets its collateral pool back.
        if !leaving.is_empty() {
            self.refresh_indices();
        }
        for key in leaving {
            if !self.indices.by_holder.contains_key(&key) {
                if let Some(p) = self.providers.remove(&key) {
                    pay(&mut self.accounts, &key, p.collateral);
                    events.push(Event::ProviderExited { provider: key });
                }
            }
        }
        self.epoch += 1;
        self.beacon = beacon;
        events
    }
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
