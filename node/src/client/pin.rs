//! Pinning: choose providers, open the deal, upload every slot to its provider and wait until
//! every one has accepted.

use super::dial::open_shard_stream;
use super::{ClientError, Result};
use crate::ledger::Settlement;
use crate::net::NetHandle;
use crate::wire::shard;
use atlas_protocol::escrow::{Escrow, Provider, SlotStatus, TxBody};
use atlas_protocol::manifest::VerifiedManifest;
use atlas_protocol::tree::{shard_level, Outboard, TreeShape};
use atlas_protocol::wire::{ShardRequest, ShardResponse};
use atlas_protocol::{DealId, Keypair, PublicKey};
use atlas_storage::slot_dir::{self, SlotDir};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a candidate provider may take to open a shard stream before it is passed over.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Shards sent ahead of the provider's acknowledgements, per slot.
const UPLOAD_WINDOW: usize = 8;

/// How long providers may take to accept their slots once the bytes are sent.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(120);

/// How long an upload to a provider that dropped (crashed, restarted, lost its connection) keeps
/// trying to resume before the pin fails. Each time the provider acknowledges a shard, the
/// window starts again.
const RESUME_WINDOW: Duration = Duration::from_secs(90);

/// First wait before reconnecting to a provider that dropped an upload; it doubles up to
/// `RETRY_MAX`.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

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
        return Err(ClientError::TooFewProviders(format!(
            "only {} of the {} registered providers can take a {}-byte slot at price <= {max_price}; {n} are needed (one per slot)",
            fit.len(),
            all.len(),
            slot_len
        )));
    }
    Ok(fit.into_iter().cloned().collect())
}

/// What a pin will cost, known before anything is paid.
pub struct Quote {
    /// The providers that answered, one per slot, with their open shard streams.
    chosen: Vec<(PublicKey, Provider, libp2p::Stream)>,
    /// The network the streams are on, to open them again if a provider drops.
    net: NetHandle,
    /// Sum of the chosen providers' prices for one slot for one epoch.
    pub per_epoch: u128,
}

impl std::fmt::Debug for Quote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quote")
            .field("providers", &self.chosen.len())
            .field("per_epoch", &self.per_epoch)
            .finish()
    }
}

/// Chooses `n` providers for an encoded object that answer now, cheapest first, and opens a
/// shard stream to each. Nothing is paid yet.
pub async fn quote(
    ledger: &dyn Settlement,
    net: &NetHandle,
    manifest: &VerifiedManifest,
    max_price: u128,
) -> Result<Quote> {
    let layout = manifest.layout();
    let n = layout.total_shards();
    let all = ledger.providers().await?;
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
                tracing::info!(provider = %k, error = %e, "provider unreachable; skipping it");
            }
            Err(_) => {
                unreachable += 1;
                tracing::info!(provider = %k, "provider did not answer in time; skipping it");
            }
        }
    }
    if chosen.len() < n {
        return Err(ClientError::TooFewProviders(format!(
            "only {} providers answered ({unreachable} registered ones did not); {n} are needed, one per slot",
            chosen.len()
        )));
    }
    let per_epoch = chosen
        .iter()
        .map(|(_, p, _)| Escrow::slot_price(p.price, layout.slot_len()))
        .sum();
    Ok(Quote {
        chosen,
        per_epoch,
        net: net.clone(),
    })
}

/// True for a failure that another stream to the same provider may not meet: the connection or
/// stream broke (a crash, a restart), or the provider was over a limit. A refusal of the bytes
/// themselves, or a provider that answers nonsense, is final.
fn resumable(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Io(_)
            | ClientError::Net(_)
            | ClientError::Stream { .. }
            | ClientError::Wire(_)
            | ClientError::ProviderBusy
    )
}

/// Uploads slot `slot` to `provider`, starting on `stream`. If the provider drops the upload
/// (it crashed and restarted, say), opens a new stream once it answers again and resumes at
/// the first shard it had not acknowledged (shards it stored are durable, and one sent twice
/// is stored once). Gives up after [`RESUME_WINDOW`] without an acknowledgement.
#[allow(clippy::too_many_arguments)]
async fn upload_resuming(
    net: &NetHandle,
    provider: &Provider,
    dir: &Path,
    manifest: &VerifiedManifest,
    deal: DealId,
    slot: u16,
    stream: libp2p::Stream,
    sent: Arc<AtomicU64>,
) -> Result<()> {
    let acked = AtomicU64::new(0);
    let mut stream = Some(stream);
    let mut wait = RETRY_FIRST;
    let mut progress_at = (tokio::time::Instant::now(), 0);
    loop {
        let outcome = match stream.take() {
            Some(s) => upload_slot(dir, manifest, deal, slot, s, &acked, &sent).await,
            None => {
                match tokio::time::timeout(PROBE_TIMEOUT, open_shard_stream(net, provider)).await {
                    Ok(Ok((_, s))) => {
                        stream = Some(s);
                        continue;
                    }
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(ClientError::Stream {
                        peer: "the provider".into(),
                        reason: "did not answer in time".into(),
                    }),
                }
            }
        };
        let e = match outcome {
            Ok(()) => return Ok(()),
            Err(e) if !resumable(&e) => return Err(e),
            Err(e) => e,
        };
        let now = tokio::time::Instant::now();
        let done = acked.load(Ordering::Relaxed);
        if done != progress_at.1 {
            progress_at = (now, done);
            wait = RETRY_FIRST;
        }
        if now.duration_since(progress_at.0) > RESUME_WINDOW {
            return Err(e);
        }
        tracing::info!(slot, acked = done, error = %e, retry_in = ?wait, "upload dropped; resuming");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RETRY_MAX);
    }
}

/// Streams the shards of slot `slot` from the encoded directory to its provider over `stream`,
/// from shard `acked` on; `acked` counts the shards acknowledged and `sent` their bytes.
pub async fn upload_slot(
    dir: &Path,
    manifest: &VerifiedManifest,
    deal: DealId,
    slot: u16,
    stream: libp2p::Stream,
    acked: &AtomicU64,
    sent: &AtomicU64,
) -> Result<()> {
    let layout = manifest.layout();
    let c = layout.shard_size();
    let shape = TreeShape::new(layout.slot_len())?;
    let level = shard_level(c);
    let ob_bytes = tokio::fs::read(slot_dir::outboard_path(dir, slot as usize)).await?;
    let outboard = Outboard::from_bytes(shape, &ob_bytes)?;
    let mut data = tokio::fs::File::open(slot_dir::data_path(dir, slot as usize)).await?;
    let from = acked.load(Ordering::Relaxed);
    tokio::io::AsyncSeekExt::seek(&mut data, std::io::SeekFrom::Start(from * c)).await?;
    let (mut rd, mut wr) = futures::AsyncReadExt::split(stream);
    // Up to UPLOAD_WINDOW shards are in flight: the provider verifies and stores one while the
    // next ones travel. The channel carries the stripes sent and not yet acknowledged.
    let (in_flight, mut acks) = tokio::sync::mpsc::channel::<u64>(UPLOAD_WINDOW);
    let stripes = layout.stripes();
    let writer = async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; c as usize];
        for stripe in from..stripes {
            data.read_exact(&mut buf).await?;
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
        Ok::<_, ClientError>(wr)
    };
    let reader = async move {
        while let Some(stripe) = acks.recv().await {
            match shard::read_response(&mut rd).await? {
                ShardResponse::Stored { .. } => {}
                ShardResponse::Busy => return Err(ClientError::ProviderBusy),
                ShardResponse::Error(reason) => {
                    return Err(ClientError::ShardRefused {
                        slot,
                        stripe,
                        reason,
                    })
                }
                other => {
                    return Err(ClientError::BadHolder(format!(
                        "answered a put with {other:?}"
                    )))
                }
            }
            acked.fetch_add(1, Ordering::Relaxed);
            sent.fetch_add(c, Ordering::Relaxed);
        }
        Ok(())
    };
    let (mut wr, ()) = tokio::try_join!(writer, reader)?;
    futures::AsyncWriteExt::close(&mut wr).await.ok();
    Ok(())
}

/// Opens a deal for an encoded directory with the quoted providers, uploads every slot in
/// parallel, and waits until every provider has accepted. Returns the deal id.
pub async fn pin(
    ledger: &dyn Settlement,
    key: &Keypair,
    dir: &Path,
    quote: Quote,
    epochs: u64,
    max_price: u128,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<DealId> {
    let slot_dir = SlotDir::open(dir)?;
    let manifest = slot_dir.manifest().clone();
    let layout = manifest.layout();
    let n = layout.total_shards();
    let (chosen, net) = (quote.chosen, quote.net);
    // The deal id comes from the nonce of the transaction that was included (a retry after a
    // nonce race signs again with a newer one).
    let sent = ledger
        .submit(
            key,
            TxBody::OpenDeal {
                manifest: manifest.signed().clone(),
                providers: chosen.iter().map(|(k, _, _)| *k).collect(),
                epochs,
                max_price,
            },
        )
        .await?;
    let deal = Escrow::deal_id(&key.public(), sent.nonce);

    let total = layout.slot_len() * n as u64;
    let done = Arc::new(AtomicU64::new(0));
    let mut uploads = tokio::task::JoinSet::new();
    for (j, (_, provider, stream)) in chosen.into_iter().enumerate() {
        let (dir, manifest, done, net) = (
            dir.to_path_buf(),
            manifest.clone(),
            done.clone(),
            net.clone(),
        );
        uploads.spawn(async move {
            upload_resuming(
                &net, &provider, &dir, &manifest, deal, j as u16, stream, done,
            )
            .await
            .map_err(|e| (j, e))
        });
    }
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            finished = uploads.join_next() => match finished {
                Some(result) => if let Err((j, e)) = result? {
                    tracing::warn!(slot = j, error = %e, "uploading a slot failed");
                    return Err(e);
                },
                None => break,
            },
            _ = tick.tick() => progress(done.load(Ordering::Relaxed), total),
        }
    }
    progress(done.load(Ordering::Relaxed), total);

    // Every provider accepts on the ledger once it holds its whole slot.
    let deadline = tokio::time::Instant::now() + ACCEPT_TIMEOUT;
    loop {
        let d = ledger.deal(deal).await?;
        let waiting: Vec<usize> = d
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !matches!(s.status, SlotStatus::Active { .. }))
            .map(|(j, _)| j)
            .collect();
        if waiting.is_empty() {
            return Ok(deal);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ClientError::NotAccepted(waiting));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
