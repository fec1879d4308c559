//! The creator's side: pin an encoded object to providers, and read any object back from its
//! holders, verified.

use crate::client::LedgerClient;
use crate::net::{NetHandle, PeerId};
use crate::shard;
use anyhow::{anyhow, bail, Context as _, Result};
use atlas_protocol::escrow::{Deal, Escrow, Provider, SlotStatus, TxBody};
use atlas_protocol::manifest::VerifiedManifest;
use atlas_protocol::tree::{shard_level, Outboard, TreeShape};
use atlas_protocol::wire::{DealQuery, LedgerRequest, LedgerResponse, ShardRequest, ShardResponse};
use atlas_protocol::{DealId, Keypair, PublicKey};
use atlas_storage::slot_dir::{self, SlotDir};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a candidate provider may take to open a shard stream before it is passed over.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Shards sent ahead of the provider's acknowledgements, per slot.
const UPLOAD_WINDOW: usize = 8;

/// Registered providers, from the ledger.
pub async fn providers(ledger: &LedgerClient) -> Result<Vec<(PublicKey, Provider)>> {
    ledger.providers().await
}

/// The providers that can hold a slot of `slot_len` at no more than `max_price`, best first:
/// cheapest, then most free space. Fails if fewer than `n` qualify.
pub fn choose_providers(
    all: &[(PublicKey, Provider)],
    n: usize,
    slot_len: u64,
    max_price: u128,
    exclude: &[PublicKey],
) -> Result<Vec<(PublicKey, Provider)>> {
    let mut fit: Vec<&(PublicKey, Provider)> = all
        .iter()
        .filter(|(k, p)| {
            p.exiting_since.is_none()
                && p.price <= max_price
                && p.capacity.saturating_sub(p.used) >= slot_len
                && !exclude.contains(k)
        })
        .collect();
    fit.sort_by_key(|(k, p)| (p.price, std::cmp::Reverse(p.capacity - p.used), *k));
    if fit.len() < n {
        bail!(
            "only {} of the {} registered providers can take a {}-byte slot at price <= {max_price}; {n} are needed (one per slot)",
            fit.len(),
            all.len(),
            slot_len
        );
    }
    Ok(fit.into_iter().cloned().collect())
}

/// Addresses a provider registered, parsed; TCP ones only when it has any. A dial tries every
/// address and fails only when all have, and QUIC to a dead host waits out its handshake timeout
/// while TCP is refused at once: a reader facing dead holders must learn so quickly.
pub fn provider_addrs(p: &Provider) -> Vec<crate::net::Multiaddr> {
    let all: Vec<crate::net::Multiaddr> = p.addrs.iter().filter_map(|a| a.parse().ok()).collect();
    let is_tcp = |a: &crate::net::Multiaddr| {
        a.iter()
            .any(|p| matches!(p, libp2p::multiaddr::Protocol::Tcp(_)))
    };
    if all.iter().any(is_tcp) {
        all.into_iter().filter(is_tcp).collect()
    } else {
        all
    }
}

/// Opens a shard stream to a provider.
pub async fn open_shard_stream(
    net: &NetHandle,
    provider: &Provider,
) -> Result<(PeerId, libp2p::Stream)> {
    let peer = PeerId::from_bytes(&provider.peer_id).context("provider has an invalid peer id")?;
    net.connect(peer, provider_addrs(provider)).await?;
    let stream = net
        .streams()
        .open_stream(peer, shard::PROTOCOL)
        .await
        .map_err(|e| anyhow!("cannot open a shard stream to {peer}: {e}"))?;
    Ok((peer, stream))
}

/// Streams every shard of slot `slot` from the encoded directory to its provider over `stream`.
pub async fn upload_slot(
    dir: &Path,
    manifest: &VerifiedManifest,
    deal: DealId,
    slot: u16,
    stream: libp2p::Stream,
    sent: Arc<AtomicU64>,
) -> Result<()> {
    let layout = manifest.layout();
    let c = layout.shard_size();
    let shape = TreeShape::new(layout.slot_len())?;
    let level = shard_level(c);
    let ob_bytes = tokio::fs::read(slot_dir::outboard_path(dir, slot as usize)).await?;
    let outboard = Outboard::from_bytes(shape, &ob_bytes)?;
    let data = std::fs::File::open(slot_dir::data_path(dir, slot as usize))?;
    let (mut rd, mut wr) = futures::AsyncReadExt::split(stream);
    // Up to UPLOAD_WINDOW shards are in flight: the provider verifies and stores one while the
    // next ones travel. The channel carries the stripes sent and not yet acknowledged.
    let (in_flight, mut acks) = tokio::sync::mpsc::channel::<u64>(UPLOAD_WINDOW);
    let stripes = layout.stripes();
    let writer = async move {
        let mut buf = vec![0u8; c as usize];
        for stripe in 0..stripes {
            data.read_exact_at(&mut buf, stripe * c)?;
            let siblings = if level == shape.height() {
                Vec::new()
            } else {
                outboard.siblings(level, stripe)?
            };
            if in_flight.send(stripe).await.is_err() {
                break; // the reader stopped on an error, which it reports
            }
            shard::write_request(
                &mut wr,
                &ShardRequest::Put {
                    deal,
                    slot,
                    stripe,
                    len: c,
                    siblings,
                },
            )
            .await?;
            futures::AsyncWriteExt::write_all(&mut wr, &buf).await?;
            futures::AsyncWriteExt::flush(&mut wr).await?;
        }
        drop(in_flight);
        anyhow::Ok(wr)
    };
    let reader = async move {
        while let Some(stripe) = acks.recv().await {
            match shard::read_response(&mut rd).await? {
                ShardResponse::Stored { .. } => {}
                ShardResponse::Error(e) => {
                    bail!("provider refused shard {stripe} of slot {slot}: {e}")
                }
                other => bail!("unexpected provider answer: {other:?}"),
            }
            sent.fetch_add(c, Ordering::Relaxed);
        }
        anyhow::Ok(())
    };
    let (wr, ()) = tokio::try_join!(writer, reader)?;
    let mut wr = wr;
    futures::AsyncWriteExt::close(&mut wr).await.ok();
    Ok(())
}

/// Opens a deal for an encoded directory, uploads every slot in parallel, and waits until every
/// provider has accepted. Returns the deal id.
pub async fn pin(
    ledger: &LedgerClient,
    net: &NetHandle,
    key: &Keypair,
    dir: &Path,
    epochs: u64,
    max_price: u128,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<DealId> {
    let slot_dir = SlotDir::open(dir)?;
    let manifest = slot_dir.manifest().clone();
    let layout = manifest.layout();
    let n = layout.total_shards();
    let all = providers(ledger).await?;
    let candidates = choose_providers(&all, n, layout.slot_len(), max_price, &[])?;
    // Registered is not the same as up: take the best `n` that answer, with their streams open.
    let mut chosen = Vec::with_capacity(n);
    let mut unreachable = 0;
    for (k, p) in candidates {
        if chosen.len() == n {
            break;
        }
        match tokio::time::timeout(PROBE_TIMEOUT, open_shard_stream(net, &p)).await {
            Ok(Ok((_, stream))) => chosen.push((k, p, stream)),
            Ok(Err(e)) => {
                unreachable += 1;
                tracing::info!(provider = %k, error = %format!("{e:#}"), "provider unreachable; skipping it");
            }
            Err(_) => {
                unreachable += 1;
                tracing::info!(provider = %k, "provider did not answer in time; skipping it");
            }
        }
    }
    if chosen.len() < n {
        bail!(
            "only {} providers answered ({unreachable} registered ones did not); {n} are needed, one per slot",
            chosen.len()
        );
    }
    // The deal id comes from the nonce of the transaction that was included (a retry after a
    // nonce race signs again with a newer one).
    let (_, nonce) = ledger
        .submit_tx(
            key,
            TxBody::OpenDeal {
                manifest: manifest.signed().clone(),
                providers: chosen.iter().map(|(k, _, _)| *k).collect(),
                epochs,
                max_price,
            },
        )
        .await?;
    let deal = Escrow::deal_id(&key.public(), nonce);

    let total = layout.slot_len() * n as u64;
    let sent = Arc::new(AtomicU64::new(0));
    let mut uploads = tokio::task::JoinSet::new();
    for (j, (_, _, stream)) in chosen.into_iter().enumerate() {
        let (dir, manifest, sent) = (dir.to_path_buf(), manifest.clone(), sent.clone());
        uploads.spawn(async move {
            upload_slot(&dir, &manifest, deal, j as u16, stream, sent)
                .await
                .with_context(|| format!("uploading slot {j}"))
        });
    }
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            done = uploads.join_next() => match done {
                Some(result) => result??,
                None => break,
            },
            _ = tick.tick() => progress(sent.load(Ordering::Relaxed), total),
        }
    }
    progress(sent.load(Ordering::Relaxed), total);

    // Every provider accepts on the ledger once it holds its whole slot.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let d = deal_info(ledger, deal).await?;
        if d.slots
            .iter()
            .all(|s| matches!(s.status, SlotStatus::Active { .. }))
        {
            return Ok(deal);
        }
        if tokio::time::Instant::now() > deadline {
            let waiting: Vec<usize> = d
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !matches!(s.status, SlotStatus::Active { .. }))
                .map(|(j, _)| j)
                .collect();
            bail!(
                "slots {waiting:?} were uploaded but not accepted on the ledger within 2 minutes"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A deal from the ledger.
pub async fn deal_info(ledger: &LedgerClient, deal: DealId) -> Result<Deal> {
    match ledger.request(LedgerRequest::Deal(deal)).await? {
        LedgerResponse::Deal(Some(d)) => Ok(d),
        LedgerResponse::Deal(None) => bail!("deal {} is not on the ledger", deal.short()),
        other => bail!("unexpected ledger answer: {other:?}"),
    }
}

/// Finds the deal for an object or deal id prefix: a live deal opened by the object's own creator
/// before any other (anyone may open a deal of a signed manifest; those never outrank the
/// creator's), then the one with the most active slots.
pub async fn find_deal(ledger: &LedgerClient, prefix: &str) -> Result<(DealId, Deal)> {
    let prefix: atlas_protocol::IdPrefix = prefix.parse()?;
    let found = ledger
        .deals(DealQuery::Matching(prefix_string(&prefix)))
        .await?;
    let objects: std::collections::BTreeSet<_> =
        found.iter().map(|(_, d)| d.terms.object).collect();
    if objects.len() > 1 {
        bail!(
            "'{}' matches {} objects; give more of the id",
            prefix_string(&prefix),
            objects.len()
        );
    }
    found
        .into_iter()
        .max_by_key(|(_, d)| {
            (
                !d.ended,
                d.terms
                    .manifest
                    .verify()
                    .is_ok_and(|m| m.manifest().creator == d.terms.creator),
                d.slots
                    .iter()
                    .filter(|s| matches!(s.status, SlotStatus::Active { .. }))
                    .count(),
                std::cmp::Reverse(d.terms.start_epoch),
            )
        })
        .with_context(|| format!("no object or deal matches '{}'", prefix_string(&prefix)))
}

fn prefix_string(p: &atlas_protocol::IdPrefix) -> String {
    p.as_str().to_string()
}

pub use crate::fetch::NetShardSource;

/// Every live deal of `object`, from the ledger.
pub async fn live_deals_of(
    ledger: &LedgerClient,
    object: &atlas_protocol::ObjectId,
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
    ledger: &LedgerClient,
    object: &atlas_protocol::ObjectId,
) -> Result<Vec<Option<Provider>>> {
    holders_among(ledger, &live_deals_of(ledger, object).await?).await
}

/// As [`object_holders`], over live deals of one object already fetched.
pub async fn holders_among(
    ledger: &LedgerClient,
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
            Some((_, h)) => match ledger.request(LedgerRequest::Provider(h)).await? {
                LedgerResponse::Provider(p) => p,
                _ => None,
            },
            None => None,
        });
    }
    Ok(holders)
}

/// Active slots minus the k needed: how many more holders the object may lose.
pub fn margin(d: &Deal) -> Result<i64> {
    let k = d
        .terms
        .manifest
        .verify()
        .map_err(|e| anyhow!("deal manifest: {e}"))?
        .layout()
        .data_shards() as i64;
    let active = d
        .slots
        .iter()
        .filter(|s| matches!(s.status, SlotStatus::Active { .. }))
        .count() as i64;
    Ok(active - k)
}
