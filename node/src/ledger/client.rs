//! Talking to the ledger from a command: connect, ask, submit signed transactions.

use crate::net::{self, NetConfig, NetHandle};
use anyhow::{anyhow, bail, Context as _, Result};
use atlas_protocol::escrow::{Account, ChainId, EscrowError, Tx, TxBody};
use atlas_protocol::escrow::{Deal, Provider};
use atlas_protocol::wire::{ChainStatus, DealQuery, LedgerRequest, LedgerResponse, Refusal};
use atlas_protocol::Keypair;
use atlas_protocol::{DealId, PublicKey};
use libp2p::{Multiaddr, PeerId};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Parses a ledger address: a multiaddr that names the ledger's peer (`/p2p/...`).
pub fn parse_ledger_addr(text: &str) -> Result<Multiaddr> {
    let addr: Multiaddr = text
        .trim()
        .parse()
        .with_context(|| format!("'{text}' is not a multiaddr"))?;
    if net::peer_of(&addr).is_none() {
        bail!("ledger address {addr} has no /p2p/<peer id> part; use the full address `atlas ledger run` prints");
    }
    Ok(addr)
}

/// A connection to the ledger over a dial-only libp2p node.
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

impl LedgerClient {
    /// Starts a dial-only node with `key` and points it at the ledger.
    pub async fn connect(key: &Keypair, addr: Multiaddr) -> Result<Self> {
        let ledger = net::peer_of(&addr).context("ledger address has no /p2p/ part")?;
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
        let ledger = net::peer_of(&addr).context("ledger address has no /p2p/ part")?;
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

    pub async fn request(&self, request: LedgerRequest) -> Result<LedgerResponse> {
        let response = self
            .net
            .ledger_request(self.ledger, Some(self.addr.clone()), request)
            .await
            .with_context(|| format!("cannot reach the ledger at {}", self.addr))?;
        if let LedgerResponse::Error(e) = response {
            bail!("the ledger failed: {e}");
        }
        Ok(response)
    }

    pub async fn status(&self) -> Result<ChainStatus> {
        match self.request(LedgerRequest::Status).await? {
            LedgerResponse::Status(s) => Ok(*s),
            other => bail!("unexpected ledger answer: {other:?}"),
        }
    }

    /// The chain this ledger runs, which every transaction must name.
    pub async fn chain(&self) -> Result<ChainId> {
        self.chain
            .get_or_try_init(|| async { Ok(self.status().await?.chain) })
            .await
            .copied()
    }

    pub async fn account(&self, key: &atlas_protocol::PublicKey) -> Result<Account> {
        match self.request(LedgerRequest::Account(*key)).await? {
            LedgerResponse::Account(a) => Ok(a),
            other => bail!("unexpected ledger answer: {other:?}"),
        }
    }

    /// Every registered provider, page by page.
    pub async fn providers(&self) -> Result<Vec<(PublicKey, Provider)>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            match self.request(LedgerRequest::ProviderPage { after }).await? {
                LedgerResponse::ProviderPage { items, next } => {
                    all.extend(items);
                    match next {
                        Some(k) => after = Some(k),
                        None => return Ok(all),
                    }
                }
                other => bail!("unexpected ledger answer: {other:?}"),
            }
        }
    }

    /// Every deal `query` selects, page by page.
    pub async fn deals(&self, query: DealQuery) -> Result<Vec<(DealId, Deal)>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let request = LedgerRequest::DealPage {
                query: query.clone(),
                after,
            };
            match self.request(request).await? {
                LedgerResponse::DealPage { items, next } => {
                    all.extend(items);
                    match next {
                        Some(k) => after = Some(k),
                        None => return Ok(all),
                    }
                }
                other => bail!("unexpected ledger answer: {other:?}"),
            }
        }
    }

    /// Signs `body` with the account's next nonce, submits it and waits until it is in a block.
    /// Returns the block height.
    pub async fn submit(&self, key: &Keypair, body: TxBody) -> Result<u64> {
        Ok(self.submit_tx(key, body).await?.0)
    }

    /// As [`LedgerClient::submit`]; also returns the nonce the included transaction used (what
    /// ids derived from it, such as a deal's, are made of).
    pub async fn submit_tx(&self, key: &Keypair, body: TxBody) -> Result<(u64, u64)> {
        match self.send(key, body, true).await? {
            (Some(height), nonce) => Ok((height, nonce)),
            (None, _) => bail!("the ledger accepted a transaction without including it"),
        }
    }

    /// Signs `body` with the account's next nonce and queues it: answered once the ledger has
    /// accepted it against the next block's state and made it durable (so it is in a block after
    /// any restart), without waiting for the block. Returns the nonce it used.
    pub async fn enqueue(&self, key: &Keypair, body: TxBody) -> Result<u64> {
        Ok(self.send(key, body, false).await?.1)
    }

    /// Signs and sends `body` (`Submit` when `include`, else `Enqueue`); the block height when
    /// included, and the nonce used.
    async fn send(&self, key: &Keypair, body: TxBody, include: bool) -> Result<(Option<u64>, u64)> {
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
            .map_err(|e| anyhow!("signing the {kind} transaction: {e}"))?;
            let request = if include {
                LedgerRequest::Submit(signed)
            } else {
                LedgerRequest::Enqueue(signed)
            };
            match self.request(request).await? {
                LedgerResponse::Included { height, .. } => return Ok((Some(height), nonce)),
                LedgerResponse::Accepted { .. } if !include => return Ok((None, nonce)),
                // Another transaction of this key took the nonce: sign again with the next.
                LedgerResponse::Refused(Refusal::Escrow(EscrowError::BadNonce { .. }))
                    if attempts < 5 =>
                {
                    continue
                }
                LedgerResponse::Refused(reason) => {
                    bail!("the ledger refused the {kind}: {reason}")
                }
                other => bail!("unexpected ledger answer: {other:?}"),
            }
        }
    }
}
