//! The transaction submitter: one task owns this provider's nonce. Services hand it transaction
//! bodies through a bounded channel and get back the nonce each was accepted with; it signs them
//! in order and queues each on the ledger with one round trip (never waiting for a block), so a
//! claim or an accept never holds back a proof.

use crate::ledger::{LedgerError, Settlement};
use atlas_protocol::escrow::{EscrowError, TxBody};
use atlas_protocol::Keypair;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Transactions waiting to be signed and sent; a service waits when it is full.
const SUBMIT_QUEUE: usize = 256;
/// Stale-nonce refusals (another process with this key took the nonce) retried per transaction.
const NONCE_RETRIES: usize = 4;

/// Why a transaction was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("the submitter has stopped")]
    Stopped,
}

struct Job {
    body: TxBody,
    reply: oneshot::Sender<Result<u64, SubmitError>>,
}

/// A cheap handle to the submitter task.
#[derive(Clone, Debug)]
pub struct Submitter {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job({})", self.body.kind())
    }
}

impl Submitter {
    /// Starts the task; it runs until `shutdown`, answering what was queued before it.
    pub fn start(
        ledger: Arc<dyn Settlement>,
        key: Keypair,
        shutdown: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (jobs, queue) = mpsc::channel(SUBMIT_QUEUE);
        let task = tokio::spawn(run(ledger, key, queue, shutdown));
        (Self { jobs }, task)
    }

    /// Queues `body`: answered once the ledger has accepted it against the next block's state
    /// (so a claim that returns has won) and made it durable. Returns the nonce it used.
    pub async fn enqueue(&self, body: TxBody) -> Result<u64, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { body, reply })
            .await
            .map_err(|_| SubmitError::Stopped)?;
        answer.await.map_err(|_| SubmitError::Stopped)?
    }
}

async fn run(
    ledger: Arc<dyn Settlement>,
    key: Keypair,
    mut queue: mpsc::Receiver<Job>,
    shutdown: CancellationToken,
) {
    let me = key.public();
    // The next nonce to sign with; `None` when it must be asked of the ledger (at first, and
    // after an answer that leaves it unknown whether the last one was taken).
    let mut next: Option<u64> = None;
    loop {
        let job = tokio::select! {
            biased;
            job = queue.recv() => match job {
                Some(job) => job,
                None => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let kind = job.body.kind();
        let mut attempts = 0;
        let result = loop {
            attempts += 1;
            let nonce = match next {
                Some(n) => n,
                None => match ledger.account(&me).await {
                    Ok(a) => a.nonce,
                    Err(e) => break Err(e),
                },
            };
            match ledger.enqueue_at(&key, nonce, job.body.clone()).await {
                Ok(sent) => {
                    next = Some(sent.nonce + 1);
                    break Ok(sent.nonce);
                }
                Err(e) if matches!(e.escrow(), Some(EscrowError::BadNonce { .. })) => {
                    next = None;
                    if attempts > NONCE_RETRIES {
                        break Err(e);
                    }
                }
                // A refusal does not use the nonce.
                Err(e @ LedgerError::Refused { .. }) => {
                    next = Some(nonce);
                    break Err(e);
                }
                // Lost on the way (or the ledger restarted): ask for the nonce next time.
                Err(e) => {
                    next = None;
                    break Err(e);
                }
            }
        };
        if let Err(e) = &result {
            tracing::debug!(kind, error = %e, "transaction not queued");
        }
        let _ = job.reply.send(result.map_err(SubmitError::from));
    }
}
