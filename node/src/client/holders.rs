//! Finding what to read: the deal behind an id prefix, the live deals of an object, and per slot
//! the holder best placed to serve it.

use super::{manifest_of, ClientError, Result};
use crate::ledger::Settlement;
use atlas_protocol::escrow::{Deal, Provider, SlotStatus};
use atlas_protocol::wire::DealQuery;
use atlas_protocol::{DealId, IdPrefix, ObjectId, PublicKey};

/// Finds the deal for an object or deal id prefix: a live deal opened by the object's own creator
/// before any other (anyone may open a deal of a signed manifest; those never outrank the
/// creator's), then the one with the most active slots.
pub async fn find_deal(ledger: &dyn Settlement, prefix: &str) -> Result<(DealId, Deal)> {
    let parsed: IdPrefix = prefix.parse().map_err(|e: atlas_protocol::id::IdError| {
        ClientError::BadId(prefix.into(), e.to_string())
    })?;
    let prefix = parsed.as_str().to_string();
    let found = ledger.deals(DealQuery::Matching(prefix.clone())).await?;
    let objects: std::collections::BTreeSet<_> =
        found.iter().map(|(_, d)| d.terms.object).collect();
    if objects.len() > 1 {
        return Err(ClientError::Ambiguous {
            prefix,
            count: objects.len(),
        });
    }
    found
        .into_iter()
        .max_by_key(|(_, d)| {
            (
                !d.ended,
                manifest_of(d).is_ok_and(|m| m.manifest().creator == d.terms.creator),
                d.slots
                    .iter()
                    .filter(|s| matches!(s.status, SlotStatus::Active { .. }))
                    .count(),
                std::cmp::Reverse(d.terms.start_epoch),
            )
        })
        .ok_or(ClientError::NoMatch(prefix))
}

/// Every live deal of `object`.
pub async fn live_deals_of(
    ledger: &dyn Settlement,
    object: &ObjectId,
) -> Result<Vec<(DealId, Deal)>> {
    Ok(ledger
        .deals(DealQuery::Matching(object.to_string()))
        .await?
        .into_iter()
        .filter(|(_, d)| !d.ended && d.terms.object == *object)
        .collect())
}

/// For each slot of `object`, the provider best placed to serve it across every live deal of the
/// object: every shard is verified against the manifest's slot roots, so any deal's holder will
/// do, and a deal whose holders are strangers that never prove cannot hide the honest ones. A
/// holder whose slot was proven most recently comes first, then any other active one, then one
/// still fetching it.
pub async fn object_holders(
    ledger: &dyn Settlement,
    object: &ObjectId,
) -> Result<Vec<Option<Provider>>> {
    holders_among(ledger, &live_deals_of(ledger, object).await?).await
}

/// As [`object_holders`], over live deals of one object already fetched.
pub async fn holders_among(
    ledger: &dyn Settlement,
    deals: &[(DealId, Deal)],
) -> Result<Vec<Option<Provider>>> {
    let n = deals.first().map_or(0, |(_, d)| d.slots.len());
    let mut best: Vec<Option<((u8, u64), PublicKey)>> = vec![None; n];
    for (_, d) in deals {
        for (j, s) in d.slots.iter().enumerate().take(n) {
            let rank = match (s.holder, s.status) {
                (Some(_), SlotStatus::Active { misses: 0 }) => (3, s.proven.unwrap_or(0)),
                (Some(_), SlotStatus::Active { .. }) => (2, s.proven.unwrap_or(0)),
                (Some(_), SlotStatus::Pending { .. }) => (1, 0),
                _ => continue,
            };
            let holder = s.holder.expect("matched above");
            if best[j].is_none_or(|(r, _)| rank > r) {
                best[j] = Some((rank, holder));
            }
        }
    }
    let mut holders = Vec::with_capacity(n);
    for b in best {
        holders.push(match b {
            Some((_, h)) => ledger.provider(&h).await?,
            None => None,
        });
    }
    Ok(holders)
}

/// Active slots minus the k needed: how many more holders the object may lose.
pub fn margin(d: &Deal) -> Result<i64> {
    let k = manifest_of(d)?.layout().data_shards() as i64;
    let active = d
        .slots
        .iter()
        .filter(|s| matches!(s.status, SlotStatus::Active { .. }))
        .count() as i64;
    Ok(active - k)
}
