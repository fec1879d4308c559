//! The typed ledger client: one method per query, each answer checked for its kind once here, and
//! refusals kept typed so callers decide on variants, never on text.

use crate::net::{self, NetConfig, NetError, NetHandle};
use atlas_protocol::chain::Block;
use atlas_protocol::escrow::{Account, ChainId, Deal, EscrowError, Provider, Tx, TxBody};
use atlas_protocol::wire::{ChainStatus, DealQuery, LedgerRequest, LedgerResponse, Refusal};
use atlas_protocol::{DealId, Keypair, PublicKey};
use libp2p::{Multiaddr, PeerId};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Why a ledger call failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("'{0}' is not a multiaddr")]
    BadAddress(String),
    #[error("ledger address {0} has no /p2p/<peer id> part; use the full address `atlas ledger run` prints")]
    NoPeerId(Multiaddr),
    #[error("cannot reach the ledger at {addr}: {source}")]
    Unreachable { addr: Multiaddr, source: NetError },
    #[error(transparent)]
    Net(#[from] NetError),
    /// The ledger could not serve the request (a storage failure, a retired request).
    #[error("the ledger failed: {0}")]
    Failed(String),
    #[error("the ledger refused the {kind}: {reason}")]
    Refused {
        kind: &'static str,
        reason: Box<Refusal>,
    },
    #[error("the ledger answered a {asked} request with {answer}")]
    Unexpected { asked: &'static str, answer: String },
    #[error("deal {} is not on the ledger", .0.short())]
    NoSuchDeal(DealId),
    #[error("signing the {kind} transaction: {reason}")]
    Sign { kind: &'static str, reason: String },
}

impl LedgerError {
    /// The escrow rule that refused a transaction, if that is what happened.
    pub fn escrow(&self) -> Option<&EscrowError> {
        match self {
            Self::Refused { reason, .. } => match &**reason {
                Refusal::Escrow(e) => Some(e),
                _ => None,
            },
            _ => None,
        }
    }
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// Parses a ledger address: a multiaddr that names the ledger's peer (`/p2p/...`).
pub fn parse_ledger_addr(text: &str) -> Result<Multiaddr> {
    let addr: Multiaddr = text
        .trim()
        .parse()
        .map_err(|_| LedgerError::BadAddress(text.to_string()))?;
    if net::peer_of(&addr).is_none() {
        return Err(LedgerError::NoPeerId(addr));
    }
    Ok(addr)
}

/// Unwraps the one answer kind a request expects.
macro_rules! expect {
    ($asked:literal, $answer:expr, $pat:pat => $out:expr) => {
        match $answer {
            $pat => Ok($out),
            other => Err(unexpected($asked, &other)),
        }
    };
}

/// The error for an answer of the wrong kind: what was asked, and the start of what came back.
fn unexpected(asked: &'static str, answer: &LedgerResponse) -> LedgerError {
    LedgerError::Unexpected {
        asked,
        answer: format!("{answer:?}").chars().take(120).collect(),
    }
}

/// The first and the last wait before asking a busy ledger again (about 5 s in all).
const BUSY_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(20);
const BUSY_RETRY_LAST: std::time::Duration = std::time::Duration::from_millis(2560);

/// A connection to the ledger over a libp2p node (its own dial-only one, or a service's).
#[derive(Debug)]
pub struct LedgerClient {
    net: NetHandle,
    ledger: PeerId,
    addr: Multiaddr,
    shutdown: CancellationToken,
    /// The ledger's chain id, learned from its first status answer.
    chain: tokio::sync::OnceCell<ChainId>,
}

impl Drop for LedgerClient {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// What a queued transaction was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The nonce it used.
    pub nonce: u64,
    /// The block it is in, when the call waited for one.
    pub height: Option<u64>,
}

impl LedgerClient {
    /// Starts a dial-only node with `key` and points it at the ledger.
    pub async fn connect(key: &Keypair, addr: Multiaddr) -> Result<Self> {
        let ledger = net::peer_of(&addr).ok_or_else(|| LedgerError::NoPeerId(addr.clone()))?;
        let shutdown = CancellationToken::new();
        let mut registry = Registry::default();
        let (net, _events, _task) = net::start(
            key,
            NetConfig {
                listen: Vec::new(),
                name: "client".into(),
            },
            &mut registry,
            shutdown.clone(),
        )
        .await?;
        Ok(Self {
            net,
            ledger,
            addr,
            shutdown,
            chain: tokio::sync::OnceCell::new(),
        })
    }

    /// Wraps an existing network handle (a provider's own node).
    pub fn over(net: NetHandle, addr: Multiaddr) -> Result<Self> {
        let ledger = net::peer_of(&addr).ok_or_else(|| LedgerError::NoPeerId(addr.clone()))?;
        Ok(Self {
            net,
            ledger,
            addr,
            shutdown: CancellationToken::new(),
            chain: tokio::sync::OnceCell::new(),
        })
    }

    /// The network node this client talks through.
    pub fn net(&self) -> &NetHandle {
        &self.net
    }

    /// Sends one request as it is and returns the answer as it is (for tests that play a
    /// hostile client; services use the typed methods).
    /// A ledger too busy to take the request is asked again, a little later each time.
    pub async fn request(&self, request: LedgerRequest) -> Result<LedgerResponse> {
        let mut wait = BUSY_RETRY_FIRST;
        loop {
            let response = self
                .net
                .ledger_request(self.ledger, Some(self.addr.clone()), request.clone())
                .await
                .map_err(|source| LedgerError::Unreachable {
                    addr: self.addr.clone(),
                    source,
                })?;
            match response {
                LedgerResponse::Error(e) => return Err(LedgerError::Failed(e)),
                LedgerResponse::Refused(Refusal::Busy) if wait <= BUSY_RETRY_LAST => {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
                other => return Ok(other),
            }
        }
    }

    pub async fn status(&self) -> Result<ChainStatus> {
        expect!("status", self.request(LedgerRequest::Status).await?, LedgerResponse::Status(s) => *s)
    }

    /// The chain this ledger runs, which every transaction must name.
    pub async fn chain(&self) -> Result<ChainId> {
        self.chain
            .get_or_try_init(|| async { Ok(self.status().await?.chain) })
            .await
            .copied()
    }

    pub async fn account(&self, key: &PublicKey) -> Result<Account> {
        expect!("account", self.request(LedgerRequest::Account(*key)).await?, LedgerResponse::Account(a) => a)
    }

    /// A registered provider, or `None`.
    pub async fn provider(&self, key: &PublicKey) -> Result<Option<Provider>> {
        expect!("provider", self.request(LedgerRequest::Provider(*key)).await?, LedgerResponse::Provider(p) => p)
    }

    /// A live deal, or an ended one from the ledger's archive; `None` if it never existed.
    pub async fn find(&self, id: DealId) -> Result<Option<Deal>> {
        expect!("deal", self.request(LedgerRequest::Deal(id)).await?, LedgerResponse::Deal(d) => d)
    }

    /// A deal that must exist.
    pub async fn deal(&self, id: DealId) -> Result<Deal> {
        self.find(id).await?.ok_or(LedgerError::NoSuchDeal(id))
    }

    /// The block at `height`, if the chain has it.
    pub async fn block(&self, height: u64) -> Result<Option<Block>> {
        expect!("block", self.request(LedgerRequest::Block(height)).await?, LedgerResponse::Block(b) => b)
    }

    /// Every registered provider, page by page.
    pub async fn providers(&self) -> Result<Vec<(PublicKey, Provider)>> {
        self.all_pages(
            |after| LedgerRequest::ProviderPage { after },
            |answer| match answer {
                LedgerResponse::ProviderPage { items, next } => Ok((items, next)),
                other => Err(Box::new(other)),
            },
        )
        .await
    }

    /// Every deal `query` selects, page by page.
    pub async fn deals(&self, query: DealQuery) -> Result<Vec<(DealId, Deal)>> {
        let request = |after| LedgerRequest::DealPage {
            query: query.clone(),
            after,
        };
        self.all_pages(request, |answer| match answer {
            LedgerResponse::DealPage { items, next } => Ok((items, next)),
            other => Err(Box::new(other)),
        })
        .await
    }

    /// Asks for page after page (`request(after)`) until the ledger says there is no next one.
    /// `page` takes a page apart, or gives back an answer that is not one.
    async fn all_pages<K, T>(
        &self,
        request: impl Fn(Option<K>) -> LedgerRequest,
        page: impl Fn(
            LedgerResponse,
        ) -> std::result::Result<(Vec<(K, T)>, Option<K>), Box<LedgerResponse>>,
    ) -> Result<Vec<(K, T)>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let answer = self.request(request(after)).await?;
            let (items, next) = page(answer).map_err(|other| unexpected("page", &other))?;
            all.extend(items);
            match next {
                Some(k) => after = Some(k),
                None => return Ok(all),
            }
        }
    }

    /// Signs `body` with the account's next nonce, submits it and waits until it is in a block.
    /// Returns the block height and the nonce the included transaction used (what ids derived
    /// from it, such as a deal's, are made of).
    pub async fn submit(&self, key: &Keypair, body: TxBody) -> Result<Sent> {
        self.send(key, body, true).await
    }

    /// Signs `body` with the account's next nonce and queues it: answered once the ledger has
    /// accepted it against the next block's state and made it durable (so it is in a block after
    /// any restart), without waiting for the block.
    pub async fn enqueue(&self, key: &Keypair, body: TxBody) -> Result<Sent> {
        self.send(key, body, false).await
    }

    /// Signs `body` with exactly `nonce` and queues it (for a submitter that owns its nonce).
    pub async fn enqueue_at(&self, key: &Keypair, nonce: u64, body: TxBody) -> Result<Sent> {
        let kind = body.kind();
        let signed = Tx {
            chain: self.chain().await?,
            signer: key.public(),
            nonce,
            body,
        }
        .sign(key)
        .map_err(|e| LedgerError::Sign {
            kind,
            reason: e.to_string(),
        })?;
        match self.request(LedgerRequest::Enqueue(signed)).await? {
            LedgerResponse::Accepted { .. } => Ok(Sent {
                nonce,
                height: None,
            }),
            LedgerResponse::Refused(reason) => Err(LedgerError::Refused {
                kind,
                reason: Box::new(reason),
            }),
            other => {
                expect!("enqueue", other, LedgerResponse::Accepted { .. } => Sent { nonce, height: None })
            }
        }
    }

    /// Signs and sends `body` (`Submit` when `include`, else `Enqueue`), retrying with a fresh
    /// nonce when another transaction of the key took this one.
    async fn send(&self, key: &Keypair, body: TxBody, include: bool) -> Result<Sent> {
        let kind = body.kind();
        // Another process with the same key (a running provider, say) may take a nonce between our
        // query and our submission: ask again a few times before giving up.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let nonce = self.account(&key.public()).await?.nonce;
            let signed = Tx {
                chain: self.chain().await?,
                signer: key.public(),
                nonce,
                body: body.clone(),
            }
            .sign(key)
            .map_err(|e| LedgerError::Sign {
                kind,
                reason: e.to_string(),
            })?;
            let request = if include {
                LedgerRequest::Submit(signed)
            } else {
                LedgerRequest::Enqueue(signed)
            };
            match self.request(request).await? {
                LedgerResponse::Included { height, .. } => {
                    return Ok(Sent {
                        nonce,
                        height: Some(height),
                    })
                }
                LedgerResponse::Accepted { .. } if !include => {
                    return Ok(Sent {
                        nonce,
                        height: None,
                    })
                }
                // Another transaction of this key took the nonce: sign again with the next.
                LedgerResponse::Refused(Refusal::Escrow(EscrowError::BadNonce { .. }))
                    if attempts < 5 =>
                {
                    continue
                }
                LedgerResponse::Refused(reason) => {
                    return Err(LedgerError::Refused {
                        kind,
                        reason: Box::new(reason),
                    })
                }
                other => return Err(unexpected(kind, &other)),
            }
        }
    }
}
