//! Stalled uploads: a hostile peer opens many shard streams to one provider, each announcing a
//! full 4 MiB shard body for a slot really assigned to that provider, sends part of the body and
//! goes silent. What the provider may spend on them is bounded (streams and body bytes per peer,
//! body bytes in all); an honest creator's upload must still go through. The benchmark and the
//! adversarial tests both play it.

use crate::hostile::Hostile;
use atlas_protocol::escrow::TxBody;
use atlas_protocol::tree::{shard_level, Outboard, TreeShape};
use atlas_protocol::wire::{self, LedgerRequest, LedgerResponse, ShardRequest};
use atlas_protocol::PublicKey;
use atlas_storage::slot_dir;
use futures::AsyncWriteExt as _;
use std::path::Path;
use std::time::Duration;

/// What the attacker's streams got.
#[derive(Debug)]
pub struct Stalled {
    /// Streams whose header and first body bytes the provider took.
    pub taken: usize,
    /// Streams the provider refused or closed at once.
    pub refused: usize,
    /// The streams, kept open (and silent) until dropped, and the node they run on.
    pub streams: Vec<libp2p::Stream>,
    pub attacker: Hostile,
}

/// The bytes of its body each stalled stream sends before going silent.
const SENT: usize = 1 << 20;

/// Opens `count` stalled `Put` streams to the provider whose peer id is `victim`, for a slot of
/// a deal the attacker opens itself (on `providers`, the victim among them) so that the slot is
/// really assigned to the victim and waiting for its bytes.
pub async fn stall(
    ledger_addr: &str,
    victim: &str,
    providers: usize,
    scratch: &Path,
    count: usize,
) -> anyhow::Result<Stalled> {
    let h = Hostile::start(&ledger_addr.parse()?).await?;
    let attacker = crate::new_key();
    h.must(
        &attacker,
        TxBody::Faucet {
            amount: 1_000_000_000,
        },
    )
    .await?;
    // One 4 MiB shard a slot, the largest a layout allows: each Put announces 4 MiB.
    let shard = atlas_protocol::layout::MAX_SHARD_SIZE;
    let video = scratch.join("attacker.bin");
    crate::random_file(&video, (4 * shard) as usize, 3);
    let enc = scratch.join("attacker-enc");
    let manifest = crate::encode(&attacker, &video, &enc, 4, 2, shard)?;
    let mut keys: Vec<(PublicKey, atlas_protocol::escrow::Provider)> =
        match h.ask(LedgerRequest::ProviderPage { after: None }).await? {
            LedgerResponse::ProviderPage { items, .. } => items,
            other => anyhow::bail!("no provider page: {other:?}"),
        };
    let victim_peer: libp2p::PeerId = victim.parse()?;
    let at = keys
        .iter()
        .position(|(_, p)| p.peer_id == victim_peer.to_bytes())
        .ok_or_else(|| anyhow::anyhow!("the victim is not registered"))?;
    // The victim first: it gets slot 0.
    keys.swap(0, at);
    keys.truncate(providers);
    let victim_record = keys[0].1.clone();
    let nonce = h.nonce(&attacker.public()).await?;
    let open = TxBody::OpenDeal {
        manifest: manifest.signed().clone(),
        providers: keys.iter().map(|(k, _)| *k).collect(),
        epochs: 5,
        max_price: u128::MAX,
    };
    match h.ask(h.sign(&attacker, nonce, open)?).await? {
        LedgerResponse::Included { .. } => {}
        other => anyhow::bail!("the attacker's deal was not opened: {other:?}"),
    }
    let deal = atlas_protocol::escrow::Escrow::deal_id(&attacker.public(), nonce);
    let shape = TreeShape::new(manifest.layout().slot_len())?;
    let outboard = Outboard::from_bytes(shape, &std::fs::read(slot_dir::outboard_path(&enc, 0))?)?;
    let siblings = if shard_level(shard) == shape.height() {
        Vec::new()
    } else {
        outboard.siblings(shard_level(shard), 0)?
    };
    let header = wire::encode(&ShardRequest::Put {
        deal,
        slot: 0,
        stripe: 0,
        len: shard,
        siblings,
    });
    let body = vec![0x5a; SENT];
    let mut taken = 0;
    let mut refused = 0;
    let mut streams = Vec::new();
    for _ in 0..count {
        let Ok(mut stream) = h.shard_stream(&victim_record).await else {
            refused += 1;
            continue;
        };
        let send = async {
            stream
                .write_all(&(header.len() as u32).to_be_bytes())
                .await?;
            stream.write_all(&header).await?;
            stream.write_all(&body).await?;
            stream.flush().await
        };
        // A provider that does not read the body (it answered Busy, or it holds its share of
        // bodies already) leaves the write waiting on flow control: refused.
        match tokio::time::timeout(Duration::from_secs(2), send).await {
            Ok(Ok(())) => taken += 1,
            _ => refused += 1,
        }
        streams.push(stream);
    }
    Ok(Stalled {
        taken,
        refused,
        streams,
        attacker: h,
    })
}
