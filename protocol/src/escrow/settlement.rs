//! The epoch boundary: pay proven slots, slash and count misses, free slots, end deals, hand
//! over the slots of providers whose exit notice ran out.

use super::*;

impl Escrow {
    /// Settles the ending epoch and enters the next one with `beacon`. Returns what happened.
    ///
    /// Under the committed rules nothing is swept: `beacon` is the entropy mixed into the next
    /// beacon with the epoch's reveals, and the boundary costs the same whatever the state holds.
    pub fn advance_epoch(&mut self, beacon: [u8; 32]) -> Vec<Event> {
        if self.params.rules == RulesVersion::Committed {
            self.epoch += 1;
            self.beacon = crate::beacon::next_beacon(self.epoch, &self.beacon, &self.mix, &beacon);
            self.mix = [0; 32];
            return Vec::new();
        }
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
                                let lost = Lost {
                                    deal: id,
                                    slot: j,
                                    slot_len: d.terms.slot_len,
                                    returned: 0,
                                    at_fault: true,
                                    reason: FreeReason::MissedProofs,
                                };
                                lost.free(s, holder, &mut released, &mut events);
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
                        let lost = Lost {
                            deal: id,
                            slot: j,
                            slot_len: d.terms.slot_len,
                            returned: 0,
                            at_fault: true,
                            reason: FreeReason::NotAccepted,
                        };
                        lost.free(s, holder, &mut released, &mut events);
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
                        let returned = if failing {
                            d.reserve = d.reserve.saturating_add(s.collateral);
                            0
                        } else {
                            s.collateral
                        };
                        s.collateral = 0;
                        let lost = Lost {
                            deal: id,
                            slot: j,
                            slot_len: d.terms.slot_len,
                            returned,
                            at_fault: failing,
                            reason: FreeReason::ProviderExit,
                        };
                        lost.free(s, holder, &mut released, &mut events);
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
                let refunded = wind_up(d, &mut self.forfeited);
                let (creator, object) = (d.terms.creator, d.terms.object);
                pay(&mut self.accounts, &creator, refunded);
                events.push(Event::DealEnded { deal: id, refunded });
                unlist_object(&mut self.objects, &object, &id);
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

/// A slot its holder loses at the epoch boundary.
struct Lost {
    deal: DealId,
    slot: u16,
    slot_len: u64,
    /// Collateral the holder gets back (the rest went to the reserve or was forfeited).
    returned: Amount,
    /// The holder failed it, and may never claim it back.
    at_fault: bool,
    reason: FreeReason,
}

impl Lost {
    /// Frees the slot, gives the holder back `returned` and the slot's space, and says so.
    fn free(
        self,
        s: &mut Slot,
        holder: PublicKey,
        released: &mut Vec<(PublicKey, Amount, u64)>,
        events: &mut Vec<Event>,
    ) {
        released.push((holder, self.returned, self.slot_len));
        free(s);
        if self.at_fault {
            s.failed_by = Some(holder);
        }
        events.push(Event::Freed {
            deal: self.deal,
            slot: self.slot,
            reason: self.reason,
        });
    }
}
