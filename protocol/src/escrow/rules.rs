//! What each transaction does: [`Escrow::apply`]'s execution, one rule per transaction kind.

use super::*;

impl Escrow {
    pub(super) fn execute(&mut self, tx: &Tx) -> Result<(), EscrowError> {
        let signer = tx.signer;
        let committed = self.params.rules == RulesVersion::Committed;
        match &tx.body {
            TxBody::AcceptSlot { deal, slot } if committed => {
                self.accept_committed(&signer, deal, *slot)?
            }
            TxBody::ClaimSlot { deal, slot } if committed => {
                self.claim_committed(&signer, deal, *slot)?
            }
            TxBody::ReleaseSlot { deal, slot } if committed => {
                self.release_committed(&signer, deal, *slot)?
            }
            TxBody::Extend { deal, epochs } if committed => {
                self.extend_committed(&signer, deal, *epochs)?
            }
            TxBody::CancelDeal { deal } if committed => self.cancel_committed(&signer, deal)?,
            TxBody::ExitProvider if committed => self.exit_committed(&signer)?,
            TxBody::CloseDeal { deal } => self.close_deal(deal)?,
            TxBody::CompleteExit => self.complete_exit(&signer)?,
            TxBody::ClaimBounty { deal, slot } => self.claim_bounty(&signer, deal, *slot)?,
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
                        evm: None,
                        stake: pool::Pool::default(),
                        streamed: 0,
                        settled: self.epoch,
                        generation: 0,
                        generations: Vec::new(),
                        last_commit: None,
                        miss_streak: 0,
                        last_missed: None,
                        tenures: 0,
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
            TxBody::SubmitProof { .. } if self.params.rules == RulesVersion::Committed => {
                return Err(EscrowError::Retired)
            }
            TxBody::SubmitProof {
                deal,
                slot,
                epoch,
                proof,
            } => self.submit_proof(&signer, deal, *slot, *epoch, proof)?,
            TxBody::Commit {
                epoch,
                root,
                leaves,
                reveal,
                next,
            } => self.commit(&signer, *epoch, root, *leaves, reveal, next)?,
            TxBody::MarkMissed {
                provider,
                epoch,
                deal,
                slot,
            } => self.mark_missed(&signer, provider, *epoch, deal, *slot)?,
            TxBody::SettleProvider { provider, up_to } => self.settle(provider, *up_to)?,
            TxBody::FinalizeSlot { deal, slot } => {
                self.require_committed()?;
                self.slot(deal, *slot)?;
                self.normalize_slot(deal, *slot);
            }
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
                // The last provider to fail this slot may not claim it back (a claimant that
                // never delivers could otherwise hold it hostage claim after claim); it may claim
                // another slot of the deal, which it has no bytes of and must rebuild. Excluding
                // it from the whole deal let repeated outages exhaust a small network's spares.
                if s.failed_by == Some(signer) {
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
            TxBody::ReleaseSlot { deal, slot } => {
                let s = self.slot(deal, *slot)?;
                if s.holder != Some(signer) {
                    return Err(EscrowError::NotHolder);
                }
                if !matches!(
                    s.status,
                    SlotStatus::Active { .. } | SlotStatus::Pending { .. }
                ) {
                    return Err(EscrowError::WrongSlotState(s.status));
                }
                let slot_len = self.live_deal(deal)?.terms.slot_len;
                let slash_bps = self.params.slash_bps as u128;
                let d = self.deals.get_mut(deal).expect("live_deal found it");
                let s = &mut d.slots[*slot as usize];
                // Cheaper than missing proofs until freed: one miss's slash, to the reserve
                // that pays the repair.
                let penalty =
                    ceil_div(s.collateral.saturating_mul(slash_bps), BPS).min(s.collateral);
                let returned = s.collateral - penalty;
                s.collateral = 0;
                free(s);
                s.failed_by = Some(signer);
                d.reserve = d.reserve.saturating_add(penalty);
                match self.providers.get_mut(&signer) {
                    Some(p) => {
                        p.collateral = p.collateral.saturating_add(returned);
                        p.used = p.used.saturating_sub(slot_len);
                    }
                    None => self.credit(&signer, returned),
                }
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

    pub(super) fn live_deal(&self, deal: &DealId) -> Result<&Deal, EscrowError> {
        let d = self.deals.get(deal).ok_or(EscrowError::UnknownDeal)?;
        if d.ended {
            return Err(EscrowError::DealEnded);
        }
        Ok(d)
    }

    pub(super) fn slot(&self, deal: &DealId, slot: u16) -> Result<&Slot, EscrowError> {
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

    pub(super) fn check_capacity(&self, who: &PublicKey, len: u64) -> Result<(), EscrowError> {
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
        let (escrow, reserve) = self
            .params
            .deal_deposit(per_epoch, epochs)
            .ok_or(EscrowError::Overflow)?;
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
                shares: 0,
                shares_generation: 0,
                tenure: None,
                closing: Vec::new(),
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
}
