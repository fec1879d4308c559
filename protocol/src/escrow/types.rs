//! The records the rules keep: parameters, accounts, providers, deals and their slots, and what
//! an epoch boundary reports.

use super::*;

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
    /// Which rules settle proofs: every proof checked by the ledger, or one commit per provider
    /// per epoch checked by watchers (see `docs/proposals/settlement-v2.md`).
    pub rules: RulesVersion,
    /// Committed rules: epochs after an epoch in which it may be disputed, demanded or marked
    /// missed.
    pub dispute_epochs: u64,
    /// Committed rules: epochs a provider has to reveal a demanded sample.
    pub reveal_epochs: u64,
    /// Committed rules: the reporter's share of a slash, in basis points.
    pub reward_bps: u32,
    /// Committed rules: the least reward a successful report earns (taken first from the slash),
    /// enough to pay for the report's gas on a chain.
    pub min_reward: Amount,
    /// Committed rules: what a dispute stakes; it goes to the provider if the sample was valid.
    pub dispute_bond: Amount,
    /// Committed rules: what a demand stakes; it goes to the provider when it reveals.
    pub demand_bond: Amount,
}

/// Which settlement rules a ledger runs; fixed at genesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RulesVersion {
    /// Every slot's proof is submitted and verified by the ledger, and every epoch boundary
    /// settles every deal.
    PerSlot,
    /// Each provider commits once per epoch to all its samples; watchers check and dispute;
    /// payment is settled lazily.
    Committed,
}

impl Params {
    /// What opening a deal of `epochs` epochs at `per_epoch` (the sum of its slots' prices)
    /// takes from the creator: the escrow that pays the holders, and the reserve that pays
    /// repairers. `None` on overflow.
    pub fn deal_deposit(&self, per_epoch: Amount, epochs: u64) -> Option<(Amount, Amount)> {
        let escrow = per_epoch.checked_mul(epochs as u128)?;
        Some((escrow, bps(escrow, self.reserve_bps)))
    }

    /// Collateral a slot of `slot_len` bytes priced `price` per epoch locks: `collateral_epochs`
    /// of its price, and never less than the floor for its size.
    pub fn slot_collateral(&self, price: Amount, slot_len: u64) -> Amount {
        let by_price = price.saturating_mul(self.collateral_epochs as u128);
        let floor = ceil_div(
            self.collateral_floor_per_gib
                .saturating_mul(slot_len as u128),
            GIB,
        );
        let collateral = by_price.max(floor);
        match self.rules {
            RulesVersion::PerSlot => collateral,
            // Every slot pays for its own dispute: the reward and the disputer's bond.
            RulesVersion::Committed => {
                collateral.max(self.min_reward.saturating_add(self.dispute_bond))
            }
        }
    }

    /// Committed rules: the first epoch after which nothing about epoch `e` can change any more
    /// (its disputes, demands and reveals are over).
    pub fn final_after(&self, e: u64) -> u64 {
        e.saturating_add(self.dispute_epochs)
            .saturating_add(self.reveal_epochs)
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
            rules: RulesVersion::PerSlot,
            dispute_epochs: 6,
            reveal_epochs: 3,
            reward_bps: 2_000,
            min_reward: 1_000,
            dispute_bond: 1_000,
            demand_bond: 2_000,
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
    /// The rest is kept by the committed rules only (zero under the per-slot rules).
    ///
    /// The provider's EVM account, on a chain; `None` on the devnet.
    pub evm: Option<[u8; 20]>,
    /// Collateral locked by its slots, as one pool its slots own shares of.
    pub stake: super::pool::Pool,
    /// Prices streamed in by accepted slots and not yet paid out or refunded.
    pub streamed: Amount,
    /// Every epoch below this has been paid for.
    pub settled: u64,
    /// The current generation: a failure ends it, and the slots it held with it.
    pub generation: u32,
    /// Generations with epochs not yet paid, oldest first.
    pub generations: Vec<Generation>,
    /// The last epoch it committed for.
    pub last_commit: Option<u64>,
    /// Consecutive missed commits marked, and the epoch of the last one.
    pub miss_streak: u32,
    pub last_missed: Option<u64>,
    /// Tenures not yet finalized, open or closed.
    pub tenures: u32,
}

impl Provider {
    /// Committed rules: the epoch generation `g`'s tenures closed at, if it has ended.
    pub fn generation_end(&self, g: u32) -> Option<u64> {
        self.generations
            .iter()
            .find(|x| x.id == g)
            .and_then(|x| x.end)
    }
}

/// One generation of a provider's slots: they all end together when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub id: u32,
    /// The epoch its tenures closed at (a failure, or an exit's handover); `None` while current.
    pub end: Option<u64>,
    /// What one good epoch pays at the provider's `settled` epoch: the rate changes of this
    /// generation below it, summed.
    pub rate: Amount,
}

/// A holder's time on a slot, under the committed rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenure {
    pub holder: PublicKey,
    /// The first epoch it owes samples for.
    pub from: u64,
    /// The first epoch it no longer owes (`None` while open).
    pub to: Option<u64>,
    /// The holder's generation when it accepted.
    pub generation: u32,
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
    /// delivered): it may not claim this slot again.
    pub failed_by: Option<PublicKey>,
    /// Committed rules: the holder's shares of its collateral pool, bought in its generation
    /// `shares_generation` (worthless once that generation has failed).
    pub shares: u128,
    pub shares_generation: u32,
    /// Committed rules: the current holder's tenure.
    pub tenure: Option<Tenure>,
    /// Committed rules: closed tenures waiting for their last epoch to become final.
    pub closing: Vec<Tenure>,
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
