//! Answering requests: everything from the state the next block will have, so what a submitter
//! was told is accepted shows at once (its nonce, a deal it opened). Listings are paged, at most
//! [`MAX_PAGE_ITEMS`] records and about [`MAX_PAGE_BYTES`] an answer.

use super::sequencer::Ledger;
use super::SequencerError;
use atlas_protocol::escrow::{Deal, DealIndex};
use atlas_protocol::wire::{
    DealQuery, LedgerRequest, LedgerResponse, MAX_PAGE_BYTES, MAX_PAGE_ITEMS,
};
use serde::Serialize;
use std::ops::Bound;

/// A read of the ledger's database, to run on a blocking thread.
pub type StoredRead = Box<dyn FnOnce() -> LedgerResponse + Send>;

impl Ledger {
    /// The database read that answers `request`, when the state cannot: a block, or a deal that
    /// ended (and so left the state for the archive). Both are immutable once written, so the
    /// answer is the same whenever the read runs.
    pub fn stored_read(&self, request: &LedgerRequest) -> Option<StoredRead> {
        let store = self.store.clone();
        let failed =
            |e: atlas_storage::ledger_store::LedgerStoreError| LedgerResponse::Error(e.to_string());
        match request {
            LedgerRequest::Block(height) => {
                let height = *height;
                Some(Box::new(move || {
                    store
                        .block(height)
                        .map_or_else(failed, LedgerResponse::Block)
                }))
            }
            LedgerRequest::Deal(id) if self.state.deal(id).is_none() => {
                let id = *id;
                Some(Box::new(move || {
                    store
                        .archived_deal(&id)
                        .map_or_else(failed, LedgerResponse::Deal)
                }))
            }
            _ => None,
        }
    }

    /// Answers a request now, or returns `None` if it waits for the next block.
    pub fn handle(
        &mut self,
        id: u64,
        request: LedgerRequest,
    ) -> Result<Option<LedgerResponse>, SequencerError> {
        // A block or an ended deal is read from the database, as the service does off its task.
        if let Some(read) = self.stored_read(&request) {
            return Ok(Some(read()));
        }
        // Everything else answers from the state the next block will have, so what a submitter
        // was told is accepted shows at once (its nonce, a deal it opened).
        let s = &self.state;
        Ok(Some(match request {
            LedgerRequest::Submit(signed) => match self.accept(signed) {
                Ok(tx_id) => {
                    self.waiting.push((id, tx_id));
                    return Ok(None);
                }
                Err(reason) => LedgerResponse::Refused(reason),
            },
            // Answered once the transaction is durable (`sync_mempool`), so an accepted
            // transaction is in a block after any restart.
            LedgerRequest::Enqueue(signed) => match self.accept(signed) {
                Ok(tx_id) => {
                    self.held.push((id, LedgerResponse::Accepted { tx_id }));
                    return Ok(None);
                }
                Err(reason) => LedgerResponse::Refused(reason),
            },
            LedgerRequest::Status => LedgerResponse::Status(Box::new(self.status())),
            // The latest accepted view, so a submitter's next nonce counts queued transactions.
            LedgerRequest::Account(key) => LedgerResponse::Account(s.account(&key)),
            LedgerRequest::Provider(key) => LedgerResponse::Provider(s.provider(&key).cloned()),
            // A live deal (an ended one was read from the archive above).
            LedgerRequest::Deal(id) => LedgerResponse::Deal(s.deal(&id).cloned()),
            LedgerRequest::Block(_) => unreachable!("a block is always a stored read"),
            LedgerRequest::ProviderPage { after } => {
                let from = match after {
                    Some(k) => Bound::Excluded(k),
                    None => Bound::Unbounded,
                };
                let (items, next) = page(s.providers().range((from, Bound::Unbounded)), |_| true);
                LedgerResponse::ProviderPage { items, next }
            }
            LedgerRequest::DealPage { query, after } => {
                let (items, next) = self.deal_page(query, after);
                LedgerResponse::DealPage { items, next }
            }
            LedgerRequest::Providers
            | LedgerRequest::DealsOf(_)
            | LedgerRequest::HeldBy(_)
            | LedgerRequest::Find(_)
            | LedgerRequest::Repairable => LedgerResponse::Error(
                "this listing request is retired; ask for it page by page (ProviderPage, DealPage)"
                    .into(),
            ),
        }))
    }

    /// One page of the live deals `query` selects. The provider, creator and repair queries are
    /// answered from the escrow's indices, so their cost is the page's, not the state's.
    fn deal_page(
        &mut self,
        query: DealQuery,
        after: Option<atlas_protocol::DealId>,
    ) -> (
        Vec<(atlas_protocol::DealId, Deal)>,
        Option<atlas_protocol::DealId>,
    ) {
        let s = &mut self.state;
        match query {
            DealQuery::OfCreator(c) => {
                page(s.indexed_deals(DealIndex::OfCreator(c), after), |_| true)
            }
            DealQuery::HeldBy(p) => page(s.indexed_deals(DealIndex::HeldBy(p), after), |_| true),
            DealQuery::Repairable => page(s.indexed_deals(DealIndex::Repairable, after), |_| true),
            DealQuery::Matching(prefix) => {
                let from = match after {
                    Some(k) => Bound::Excluded(k),
                    None => Bound::Unbounded,
                };
                let prefix = prefix.to_ascii_lowercase();
                // A full object id is looked up in the object index, not by a scan.
                match prefix.parse::<atlas_protocol::ObjectId>() {
                    Ok(object) if prefix.len() == 64 => {
                        let ids: Vec<_> = s.deals_of_object(&object).map(|(id, _)| *id).collect();
                        page(s.deals().range((from, Bound::Unbounded)), |(id, _)| {
                            ids.contains(id)
                        })
                    }
                    _ => page(s.deals().range((from, Bound::Unbounded)), |(id, d)| {
                        d.terms.object.to_string().starts_with(&prefix)
                            || id.to_string().starts_with(&prefix)
                    }),
                }
            }
        }
    }
}

/// Takes the records of `items` that `keep` selects, up to a page's bounds; the second value is
/// the cursor to continue from when the page is full.
fn page<'a, K: Copy + Serialize + 'a, V: Clone + Serialize + 'a>(
    items: impl Iterator<Item = (&'a K, &'a V)>,
    mut keep: impl FnMut((&K, &V)) -> bool,
) -> (Vec<(K, V)>, Option<K>) {
    let mut out = Vec::new();
    let mut bytes = 0;
    for (k, v) in items {
        if !keep((k, v)) {
            continue;
        }
        if out.len() == MAX_PAGE_ITEMS || bytes >= MAX_PAGE_BYTES {
            let next = out.last().map(|(k, _): &(K, V)| *k);
            return (out, next);
        }
        bytes += postcard::to_stdvec(v).map_or(0, |b| b.len());
        out.push((*k, v.clone()));
    }
    (out, None)
}
