//! Reading shards from their holders: one pipelined lane per slot, so the shards of a stripe come
//! from k holders at once and the next stripes are already on the way while one is decoded.
//!
//! A lane owns one `/atlas/shard/1` stream. Its writer sends `Get` requests as the decoder asks or
//! prefetches; its reader takes the answers in the same order, verifies each shard against the slot
//! root and hands it over. A holder that fails, stalls or lies loses its lane for the rest of the
//! read; the decoder then uses parity.

use super::dial::open_shard_stream;
use super::{ClientError, Result};
use crate::net::NetHandle;
use crate::wire::shard;
use atlas_protocol::erasure::ShardSource;
use atlas_protocol::escrow::Provider;
use atlas_protocol::manifest::VerifiedManifest;
use atlas_protocol::tree::{verify_shard, TreeShape};
use atlas_protocol::wire::{ShardRequest, ShardResponse};
use atlas_protocol::ObjectId;
use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a holder may take to open a stream or to answer one request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Stripes a lane may have asked for and not yet handed over. The decoder looks at most 16
/// stripes ahead, and a pooled reader may still have one earlier read's prefetches in flight, so
/// a lane that reaches this is broken and is given up (never waited on, which could deadlock).
const LANE_DEPTH: usize = 64;

/// Reads shards from their holders over `/atlas/shard/1`, verifying each against its slot root.
/// Used from a blocking thread: it drives the async network with `Handle::block_on`.
pub struct NetShardSource {
    rt: tokio::runtime::Handle,
    net: NetHandle,
    manifest: VerifiedManifest,
    shape: TreeShape,
    holders: Vec<Option<Provider>>,
    lanes: Vec<Option<Lane>>,
    failed: Vec<bool>,
}

impl std::fmt::Debug for NetShardSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NetShardSource({})", self.manifest.id().short())
    }
}

/// A verified shard, or why the holder could not give one.
type Answer = (u64, Result<Vec<u8>>);

/// One holder's pipelined stream.
struct Lane {
    requests: mpsc::Sender<u64>,
    answers: mpsc::Receiver<Answer>,
    /// Stripes asked for and not yet answered, in the order asked.
    asked: VecDeque<u64>,
    /// Answers that came before the one being waited for (a stripe asked late, say parity for
    /// a stripe whose data holder just failed, is answered after the prefetched ones).
    early: BTreeMap<u64, Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a lane needs to check what its holder sends.
struct Check {
    object: ObjectId,
    slot: u16,
    shape: TreeShape,
    root: blake3::Hash,
    shard_size: u64,
}

impl NetShardSource {
    pub fn new(
        rt: tokio::runtime::Handle,
        net: NetHandle,
        manifest: VerifiedManifest,
        holders: Vec<Option<Provider>>,
    ) -> Result<Self> {
        let shape = TreeShape::new(manifest.layout().slot_len())?;
        let n = holders.len();
        Ok(Self {
            rt,
            net,
            manifest,
            shape,
            holders,
            lanes: (0..n).map(|_| None).collect(),
            failed: vec![false; n],
        })
    }

    /// Slots whose holder could not serve.
    pub fn failed_slots(&self) -> Vec<usize> {
        (0..self.failed.len()).filter(|&j| self.failed[j]).collect()
    }

    /// The lane to slot `slot`'s holder, opened on first use; `None` if it has none or failed.
    fn lane(&mut self, slot: usize) -> Option<&mut Lane> {
        if self.failed[slot] {
            return None;
        }
        if self.lanes[slot].is_none() {
            let Some(provider) = self.holders[slot].clone() else {
                self.failed[slot] = true;
                return None;
            };
            let check = Check {
                object: self.manifest.id(),
                slot: slot as u16,
                shape: self.shape,
                root: self.manifest.slot_root(slot),
                shard_size: self.manifest.layout().shard_size(),
            };
            let (requests, asks) = mpsc::channel(LANE_DEPTH);
            let (answer, answers) = mpsc::channel(LANE_DEPTH);
            let task = self
                .rt
                .spawn(run_lane(self.net.clone(), provider, check, asks, answer));
            self.lanes[slot] = Some(Lane {
                requests,
                answers,
                asked: VecDeque::new(),
                early: BTreeMap::new(),
                task,
            });
        }
        self.lanes[slot].as_mut()
    }

    /// Hands a verified shard to the decoder.
    fn deliver(&mut self, slot: usize, bytes: Vec<u8>, buf: &mut [u8]) -> bool {
        if bytes.len() != buf.len() {
            self.give_up(slot);
            return false;
        }
        buf.copy_from_slice(&bytes);
        true
    }

    fn give_up(&mut self, slot: usize) {
        self.failed[slot] = true;
        self.lanes[slot] = None;
    }

    /// Asks for `(stripe, slot)` unless already asked; false if the holder is gone.
    fn ask(&mut self, stripe: u64, slot: usize) -> bool {
        let Some(lane) = self.lane(slot) else {
            return false;
        };
        if lane.asked.contains(&stripe) || lane.early.contains_key(&stripe) {
            return true;
        }
        if lane.requests.try_send(stripe).is_err() {
            self.give_up(slot);
            return false;
        }
        lane.asked.push_back(stripe);
        true
    }
}

impl ShardSource for NetShardSource {
    fn read_verified(&mut self, stripe: u64, slot: usize, buf: &mut [u8]) -> std::io::Result<bool> {
        if !self.ask(stripe, slot) {
            return Ok(false);
        }
        let rt = self.rt.clone();
        let lane = self.lanes[slot].as_mut().expect("asked above");
        // Stripes before this one were prefetched and are no longer needed.
        lane.early = lane.early.split_off(&stripe);
        if let Some(bytes) = lane.early.remove(&stripe) {
            return Ok(self.deliver(slot, bytes, buf));
        }
        loop {
            let lane = self.lanes[slot].as_mut().expect("asked above");
            match rt.block_on(lane.answers.recv()) {
                Some((s, Ok(bytes))) => {
                    if let Some(i) = lane.asked.iter().position(|&a| a == s) {
                        lane.asked.remove(i);
                    }
                    if s == stripe {
                        return Ok(self.deliver(slot, bytes, buf));
                    }
                    if s > stripe {
                        lane.early.insert(s, bytes);
                    }
                }
                Some((s, Err(e))) => {
                    tracing::info!(slot, stripe = s, error = %e, "holder cannot serve; using parity");
                    self.give_up(slot);
                    return Ok(false);
                }
                None => {
                    self.give_up(slot);
                    return Ok(false);
                }
            }
        }
    }

    fn prefetch(&mut self, stripe: u64, slot: usize) {
        self.ask(stripe, slot);
    }

    fn check_rebuilt(
        &mut self,
        _stripe: u64,
        _slot: usize,
        _bytes: &[u8],
    ) -> std::io::Result<bool> {
        // The holder of a missing slot cannot vouch for it; the whole-file BLAKE3 check that
        // `decode_to_file` makes before renaming the output covers rebuilt bytes.
        Ok(true)
    }
}

/// Drives one lane: opens the stream, then writes requests and reads answers concurrently. Ends
/// after the first failure, which it reports as the answer to the stripe it was reading.
async fn run_lane(
    net: NetHandle,
    provider: Provider,
    check: Check,
    mut asks: mpsc::Receiver<u64>,
    answer: mpsc::Sender<Answer>,
) {
    let first = match asks.recv().await {
        Some(s) => s,
        None => return,
    };
    let stream =
        match tokio::time::timeout(ANSWER_TIMEOUT, open_shard_stream(&net, &provider)).await {
            Ok(Ok((_, s))) => s,
            Ok(Err(e)) => {
                let _ = answer.send((first, Err(e))).await;
                return;
            }
            Err(_) => {
                let timed_out = ClientError::BadHolder("timed out opening a shard stream".into());
                let _ = answer.send((first, Err(timed_out))).await;
                return;
            }
        };
    let (mut rd, mut wr) = stream.split();
    // Stripes written and not yet answered, handed from the writer to the reader.
    let (sent_tx, mut sent) = mpsc::channel::<u64>(LANE_DEPTH);
    let writer = async move {
        let mut next = Some(first);
        while let Some(stripe) = next {
            let req = ShardRequest::Get {
                object: check.object,
                slot: check.slot,
                stripe,
            };
            shard::write_request(&mut wr, &req).await?;
            if sent_tx.send(stripe).await.is_err() {
                break;
            }
            // Flush once per burst of requests, not once per request.
            next = match asks.try_recv() {
                Ok(s) => Some(s),
                Err(_) => {
                    wr.flush().await?;
                    asks.recv().await
                }
            };
        }
        Ok::<_, ClientError>(())
    };
    let reader = async {
        while let Some(stripe) = sent.recv().await {
            let got = tokio::time::timeout(ANSWER_TIMEOUT, read_one(&mut rd, &check, stripe))
                .await
                .unwrap_or_else(|_| Err(ClientError::BadHolder("did not answer in time".into())));
            let failed = got.is_err();
            if answer.send((stripe, got)).await.is_err() || failed {
                return;
            }
        }
    };
    tokio::select! {
        r = writer => if let Err(e) = r {
            // The reader reports the stripe it waits for; this covers a lane with none in flight.
            let _ = answer.send((u64::MAX, Err(e))).await;
        },
        () = reader => {}
    }
}

/// Reads and verifies one answer.
async fn read_one(
    rd: &mut futures::io::ReadHalf<libp2p::Stream>,
    check: &Check,
    stripe: u64,
) -> Result<Vec<u8>> {
    match shard::read_response(rd).await? {
        ShardResponse::Shard { len, siblings } => {
            if len != check.shard_size {
                return Err(ClientError::BadHolder(format!(
                    "sent a shard of {len} bytes, not {}",
                    check.shard_size
                )));
            }
            let bytes = shard::read_body(rd, len).await?;
            verify_shard(
                &check.shape,
                &check.root,
                check.shard_size,
                stripe,
                &bytes,
                &siblings,
            )
            .map_err(|e| {
                tracing::warn!(
                    slot = check.slot,
                    stripe,
                    "holder sent a shard that fails verification"
                );
                ClientError::BadHolder(format!("sent a shard that fails verification: {e}"))
            })?;
            Ok(bytes)
        }
        ShardResponse::Error(e) => Err(ClientError::BadHolder(format!("cannot serve: {e}"))),
        other => Err(ClientError::BadHolder(format!(
            "answered a get with {other:?}"
        ))),
    }
}
