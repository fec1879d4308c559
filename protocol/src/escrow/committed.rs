//! The committed rules (`RulesVersion::Committed`, `docs/proposals/settlement-v2.md`): one commit
//! per provider per epoch, and money that moves lazily.
//!
//! - Accepting a slot *streams* its price for the rest of the deal into the holder's `streamed`
//!   and records the rate change at both ends of its tenure ([`BookKind::Rate`]).
//! - A commit sets the epoch's good bit; a marked miss slashes the provider's whole pool.
//! - Settling pays a provider `rate · good epochs` for its final epochs by walking its rate
//!   changes ([`epochs::pay_walk`]); finalizing a tenure refunds the epochs that were not good.
//! - Time alone frees slots (deadlines, failed generations) and ends tenures (deal end): every rule
//!   that touches a slot first applies it ([`Escrow::normalize_slot`]), so no rule visits every
//!   deal.
//!
//! Here so far: accept, claim, release, extend, cancel, exit, commit, mark missed, settle,
//! finalize, close, bounty, complete exit. Disputes and demands follow the proposal's staged plan.

use super::books::{BookKey, BookKind, BookRecord, EpochCommit, Words, WordsMut};
use super::*;

impl Escrow {
    pub(super) fn require_committed(&self) -> Result<(), EscrowError> {
        match self.params.rules {
            RulesVersion::Committed => Ok(()),
            RulesVersion::PerSlot => Err(EscrowError::Retired),
        }
    }

    fn words(&self, provider: PublicKey) -> Words<'_> {
        Words {
            books: &self.books,
            provider,
        }
    }

    /// Adds `delta` to the rate change of `provider`'s generation `g` at epoch `e` (a change
    /// that comes to nothing leaves no record).
    fn add_rate(&mut self, provider: PublicKey, g: u32, e: u64, delta: i128) {
        let key = BookKey::rate(provider, g, e);
        let now = match self.books.get(&key) {
            Some(BookRecord::Rate(r)) => *r,
            _ => 0,
        } + delta;
        if now == 0 {
            self.books.remove(&key);
        } else {
            self.books.insert(key, BookRecord::Rate(now));
        }
    }

    fn commit_of(&self, provider: PublicKey, e: u64) -> Option<&EpochCommit> {
        match self.books.get(&BookKey::commit(provider, e)) {
            Some(BookRecord::Commit(c)) => Some(c),
            _ => None,
        }
    }

    /// The epoch tenure `t` of a slot in a deal ending at `deal_end` closes at by time alone:
    /// the deal's end or the end of the holder's generation, whichever is first.
    fn close_by_time(&self, t: &Tenure, deal_end: u64) -> u64 {
        let gen_end = self
            .providers
            .get(&t.holder)
            .and_then(|p| p.generation_end(t.generation));
        gen_end.map_or(deal_end, |g| g.min(deal_end)).max(t.from)
    }

    /// AcceptSlot: the holder starts its tenure next epoch and the rest of the deal's pay for the
    /// slot streams to it.
    pub(super) fn accept_committed(
        &mut self,
        signer: &PublicKey,
        deal: &DealId,
        slot: u16,
    ) -> Result<(), EscrowError> {
        self.slot(deal, slot)?;
        self.normalize_slot(deal, slot);
        let epoch = self.epoch;
        let d = self.live_deal(deal)?;
        let (slot_len, end) = (d.terms.slot_len, d.end_epoch);
        let s = &d.slots[slot as usize];
        let SlotStatus::Pending { claimed, .. } = s.status else {
            return Err(EscrowError::WrongSlotState(s.status));
        };
        if s.holder != Some(*signer) {
            return Err(EscrowError::NotHolder);
        }
        let p = self.providers.get(signer).ok_or(EscrowError::NotProvider)?;
        let generation = p.generation;
        if claimed && s.shares_generation != generation {
            // Its claim's collateral went with the generation that failed.
            return Err(EscrowError::WrongSlotState(s.status));
        }
        let price = s.price;
        let from = epoch + 1;
        let stream = price
            .checked_mul(u128::from(end.saturating_sub(from)))
            .ok_or(EscrowError::Overflow)?;
        if stream > d.escrow {
            return Err(EscrowError::InsufficientBalance {
                have: d.escrow,
                need: stream,
            });
        }
        // A claimant locked its collateral when it claimed.
        let need = if claimed {
            0
        } else {
            self.params.slot_collateral(price, slot_len)
        };
        if p.collateral < need {
            return Err(EscrowError::InsufficientCollateral {
                have: p.collateral,
                need,
            });
        }
        let shares = p
            .stake
            .shares_for(need)
            .map_err(|_| EscrowError::Overflow)?;
        // Checks are done.
        let p = self.providers.get_mut(signer).expect("checked above");
        p.collateral -= need;
        p.stake.lock(need).expect("priced above");
        p.streamed += stream;
        p.tenures += 1;
        if !p.generations.iter().any(|g| g.id == generation) {
            p.generations.push(Generation {
                id: generation,
                end: None,
                rate: 0,
            });
        }
        let d = self.deals.get_mut(deal).expect("live_deal found it");
        d.escrow -= stream;
        let s = &mut d.slots[slot as usize];
        if !claimed {
            s.shares = shares;
            s.shares_generation = generation;
        }
        s.status = SlotStatus::Active { misses: 0 };
        s.prove_from = from;
        s.tenure = Some(Tenure {
            holder: *signer,
            from,
            to: None,
            generation,
        });
        if from < end {
            self.add_rate(*signer, generation, from, price as i128);
            self.add_rate(*signer, generation, end, -(price as i128));
        }
        Ok(())
    }

    /// ClaimSlot: a repairer takes a freed slot, locking its collateral now.
    pub(super) fn claim_committed(
        &mut self,
        signer: &PublicKey,
        deal: &DealId,
        slot: u16,
    ) -> Result<(), EscrowError> {
        self.slot(deal, slot)?;
        self.normalize_slot(deal, slot);
        let epoch = self.epoch;
        let d = self.live_deal(deal)?;
        let s = &d.slots[slot as usize];
        if s.status != SlotStatus::Freed {
            return Err(EscrowError::WrongSlotState(s.status));
        }
        if s.failed_by == Some(*signer) {
            return Err(EscrowError::FailedThisSlot);
        }
        if self.holds_object(signer, &d.terms.object) {
            return Err(EscrowError::HoldsObject);
        }
        let (slot_len, price) = (d.terms.slot_len, s.price);
        let need = self.params.slot_collateral(price, slot_len);
        self.check_capacity(signer, slot_len)?;
        let p = self.providers.get(signer).ok_or(EscrowError::NotProvider)?;
        if p.collateral < need {
            return Err(EscrowError::InsufficientCollateral {
                have: p.collateral,
                need,
            });
        }
        p.stake
            .shares_for(need)
            .map_err(|_| EscrowError::Overflow)?;
        // Checks are done.
        let deadline = self.params.accept_deadline(epoch, slot_len);
        let p = self.providers.get_mut(signer).expect("checked above");
        p.collateral -= need;
        let shares = p.stake.lock(need).expect("priced above");
        p.used += slot_len;
        let generation = p.generation;
        let s = &mut self.deals.get_mut(deal).expect("live").slots[slot as usize];
        s.holder = Some(*signer);
        s.shares = shares;
        s.shares_generation = generation;
        s.status = SlotStatus::Pending {
            deadline,
            claimed: true,
        };
        s.repairs += 1;
        s.bounty_due = true;
        Ok(())
    }

    /// Ends an open tenure of slot `slot` early, at `at` (no earlier than its first epoch): the
    /// pay not yet earned streams back to the deal and the rate change moves to `at`.
    fn close_tenure_at(&mut self, deal: &DealId, slot: u16, at: u64) -> Option<Tenure> {
        let d = self.deals.get_mut(deal)?;
        let end = d.end_epoch;
        let s = &mut d.slots[slot as usize];
        let t = s.tenure.take()?;
        let close = at.max(t.from).min(end.max(t.from));
        let unstream = s.price * u128::from(end.saturating_sub(close));
        let price = s.price as i128;
        d.escrow += unstream;
        s.closing.push(Tenure {
            to: Some(close),
            ..t
        });
        if let Some(p) = self.providers.get_mut(&t.holder) {
            p.streamed -= unstream;
        }
        if t.from < end {
            self.add_rate(t.holder, t.generation, end, price);
            self.add_rate(t.holder, t.generation, close, -price);
        }
        Some(t)
    }

    /// ReleaseSlot: the holder gives a slot back now, at one slash of its collateral.
    pub(super) fn release_committed(
        &mut self,
        signer: &PublicKey,
        deal: &DealId,
        slot: u16,
    ) -> Result<(), EscrowError> {
        self.slot(deal, slot)?;
        self.normalize_slot(deal, slot);
        let now = self.epoch;
        let d = self.live_deal(deal)?;
        let slot_len = d.terms.slot_len;
        let s = &d.slots[slot as usize];
        if s.holder != Some(*signer) {
            return Err(EscrowError::NotHolder);
        }
        let locked_shares = match s.status {
            SlotStatus::Active { .. } => true,
            SlotStatus::Pending { claimed, .. } => claimed,
            status => return Err(EscrowError::WrongSlotState(status)),
        };
        let shares = s.shares;
        // Checks are done. Epoch `now` is not owed any more.
        self.close_tenure_at(deal, slot, now);
        let slash_bps = self.params.slash_bps as u128;
        let mut penalty = 0;
        if let Some(p) = self.providers.get_mut(signer) {
            if locked_shares {
                let value = p.stake.unlock(shares);
                penalty = ceil_div(value.saturating_mul(slash_bps), BPS).min(value);
                p.collateral += value - penalty;
            }
            p.used = p.used.saturating_sub(slot_len);
        }
        self.forfeited = self.forfeited.saturating_add(penalty);
        let s = &mut self.deals.get_mut(deal).expect("live").slots[slot as usize];
        free(s);
        s.shares = 0;
        s.failed_by = Some(*signer);
        self.finalize_closing(deal, slot);
        Ok(())
    }

    /// Extend: the deal runs `epochs` longer; every open tenure streams the extra pay now.
    pub(super) fn extend_committed(
        &mut self,
        signer: &PublicKey,
        deal: &DealId,
        epochs: u64,
    ) -> Result<(), EscrowError> {
        let n = self.live_deal(deal)?.slots.len() as u16;
        for j in 0..n {
            self.normalize_slot(deal, j);
        }
        let d = self.live_deal(deal)?;
        let cost = d
            .price_per_epoch()
            .checked_mul(epochs as u128)
            .ok_or(EscrowError::Overflow)?;
        let old = d.end_epoch;
        let new = old.checked_add(epochs).ok_or(EscrowError::Overflow)?;
        d.escrow.checked_add(cost).ok_or(EscrowError::Overflow)?;
        self.debit(signer, cost)?;
        let d = self.deals.get_mut(deal).expect("live");
        d.escrow += cost;
        d.end_epoch = new;
        self.move_deal_end(deal, old, new);
        Ok(())
    }

    /// Moves the end of every open tenure of `deal` from `old` to `new`, streaming the
    /// difference in or out.
    fn move_deal_end(&mut self, deal: &DealId, old: u64, new: u64) {
        let d = self.deals.get(deal).expect("live");
        let moves: Vec<(Tenure, Amount)> = d
            .slots
            .iter()
            .filter_map(|s| s.tenure.map(|t| (t, s.price)))
            .collect();
        for (t, price) in moves {
            let (was, now) = (old.max(t.from), new.max(t.from));
            let d = self.deals.get_mut(deal).expect("live");
            let p = self
                .providers
                .get_mut(&t.holder)
                .expect("holders are providers");
            if now > was {
                let more = price * u128::from(now - was);
                d.escrow -= more;
                p.streamed += more;
            } else {
                let less = price * u128::from(was - now);
                d.escrow += less;
                p.streamed -= less;
            }
            if was != now {
                self.add_rate(t.holder, t.generation, was, price as i128);
                self.add_rate(t.holder, t.generation, now, -(price as i128));
            }
        }
    }

    /// CancelDeal: the deal ends after the current epoch; unearned pay streams back.
    pub(super) fn cancel_committed(
        &mut self,
        signer: &PublicKey,
        deal: &DealId,
    ) -> Result<(), EscrowError> {
        let d = self.live_deal(deal)?;
        if d.terms.creator != *signer {
            return Err(EscrowError::NotCreator);
        }
        let n = d.slots.len() as u16;
        for j in 0..n {
            self.normalize_slot(deal, j);
        }
        let d = self.deals.get_mut(deal).expect("live");
        let old = d.end_epoch;
        let new = old.min(self.epoch + 1);
        d.end_epoch = new;
        self.move_deal_end(deal, old, new);
        Ok(())
    }

    /// ExitProvider: the provider's current generation ends at the handover; its tenures close
    /// there lazily.
    pub(super) fn exit_committed(&mut self, signer: &PublicKey) -> Result<(), EscrowError> {
        let epoch = self.epoch;
        let handover = epoch + self.params.exit_notice_epochs;
        let p = self
            .providers
            .get_mut(signer)
            .ok_or(EscrowError::NotProvider)?;
        if p.exiting_since.is_some() {
            return Err(EscrowError::ProviderExiting);
        }
        p.exiting_since = Some(epoch);
        let g = p.generation;
        match p.generations.iter_mut().find(|x| x.id == g) {
            Some(x) => x.end = Some(handover),
            None => p.generations.push(Generation {
                id: g,
                end: Some(handover),
                rate: 0,
            }),
        }
        Ok(())
    }

    /// CloseDeal: once the deal's last epoch is final, every slot is finalized, the holders'
    /// collateral returns, and the creator gets the unearned escrow and its reserve back.
    pub(super) fn close_deal(&mut self, deal: &DealId) -> Result<(), EscrowError> {
        self.require_committed()?;
        let d = self.live_deal(deal)?;
        let end = d.end_epoch;
        let final_at = self.params.final_after(end.saturating_sub(1)) + 1;
        if self.epoch < final_at {
            return Err(EscrowError::NotFinal {
                up_to: end,
                final_at,
            });
        }
        let n = d.slots.len() as u16;
        // Past the window every tenure is final; only a holder's open demand holds one back.
        let blocked = d
            .slots
            .iter()
            .flat_map(|s| s.tenure.iter().chain(&s.closing))
            .any(|t| self.has_open_demands(&t.holder));
        if blocked {
            return Err(EscrowError::DemandOpen);
        }
        // Checks are done.
        for j in 0..n {
            self.normalize_slot(deal, j);
        }
        let slot_len = self.deals.get(deal).expect("live").terms.slot_len;
        let pending: Vec<(PublicKey, u128, u32, bool)> = self
            .deals
            .get(deal)
            .expect("live")
            .slots
            .iter()
            .filter_map(|s| match s.status {
                SlotStatus::Pending { claimed, .. } => {
                    Some((s.holder?, s.shares, s.shares_generation, claimed))
                }
                _ => None,
            })
            .collect();
        for (holder, shares, g, claimed) in pending {
            if let Some(p) = self.providers.get_mut(&holder) {
                if p.generation == g {
                    if claimed {
                        let v = p.stake.unlock(shares);
                        p.collateral += v;
                    }
                    p.used = p.used.saturating_sub(slot_len);
                }
            }
        }
        let mut d = self.deals.remove(deal).expect("live");
        for s in d.slots.iter_mut() {
            s.holder = None;
            s.shares = 0;
            s.status = SlotStatus::Ended;
        }
        let refunded = wind_up(&mut d, &mut self.forfeited);
        let (creator, object) = (d.terms.creator, d.terms.object);
        self.credit(&creator, refunded);
        unlist_object(&mut self.objects, &object, deal);
        self.ended.push((*deal, d));
        Ok(())
    }

    /// ClaimBounty: a repairer whose tenure has a final good epoch takes its bounty.
    pub(super) fn claim_bounty(
        &mut self,
        signer: &PublicKey,
        deal: &DealId,
        slot: u16,
    ) -> Result<(), EscrowError> {
        self.require_committed()?;
        self.slot(deal, slot)?;
        self.normalize_slot(deal, slot);
        let d = self.live_deal(deal)?;
        let s = &d.slots[slot as usize];
        let t = match s.tenure {
            Some(t) if t.holder == *signer && s.bounty_due => t,
            _ => return Err(EscrowError::NoBounty),
        };
        let frontier = self
            .epoch
            .saturating_sub(self.params.dispute_epochs + self.params.reveal_epochs);
        if epochs::good(&self.words(*signer), t.from, frontier) == 0 {
            return Err(EscrowError::NoBounty);
        }
        let bounty = s
            .price
            .saturating_mul(self.params.bounty_epochs as u128)
            .min(d.reserve);
        let d = self.deals.get_mut(deal).expect("live");
        d.reserve -= bounty;
        d.slots[slot as usize].bounty_due = false;
        self.credit(signer, bounty);
        Ok(())
    }

    /// CompleteExit: an exited provider with nothing left open takes everything back.
    pub(super) fn complete_exit(&mut self, signer: &PublicKey) -> Result<(), EscrowError> {
        self.require_committed()?;
        let p = self.providers.get(signer).ok_or(EscrowError::NotProvider)?;
        let since = p.exiting_since.ok_or(EscrowError::NotExiting)?;
        let handover = since + self.params.exit_notice_epochs;
        let final_at = self.params.final_after(handover.saturating_sub(1)) + 1;
        if self.epoch < final_at || p.settled < handover {
            return Err(EscrowError::NotFinal {
                up_to: handover,
                final_at,
            });
        }
        if p.tenures > 0 || p.stake.shares > 0 {
            return Err(EscrowError::TenuresOpen);
        }
        let p = self.providers.remove(signer).expect("checked above");
        let back = p.collateral + p.stake.locked + p.streamed;
        self.credit(signer, back);
        Ok(())
    }

    /// Commit: the signer's one commitment for the current epoch.
    pub(super) fn commit(
        &mut self,
        signer: &PublicKey,
        epoch: u64,
        root: &[u8; 32],
        leaves: u32,
        reveal: &[u8; 32],
        next: &[u8; 32],
    ) -> Result<(), EscrowError> {
        self.require_committed()?;
        if epoch != self.epoch {
            return Err(EscrowError::WrongEpoch {
                got: epoch,
                current: self.epoch,
            });
        }
        let p = self.providers.get(signer).ok_or(EscrowError::NotProvider)?;
        if let Some(since) = p.exiting_since {
            if epoch >= since + self.params.exit_notice_epochs {
                return Err(EscrowError::ProviderExiting);
            }
        }
        if self.commit_of(*signer, epoch).is_some() {
            return Err(EscrowError::AlreadyCommitted(epoch));
        }
        // A reveal counts only when it opens the previous commit; without one it could be
        // anything, and is not mixed in.
        let checked = match epoch
            .checked_sub(1)
            .and_then(|e| self.commit_of(*signer, e))
        {
            Some(prev) if crate::beacon::reveal_commitment(reveal) != prev.rand_commit => {
                return Err(EscrowError::BadReveal)
            }
            Some(_) => true,
            None => false,
        };
        if checked {
            let mut mix = crate::beacon::Mix(self.mix);
            mix.add(reveal);
            self.mix = mix.0;
        }
        self.books.insert(
            BookKey::commit(*signer, epoch),
            BookRecord::Commit(EpochCommit {
                root: *root,
                leaves,
                rand_commit: *next,
            }),
        );
        epochs::mark_good(
            &mut WordsMut {
                books: &mut self.books,
                provider: *signer,
            },
            epoch,
        );
        let p = self.providers.get_mut(signer).expect("checked above");
        p.last_commit = Some(epoch);
        p.miss_streak = 0;
        Ok(())
    }

    /// MarkMissed: `provider` owed samples for `epoch` through slot `slot` of `deal` and did not
    /// commit. One slash of its whole pool; at `max_misses` in a row its generation fails.
    pub(super) fn mark_missed(
        &mut self,
        signer: &PublicKey,
        provider: &PublicKey,
        epoch: u64,
        deal: &DealId,
        slot: u16,
    ) -> Result<(), EscrowError> {
        self.require_committed()?;
        let now = self.epoch;
        if epoch >= now {
            return Err(EscrowError::NotOver(epoch));
        }
        if now > epoch + self.params.dispute_epochs {
            return Err(EscrowError::WindowClosed {
                epoch,
                current: now,
            });
        }
        if !self.providers.contains_key(provider) {
            return Err(EscrowError::UnknownProvider(*provider));
        }
        if self.commit_of(*provider, epoch).is_some() {
            return Err(EscrowError::NotMissed(epoch));
        }
        let audit = BookKey::audit(*provider, epoch);
        if matches!(self.books.get(&audit), Some(BookRecord::Audit(a)) if a.marked) {
            return Err(EscrowError::AlreadyMarked(epoch));
        }
        self.slot(deal, slot)?;
        self.normalize_slot(deal, slot);
        if !self.owed(provider, epoch, deal, slot) {
            return Err(EscrowError::NotDue(epoch));
        }
        // Checks are done.
        let params = self.params.clone();
        let p = self.providers.get_mut(provider).expect("checked above");
        let slashed = p.stake.slash(params.slash_bps);
        p.miss_streak = match p.last_missed {
            Some(last) if last + 1 == epoch => p.miss_streak + 1,
            _ => 1,
        };
        p.last_missed = Some(epoch);
        let failed = p.miss_streak >= params.max_misses;
        let mut forfeit = 0;
        if failed {
            // Every tenure of this generation closes now; its collateral is gone.
            forfeit = p.stake.forfeit_all();
            let g = p.generation;
            match p.generations.iter_mut().find(|x| x.id == g) {
                Some(x) => x.end = Some(now),
                None => p.generations.push(Generation {
                    id: g,
                    end: Some(now),
                    rate: 0,
                }),
            }
            p.generation += 1;
            p.used = 0;
            p.miss_streak = 0;
        }
        let reward = bps(slashed, params.reward_bps)
            .max(params.min_reward)
            .min(slashed);
        self.forfeited = self.forfeited.saturating_add(slashed - reward + forfeit);
        self.credit(signer, reward);
        match self.books.get_or_default_audit(audit) {
            BookRecord::Audit(a) => a.marked = true,
            _ => unreachable!("audit keys hold audits"),
        }
        Ok(())
    }

    /// Whether `provider` owed samples of slot `slot` of `deal` in `epoch`: a tenure of its,
    /// open or closing, covered it (the slot has been normalized).
    fn owed(&self, provider: &PublicKey, epoch: u64, deal: &DealId, slot: u16) -> bool {
        let Some(d) = self.deals.get(deal) else {
            return false;
        };
        let s = &d.slots[slot as usize];
        let covers = |t: &Tenure| {
            t.holder == *provider
                && t.from <= epoch
                && epoch < t.to.unwrap_or_else(|| self.close_by_time(t, d.end_epoch))
        };
        s.tenure.iter().chain(&s.closing).any(covers)
    }

    /// SettleProvider: pays `provider` for its good epochs below `up_to`, all of them final.
    pub(super) fn settle(&mut self, provider: &PublicKey, up_to: u64) -> Result<(), EscrowError> {
        self.require_committed()?;
        let final_at = self.params.final_after(up_to.saturating_sub(1)) + 1;
        if up_to == 0 || self.epoch < final_at {
            return Err(EscrowError::NotFinal { up_to, final_at });
        }
        let p = self
            .providers
            .get(provider)
            .ok_or(EscrowError::UnknownProvider(*provider))?;
        if up_to <= p.settled {
            return Ok(());
        }
        if self.has_open_demands(provider) {
            return Err(EscrowError::DemandOpen);
        }
        let from = p.settled;
        let mut pay: Amount = 0;
        let mut rates = Vec::new();
        let mut applied = Vec::new();
        for g in &p.generations {
            let to = g.end.map_or(up_to, |end| end.min(up_to));
            if to <= from {
                rates.push((g.id, g.rate));
                continue;
            }
            let lo = BookKey::rate(*provider, g.id, from);
            let hi = BookKey::rate(*provider, g.id, to);
            let deltas: Vec<(u64, i128)> = self
                .books
                .map()
                .range(lo..hi)
                .filter_map(|(k, r)| match r {
                    BookRecord::Rate(d) => Some((k.epoch, *d)),
                    _ => None,
                })
                .collect();
            applied.extend(
                deltas
                    .iter()
                    .map(|(e, _)| BookKey::rate(*provider, g.id, *e)),
            );
            let walk = epochs::pay_walk(&self.words(*provider), g.rate, from, to, deltas)
                .ok_or(EscrowError::Overflow)?;
            pay = pay.checked_add(walk.pay).ok_or(EscrowError::Overflow)?;
            rates.push((g.id, walk.rate));
        }
        if pay > p.streamed {
            // The rules stream every price before it is earned: this would be a broken invariant.
            return Err(EscrowError::Overflow);
        }
        // Checks are done.
        for k in applied {
            self.books.remove(&k);
        }
        // Commits and audits of final, settled epochs are not needed any more.
        let stale: Vec<BookKey> = [BookKind::Commit, BookKind::Audit]
            .into_iter()
            .flat_map(|kind| {
                let lo = BookKey {
                    provider: *provider,
                    kind,
                    generation: 0,
                    epoch: 0,
                };
                let hi = BookKey { epoch: up_to, ..lo };
                self.books.map().range(lo..hi).map(|(k, _)| *k)
            })
            .collect();
        for k in stale {
            self.books.remove(&k);
        }
        let p = self.providers.get_mut(provider).expect("checked above");
        p.streamed -= pay;
        p.settled = up_to;
        for (id, rate) in rates {
            if let Some(g) = p.generations.iter_mut().find(|g| g.id == id) {
                g.rate = rate;
            }
        }
        self.credit(provider, pay);
        Ok(())
    }

    fn has_open_demands(&self, provider: &PublicKey) -> bool {
        let lo = BookKey::audit(*provider, 0);
        let hi = BookKey::audit(*provider, u64::MAX);
        self.books
            .map()
            .range(lo..=hi)
            .any(|(_, r)| matches!(r, BookRecord::Audit(a) if !a.demands.is_empty()))
    }

    /// Applies what time alone has done to slot `slot` of `deal` (a live deal): a pending slot
    /// past its deadline is freed, an open tenure whose deal or generation ended is closed, and
    /// closed tenures that are final are finalized. Idempotent: calling it sooner or later
    /// leaves the same state.
    pub(super) fn normalize_slot(&mut self, deal: &DealId, slot: u16) {
        let now = self.epoch;
        let Some(d) = self.deals.get(deal) else {
            return;
        };
        let (end, slot_len) = (d.end_epoch, d.terms.slot_len);
        let s = &d.slots[slot as usize];
        // A pending slot past its deadline: its holder loses it (and a claimant its collateral).
        if let SlotStatus::Pending { deadline, claimed } = s.status {
            if now > deadline {
                let holder = s.holder.expect("pending slots have a holder");
                let (shares, g) = (s.shares, s.shares_generation);
                let mut lost = 0;
                if let Some(p) = self.providers.get_mut(&holder) {
                    if p.generation == g {
                        if claimed {
                            lost = p.stake.unlock(shares);
                        }
                        p.used = p.used.saturating_sub(slot_len);
                    }
                }
                self.forfeited = self.forfeited.saturating_add(lost);
                let s = &mut self.deals.get_mut(deal).expect("found above").slots[slot as usize];
                free(s);
                s.shares = 0;
                s.failed_by = Some(holder);
            }
        }
        // An open tenure that time has closed.
        let d = self.deals.get(deal).expect("found above");
        let s = &d.slots[slot as usize];
        if let Some(t) = s.tenure {
            let close = self.close_by_time(&t, end);
            if close <= now {
                let gen_end = self
                    .providers
                    .get(&t.holder)
                    .and_then(|p| p.generation_end(t.generation));
                let failed = self
                    .providers
                    .get(&t.holder)
                    .is_some_and(|p| p.generation > t.generation);
                let price = s.price;
                let unstream = price * u128::from(end.saturating_sub(close));
                let shares = s.shares;
                let mut back = 0;
                if let Some(p) = self.providers.get_mut(&t.holder) {
                    p.streamed -= unstream;
                    if !failed {
                        back = p.stake.unlock(shares);
                        p.collateral += back;
                        p.used = p.used.saturating_sub(slot_len);
                    }
                }
                let _ = back;
                let d = self.deals.get_mut(deal).expect("found above");
                d.escrow += unstream;
                let s = &mut d.slots[slot as usize];
                s.tenure = None;
                s.shares = 0;
                s.closing.push(Tenure {
                    to: Some(close),
                    ..t
                });
                let holder = s.holder.take();
                s.proven = None;
                s.prove_from = u64::MAX;
                s.status = if close >= end && gen_end.is_none_or(|g| g >= end) {
                    SlotStatus::Ended
                } else {
                    if failed {
                        s.failed_by = holder;
                    }
                    s.bounty_due = false;
                    SlotStatus::Freed
                };
            }
        }
        self.finalize_closing(deal, slot);
    }

    /// Finalizes the closed tenures of a slot whose last epoch is final: the slot is credited
    /// with what they earned and the epochs that were not good are refunded to the deal.
    fn finalize_closing(&mut self, deal: &DealId, slot: u16) {
        let now = self.epoch;
        let params = self.params.clone();
        let Some(d) = self.deals.get(deal) else {
            return;
        };
        let s = &d.slots[slot as usize];
        let price = s.price;
        let mut done = Vec::new();
        for (i, t) in s.closing.iter().enumerate() {
            let to = t.to.expect("closing tenures are closed");
            let final_ = to == t.from || now > params.final_after(to - 1);
            if final_ && !self.has_open_demands(&t.holder) {
                let good = epochs::good(&self.words(t.holder), t.from, to);
                done.push((i, *t, to, good));
            }
        }
        for (i, t, to, good) in done.into_iter().rev() {
            let bad = (to - t.from) - good;
            let refund = price * u128::from(bad);
            if let Some(p) = self.providers.get_mut(&t.holder) {
                p.streamed -= refund;
                p.tenures = p.tenures.saturating_sub(1);
            }
            let d = self.deals.get_mut(deal).expect("found above");
            d.escrow += refund;
            let s = &mut d.slots[slot as usize];
            s.paid += price * u128::from(good);
            s.total_misses += bad;
            s.closing.remove(i);
        }
    }
}

impl books::Books {
    /// The audit record at `key`, made empty if there is none.
    fn get_or_default_audit(&mut self, key: BookKey) -> &mut BookRecord {
        if !matches!(self.get(&key), Some(BookRecord::Audit(_))) {
            self.insert(key, BookRecord::Audit(books::Audit::default()));
        }
        self.get_mut(&key).expect("inserted above")
    }
}
