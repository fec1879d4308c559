//! The ledger task: owns the sequencer, answers requests as they come, makes accepted
//! transactions durable in groups, and cuts a block every `block_time`.

use super::sequencer::Ledger;
use super::{SequencerError, RESUME_GRACE};
use crate::net::{NetEvent, NetHandle};
use atlas_protocol::wire::LedgerResponse;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

type Result<T, E = SequencerError> = std::result::Result<T, E>;

/// Database reads answered at once, off the ledger task.
const MAX_READS: usize = 64;

/// Runs the ledger until `shutdown`.
pub async fn run(
    ledger: Ledger,
    net: NetHandle,
    events: mpsc::Receiver<NetEvent>,
    shutdown: CancellationToken,
) -> Result<()> {
    use tracing::Instrument as _;
    let span = tracing::info_span!("ledger", node = %net.peer_id());
    match serve(ledger, net, events, shutdown.clone())
        .instrument(span)
        .await
    {
        // The network stops with the same token: an answer it could no longer send is not a
        // failure of the ledger (what was accepted is in the durable mempool or a block).
        Err(e) if shutdown.is_cancelled() => {
            tracing::debug!(error = %e, "stopped while answering");
            Ok(())
        }
        other => other,
    }
}

async fn serve(
    mut ledger: Ledger,
    net: NetHandle,
    mut events: mpsc::Receiver<NetEvent>,
    shutdown: CancellationToken,
) -> Result<()> {
    // After a restart the first block waits a little longer, so submitters that lost their
    // connection can reach the ledger again before the chain moves on.
    let first = if ledger.height().is_some() {
        ledger.config.block_time.max(RESUME_GRACE)
    } else {
        ledger.config.block_time
    };
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + first,
        ledger.config.block_time,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Reads of the database (blocks, ended deals) run on blocking threads, never on this task;
    // at most MAX_READS at once, after which the next waits for one to finish.
    let mut reads = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                // What was accepted goes into a block before the ledger stops, so a graceful
                // stop loses nothing it acknowledged. (After a kill -9 the queue is lost; the
                // submitters resend what the chain does not show.)
                if !ledger.pending_txs.is_empty() {
                    let (header, answers) = ledger.cut_block().await?;
                    for (id, answer) in answers {
                        let _ = net.respond(id, answer).await;
                    }
                    let _ = net.publish_header(&header).await;
                    tracing::info!(height = header.header.height, "queued transactions committed before stopping");
                }
                break;
            }
            // Before requests: a flood of them never holds a block back. What was already
            // queued when the block is due goes in first (a bounded drain), so a proof sent in
            // time is not pushed into the next epoch.
            _ = tick.tick() => {
                for _ in 0..events.len() {
                    match events.try_recv() {
                        Ok(event) => handle(&mut ledger, &net, &mut reads, &events, event).await?,
                        Err(_) => break,
                    }
                }
                loop {
                    let (header, answers) = ledger.cut_block().await?;
                    for (id, answer) in answers {
                        net.respond(id, answer).await?;
                    }
                    net.publish_header(&header).await?;
                    if !ledger.settlement_pending() {
                        break;
                    }
                }
            }
            event = events.recv() => match event {
                Some(event) => handle(&mut ledger, &net, &mut reads, &events, event).await?,
                None => break,
            },
            Some(_) = reads.join_next(), if !reads.is_empty() => {}
        }
    }
    Ok(())
}

/// Answers one request: a database read off the task, the rest from the sequencer; then makes
/// accepted transactions durable together once no further request waits (or many are pending).
async fn handle(
    ledger: &mut Ledger,
    net: &NetHandle,
    reads: &mut tokio::task::JoinSet<()>,
    events: &mpsc::Receiver<NetEvent>,
    event: NetEvent,
) -> Result<()> {
    let NetEvent::LedgerRequest { id, request, .. } = event else {
        return Ok(());
    };
    if let Some(read) = ledger.stored_read(&request) {
        while reads.len() >= MAX_READS {
            reads.join_next().await;
        }
        let net = net.clone();
        reads.spawn(async move {
            let answer = tokio::task::spawn_blocking(read)
                .await
                .unwrap_or_else(|e| LedgerResponse::Error(e.to_string()));
            let _ = net.respond(id, answer).await;
        });
        return Ok(());
    }
    let answer = match ledger.handle(id, request) {
        Ok(a) => a,
        Err(e) => Some(LedgerResponse::Error(e.to_string())),
    };
    if let Some(answer) = answer {
        net.respond(id, answer).await?;
    }
    if ledger.has_unsynced() && (events.is_empty() || ledger.unsynced.len() >= 1024) {
        for (id, answer) in ledger.sync_mempool().await? {
            net.respond(id, answer).await?;
        }
    }
    Ok(())
}
