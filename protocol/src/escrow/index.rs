//! Look-ups over the live deals (by holder, by creator, with a freed slot), derived from the
//! deals and kept up to date from the ones that changed: not part of the state root.

use super::*;

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
pub(super) struct Indices {
    pub(super) by_holder: BTreeMap<PublicKey, BTreeSet<DealId>>,
    pub(super) by_creator: BTreeMap<PublicKey, BTreeSet<DealId>>,
    /// Live deals with a freed slot.
    pub(super) repairable: BTreeSet<DealId>,
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
pub(super) fn listed<'a>(
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
    pub(super) fn remove(&mut self, id: &DealId) {
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
    pub(super) fn is_current(&self, id: &DealId, d: &Deal) -> bool {
        let holds = |h: &PublicKey| d.slots.iter().any(|s| s.holder.as_ref() == Some(h));
        self.entries.get(id).is_some_and(|(_, holders)| {
            holders.iter().all(holds)
                && d.slots
                    .iter()
                    .filter_map(|s| s.holder.as_ref())
                    .all(|h| holders.contains(h))
        }) && self.repairable.contains(id) == d.slots.iter().any(|s| s.status == SlotStatus::Freed)
    }

    pub(super) fn insert(&mut self, id: DealId, d: &Deal) {
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
