//! The libp2p node: one task owns the swarm; everything else talks to it through [`NetHandle`].
//!
//! Transports: TCP + Noise + Yamux, and QUIC. Behaviours: identify, ping, Kademlia (server mode, so
//! loopback networks route), gossipsub for block headers, request-response for ledger messages
//! (`/atlas/ledger/1`, length-prefixed postcard with size caps), and raw streams for shard bytes
//! (`/atlas/shard/1`). The loop's order is: shutdown, local commands, swarm events.

mod event_loop;

use crate::wire::ledger::LedgerCodec;
use atlas_protocol::chain::SignedHeader;
use atlas_protocol::wire::{self, LedgerRequest, LedgerResponse, BLOCKS_TOPIC, LEDGER_PROTOCOL};
use atlas_protocol::Keypair;
use event_loop::EventLoop;
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::metrics::Metrics;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self as rr, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, kad, noise, ping, tcp, yamux, StreamProtocol};
pub use libp2p::{Multiaddr, PeerId};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// Why the network could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("the network task has stopped")]
    Stopped,
    #[error("converting the node key: {0}")]
    Key(String),
    #[error("setting up the network: {0}")]
    Setup(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("request to {peer} failed: {reason}")]
    Request { peer: String, reason: String },
    #[error("cannot connect to {peer}: {reason}")]
    Connect { peer: String, reason: String },
}

type Result<T, E = NetError> = std::result::Result<T, E>;

/// How long a ledger request may take before it fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// QUIC keep-alive and idle timeout: how soon a connection to a peer that vanished is closed.
const QUIC_KEEP_ALIVE: Duration = Duration::from_secs(1);
const QUIC_IDLE: Duration = Duration::from_secs(3);
const COMMAND_QUEUE: usize = 256;
const EVENT_QUEUE: usize = 256;

/// Connections a node keeps at most: from any one peer, and from all peers (established and
/// still in the handshake). A peer over the cap is refused at connection time.
const MAX_CONNECTIONS_PER_PEER: u32 = 4;
const MAX_INCOMING: u32 = 1024;
const MAX_PENDING_INCOMING: u32 = 128;
/// Streams open at once on one connection (yamux); a stranger cannot open thousands.
const MAX_STREAMS_PER_CONNECTION: usize = 256;

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: libp2p::connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    ledger: rr::Behaviour<LedgerCodec>,
    stream: libp2p_stream::Behaviour,
}

/// Converts an Atlas key into the libp2p identity of the same ed25519 key: a node's peer id and
/// its ledger account are one key.
pub fn identity(key: &Keypair) -> Result<libp2p::identity::Keypair> {
    let mut secret = key.secret_bytes();
    libp2p::identity::Keypair::ed25519_from_bytes(&mut secret)
        .map_err(|e| NetError::Key(e.to_string()))
}

/// The peer id inside a `/p2p/` multiaddr.
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(id) => Some(id),
        _ => None,
    })
}

/// What the network tells the services that run on it.
#[derive(Debug)]
pub enum NetEvent {
    /// A peer asks the ledger something; answer with [`NetHandle::respond`] and this id.
    LedgerRequest {
        id: u64,
        peer: PeerId,
        request: LedgerRequest,
    },
    /// A block header arrived on gossipsub (not yet verified).
    Header(SignedHeader),
}

enum Command {
    Request {
        peer: PeerId,
        addr: Option<Multiaddr>,
        request: Box<LedgerRequest>,
        reply: oneshot::Sender<Result<LedgerResponse>>,
    },
    Respond {
        id: u64,
        response: Box<LedgerResponse>,
    },
    PublishHeader(Vec<u8>),
    Dial(Multiaddr),
    AddAddresses(PeerId, Vec<Multiaddr>),
    Connect {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<()>>,
    },
}

/// A cheap, cloneable handle to the network task.
#[derive(Clone)]
pub struct NetHandle {
    commands: mpsc::Sender<Command>,
    peer_id: PeerId,
    listen: Vec<Multiaddr>,
    streams: libp2p_stream::Control,
}

impl std::fmt::Debug for NetHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NetHandle({})", self.peer_id)
    }
}

impl NetHandle {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Full listen addresses, with `/p2p/<peer id>`.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen
    }

    /// A control for raw shard streams.
    pub fn streams(&self) -> libp2p_stream::Control {
        self.streams.clone()
    }

    async fn send(&self, cmd: Command) -> Result<()> {
        self.commands.send(cmd).await.map_err(|_| NetError::Stopped)
    }

    /// Sends a ledger request to `peer` (at `addr`, if not yet known) and waits for the answer.
    pub async fn ledger_request(
        &self,
        peer: PeerId,
        addr: Option<Multiaddr>,
        request: LedgerRequest,
    ) -> Result<LedgerResponse> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Request {
            peer,
            addr,
            request: Box::new(request),
            reply,
        })
        .await?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Answers an inbound ledger request.
    pub async fn respond(&self, id: u64, response: LedgerResponse) -> Result<()> {
        self.send(Command::Respond {
            id,
            response: Box::new(response),
        })
        .await
    }

    /// Publishes an encoded signed header on the blocks topic.
    pub async fn publish_header(&self, header: &SignedHeader) -> Result<()> {
        self.send(Command::PublishHeader(wire::encode(header)))
            .await
    }

    /// Tells the swarm where a peer can be reached (before opening streams to it).
    pub async fn add_addresses(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<()> {
        self.send(Command::AddAddresses(peer, addrs)).await
    }

    /// Connects to a peer (e.g. the ledger, to follow its block headers).
    pub async fn dial(&self, addr: Multiaddr) -> Result<()> {
        self.send(Command::Dial(addr)).await
    }

    /// Connects to `peer` at exactly `addrs` (none learned elsewhere, say a dead host's QUIC
    /// address from the DHT, which would wait out a handshake timeout) and waits for the outcome.
    /// Returns at once when a connection is already open.
    pub async fn connect(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Connect { peer, addrs, reply }).await?;
        rx.await.map_err(|_| NetError::Stopped)?
    }
}

/// Network settings.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Addresses to listen on; empty for a client that only dials.
    pub listen: Vec<Multiaddr>,
    /// A label for logs.
    pub name: String,
}

/// Starts the network task. Returns once every listener has its address.
pub async fn start(
    key: &Keypair,
    config: NetConfig,
    registry: &mut Registry,
    shutdown: CancellationToken,
) -> Result<(
    NetHandle,
    mpsc::Receiver<NetEvent>,
    tokio::task::JoinHandle<()>,
)> {
    let id_keys = identity(key)?;
    let peer_id = id_keys.public().to_peer_id();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(id_keys)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            || {
                let mut c = yamux::Config::default();
                c.set_max_num_streams(MAX_STREAMS_PER_CONNECTION);
                c
            },
        )
        .map_err(|e| NetError::Setup(format!("TCP: {e}")))?
        .with_quic_config(|mut c| {
            // A peer that died without closing (kill -9, power cut) sends no more UDP: the
            // connection is known dead after QUIC_IDLE rather than quinn's 10 s default, so
            // requests stop going into it and the peer is dialled again.
            c.keep_alive_interval = QUIC_KEEP_ALIVE;
            c.max_idle_timeout = QUIC_IDLE.as_millis() as u32;
            c
        })
        .with_bandwidth_metrics(registry)
        .with_behaviour(
            |key| -> std::result::Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                let gossip_config = gossipsub::ConfigBuilder::default()
                    .heartbeat_interval(Duration::from_millis(500))
                    .heartbeat_initial_delay(Duration::from_millis(100))
                    .mesh_n_low(1)
                    .mesh_n(3)
                    .mesh_n_high(6)
                    .mesh_outbound_min(1)
                    .validate_messages()
                    .build()
                    .map_err(|e| format!("gossipsub config: {e}"))?;
                let gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    gossip_config,
                )?;
                let mut kad = kad::Behaviour::new(
                    key.public().to_peer_id(),
                    kad::store::MemoryStore::new(key.public().to_peer_id()),
                );
                kad.set_mode(Some(kad::Mode::Server));
                let limits = libp2p::connection_limits::ConnectionLimits::default()
                    .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
                    .with_max_established_incoming(Some(MAX_INCOMING))
                    .with_max_pending_incoming(Some(MAX_PENDING_INCOMING));
                Ok(Behaviour {
                    limits: libp2p::connection_limits::Behaviour::new(limits),
                    identify: identify::Behaviour::new(
                        identify::Config::new("/atlas/1".into(), key.public())
                            .with_agent_version(format!("atlas/{}", env!("CARGO_PKG_VERSION"))),
                    ),
                    ping: ping::Behaviour::new(ping::Config::new()),
                    kad,
                    gossipsub,
                    ledger: rr::Behaviour::with_codec(
                        LedgerCodec,
                        [(StreamProtocol::new(LEDGER_PROTOCOL), ProtocolSupport::Full)],
                        rr::Config::default().with_request_timeout(REQUEST_TIMEOUT),
                    ),
                    stream: libp2p_stream::Behaviour::new(),
                })
            },
        )
        .map_err(|e| NetError::Setup(format!("the network behaviour: {e}")))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    let metrics = Metrics::new(registry);
    let topic = IdentTopic::new(BLOCKS_TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| NetError::Setup(format!("subscribing to {BLOCKS_TOPIC}: {e}")))?;

    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Listen {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
    }
    // Learn the real addresses (ports chosen by the OS) before anyone asks for them.
    let mut listen = Vec::new();
    while listen.len() < config.listen.len() {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => {
                listen.push(address.with_p2p(peer_id).unwrap_or_else(|a| a));
            }
            SwarmEvent::ListenerError { error, .. } => {
                return Err(NetError::Listen {
                    addr: "a listener".into(),
                    reason: error.to_string(),
                });
            }
            SwarmEvent::ListenerClosed { reason, .. } => {
                return Err(NetError::Listen {
                    addr: "a listener".into(),
                    reason: format!("closed: {reason:?}"),
                });
            }
            _ => {}
        }
    }

    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let (event_tx, event_rx) = mpsc::channel(EVENT_QUEUE);
    let handle = NetHandle {
        commands: cmd_tx,
        peer_id,
        listen,
        streams: swarm.behaviour().stream.new_control(),
    };
    let task = EventLoop {
        swarm,
        commands: cmd_rx,
        events: event_tx,
        pending: HashMap::new(),
        connecting: HashMap::new(),
        inbound: HashMap::new(),
        next_inbound: 0,
        metrics,
        topic,
        name: config.name,
    };
    let span = tracing::info_span!("net", node = %task.name);
    let join = tokio::spawn(task.run(shutdown).instrument(span));
    Ok((handle, event_rx, join))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ledger binds a provider's peer id to its key by the bytes the escrow computes; they
    /// must be exactly libp2p's peer id of the same key.
    #[test]
    fn the_escrow_peer_id_of_a_key_is_libp2ps() {
        for seed in [1u8, 2, 200] {
            let key = Keypair::from_secret([seed; 32]);
            let libp2p_id = identity(&key).expect("identity").public().to_peer_id();
            assert_eq!(key.public().peer_id_bytes(), libp2p_id.to_bytes());
        }
    }
}
