//! A hostile peer for adversarial tests. It speaks Atlas's wire protocols directly: it signs
//! transactions by hand, sends raw `/atlas/ledger/1` requests, and writes `/atlas/shard/1` frames
//! byte by byte, so it can say anything an attacker could, not only what the honest client code
//! would. Only the libp2p transport (a node of its own on loopback) is shared with the honest code.

use anyhow::{anyhow, bail, Context as _, Result};
use atlas_node::net::{self, Multiaddr, NetConfig, NetHandle, PeerId};
use atlas_protocol::escrow::{ChainId, Provider, Tx, TxBody};
use atlas_protocol::tree::Cv;
use atlas_protocol::wire::{self, LedgerRequest, LedgerResponse, ShardRequest, ShardResponse};
use atlas_protocol::{DealId, Keypair, PublicKey};
use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// An attacker's node: its own libp2p identity, pointed at a ledger.
#[derive(Debug)]
pub struct Hostile {
    net: NetHandle,
    ledger: PeerId,
    ledger_addr: Multiaddr,
    chain: ChainId,
    shutdown: CancellationToken,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Hostile {
    /// Starts a dial-only node with a fresh key and learns the ledger's chain id.
    pub async fn start(ledger_addr: &Multiaddr) -> Result<Self> {
        let shutdown = CancellationToken::new();
        let mut registry = Registry::default();
        let (net, _events, _task) = net::start(
            &crate::new_key(),
            NetConfig {
                listen: Vec::new(),
                name: "hostile".into(),
            },
            &mut registry,
            shutdown.clone(),
        )
        .await?;
        let ledger = net::peer_of(ledger_addr).context("ledger address has no /p2p/")?;
        let mut me = Self {
            net,
            ledger,
            ledger_addr: ledger_addr.clone(),
            chain: [0; 32],
            shutdown,
        };
        me.chain = match me.ask(LedgerRequest::Status).await? {
            LedgerResponse::Status(s) => s.chain,
            other => bail!("no status: {other:?}"),
        };
        Ok(me)
    }

    /// Sends one raw ledger request.
    pub async fn ask(&self, request: LedgerRequest) -> Result<LedgerResponse> {
        Ok(self
            .net
            .ledger_request(self.ledger, Some(self.ledger_addr.clone()), request)
            .await?)
    }

    /// The signer's next nonce as the ledger counts it (queued transactions included).
    pub async fn nonce(&self, who: &PublicKey) -> Result<u64> {
        match self.ask(LedgerRequest::Account(*who)).await? {
            LedgerResponse::Account(a) => Ok(a.nonce),
            other => bail!("no account: {other:?}"),
        }
    }

    /// Signs `body` by hand with `key` at `nonce` for this chain.
    pub fn sign(&self, key: &Keypair, nonce: u64, body: TxBody) -> Result<wire::LedgerRequest> {
        let signed = Tx {
            chain: self.chain,
            signer: key.public(),
            nonce,
            body,
        }
        .sign(key)
        .map_err(|e| anyhow!("{e}"))?;
        Ok(LedgerRequest::Submit(signed))
    }

    /// Signs and submits, waiting for the block; returns the ledger's raw answer.
    pub async fn submit(&self, key: &Keypair, body: TxBody) -> Result<LedgerResponse> {
        let nonce = self.nonce(&key.public()).await?;
        self.ask(self.sign(key, nonce, body)?).await
    }

    /// Signs and submits; fails unless the transaction was included.
    pub async fn must(&self, key: &Keypair, body: TxBody) -> Result<()> {
        let kind = body.kind();
        match self.submit(key, body).await? {
            LedgerResponse::Included { .. } => Ok(()),
            other => bail!("the attacker's {kind} was not included: {other:?}"),
        }
    }

    /// Signs and queues without waiting for a block (for floods); returns the raw answer.
    pub async fn enqueue(&self, key: &Keypair, nonce: u64, body: TxBody) -> Result<LedgerResponse> {
        let LedgerRequest::Submit(signed) = self.sign(key, nonce, body)? else {
            unreachable!("sign makes a Submit")
        };
        self.ask(LedgerRequest::Enqueue(signed)).await
    }

    /// Opens a raw `/atlas/shard/1` stream to a registered provider.
    pub async fn shard_stream(&self, provider: &Provider) -> Result<libp2p::Stream> {
        let peer = PeerId::from_bytes(&provider.peer_id)?;
        let addrs = provider
            .addrs
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        self.net.connect(peer, addrs).await?;
        self.net
            .streams()
            .open_stream(peer, atlas_node::wire::shard::PROTOCOL)
            .await
            .map_err(|e| anyhow!("cannot open a shard stream: {e}"))
    }

    /// Reads one answer frame from a shard stream.
    pub async fn answer(rd: &mut (impl futures::AsyncRead + Unpin)) -> Result<ShardResponse> {
        let mut len = [0u8; 4];
        rd.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if len > wire::MAX_SHARD_HEADER {
            bail!("answer frame of {len} bytes");
        }
        let mut frame = vec![0u8; len];
        rd.read_exact(&mut frame).await?;
        Ok(wire::decode(&frame, wire::MAX_SHARD_HEADER)?)
    }

    /// Writes one `Put` frame and its body by hand and reads the provider's answer, which may
    /// come before the body is taken (a provider refuses a put on its header alone).
    pub async fn put(
        &self,
        stream: &mut libp2p::Stream,
        deal: DealId,
        slot: u16,
        stripe: u64,
        body: &[u8],
        siblings: Vec<Cv>,
    ) -> Result<ShardResponse> {
        let header = wire::encode(&ShardRequest::Put {
            deal,
            slot,
            stripe,
            len: body.len() as u64,
            siblings,
        });
        let (mut rd, mut wr) = futures::AsyncReadExt::split(&mut *stream);
        let write = async {
            wr.write_all(&(header.len() as u32).to_be_bytes()).await?;
            wr.write_all(&header).await?;
            wr.write_all(body).await?;
            wr.flush().await
        };
        let read = Self::answer(&mut rd);
        let (written, answer) = futures::join!(write, read);
        match answer {
            Ok(answer) => Ok(answer),
            Err(e) => Err(written.err().map_or(e, anyhow::Error::from)),
        }
    }
}
