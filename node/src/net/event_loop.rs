//! The task that owns the swarm: commands from handles, then swarm events.

use super::{Behaviour, BehaviourEvent, Command, NetError, NetEvent, Result};
use atlas_protocol::chain::SignedHeader;
use atlas_protocol::wire::{self, LedgerRequest, LedgerResponse, Refusal};
use futures::StreamExt;
use libp2p::gossipsub::{self, IdentTopic};
use libp2p::metrics::{Metrics, Recorder};
use libp2p::request_response::{self as rr, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{identify, PeerId, Swarm};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub(super) struct EventLoop {
    pub swarm: Swarm<Behaviour>,
    pub commands: mpsc::Receiver<Command>,
    pub events: mpsc::Sender<NetEvent>,
    pub pending: HashMap<OutboundRequestId, oneshot::Sender<Result<LedgerResponse>>>,
    pub connecting: HashMap<libp2p::swarm::ConnectionId, (PeerId, oneshot::Sender<Result<()>>)>,
    pub inbound: HashMap<u64, ResponseChannel<LedgerResponse>>,
    pub next_inbound: u64,
    pub metrics: Metrics,
    pub topic: IdentTopic,
    pub name: String,
}

impl EventLoop {
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => break,
                },
                event = self.swarm.select_next_some() => self.swarm_event(event).await,
            }
        }
        tracing::debug!("network task stopped");
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Request {
                peer,
                addr,
                request,
                reply,
            } => {
                if let Some(addr) = addr {
                    self.swarm.add_peer_address(peer, addr);
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .ledger
                    .send_request(&peer, *request);
                self.pending.insert(id, reply);
            }
            Command::Respond { id, response } => {
                if let Some(channel) = self.inbound.remove(&id) {
                    if self
                        .swarm
                        .behaviour_mut()
                        .ledger
                        .send_response(channel, *response)
                        .is_err()
                    {
                        tracing::debug!(id, "requester went away before the answer");
                    }
                }
            }
            Command::PublishHeader(bytes) => {
                let topic = self.topic.clone();
                if let Err(error) = self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
                    // No subscriber yet is normal for a lone ledger.
                    tracing::trace!(%error, "header not published");
                }
            }
            Command::AddAddresses(peer, addrs) => {
                for addr in addrs {
                    self.swarm.add_peer_address(peer, addr);
                }
            }
            Command::Dial(addr) => {
                if let Err(error) = self.swarm.dial(addr.clone()) {
                    tracing::warn!(%addr, %error, "dial failed");
                }
            }
            Command::Connect { peer, addrs, reply } => {
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                let opts = libp2p::swarm::dial_opts::DialOpts::peer_id(peer)
                    .addresses(addrs)
                    .condition(libp2p::swarm::dial_opts::PeerCondition::Always)
                    .build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.connecting.insert(id, (peer, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NetError::Connect {
                            peer: peer.to_string(),
                            reason: e.to_string(),
                        }));
                    }
                }
            }
        }
    }

    async fn swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.metrics.record(&event);
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Ledger(event)) => self.ledger_event(event).await,
            SwarmEvent::Behaviour(BehaviourEvent::Identify(event)) => {
                self.metrics.record(&event);
                if let identify::Event::Received { peer_id, info, .. } = event {
                    for addr in info.listen_addrs {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(event)) => self.metrics.record(&event),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.metrics.record(&event),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => {
                self.metrics.record(&event);
                if let gossipsub::Event::Message {
                    propagation_source,
                    message_id,
                    message,
                } = event
                {
                    // Validated before it is relayed: only a well-formed header its sequencer
                    // signed goes any further.
                    let verdict = match wire::decode::<SignedHeader>(&message.data, 4096) {
                        Ok(header) if header.verify(None).is_ok() => {
                            // Drop rather than block the swarm when the service is behind.
                            let _ = self.events.try_send(NetEvent::Header(header));
                            gossipsub::MessageAcceptance::Accept
                        }
                        Ok(_) => {
                            tracing::debug!("unsigned header on gossip");
                            gossipsub::MessageAcceptance::Reject
                        }
                        Err(error) => {
                            tracing::debug!(%error, "bad header on gossip");
                            gossipsub::MessageAcceptance::Reject
                        }
                    };
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .gossipsub
                        .report_message_validation_result(
                            &message_id,
                            &propagation_source,
                            verdict,
                        );
                }
            }
            SwarmEvent::ConnectionEstablished { connection_id, .. } => {
                if let Some((_, reply)) = self.connecting.remove(&connection_id) {
                    let _ = reply.send(Ok(()));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id,
                error,
                connection_id,
            } => {
                tracing::debug!(?peer_id, %error, "connection failed");
                if let Some((peer, reply)) = self.connecting.remove(&connection_id) {
                    let _ = reply.send(Err(NetError::Connect {
                        peer: peer.to_string(),
                        reason: error.to_string(),
                    }));
                }
            }
            _ => {}
        }
    }

    async fn ledger_event(&mut self, event: rr::Event<LedgerRequest, LedgerResponse>) {
        match event {
            rr::Event::Message { peer, message, .. } => match message {
                rr::Message::Request {
                    request, channel, ..
                } => {
                    let id = self.next_inbound;
                    self.next_inbound += 1;
                    let event = NetEvent::LedgerRequest { id, peer, request };
                    // Never wait on the service here: it may itself be waiting for this task to
                    // take its answers. A full queue is answered at once with a refusal to retry.
                    match self.events.try_send(event) {
                        Ok(()) => {
                            self.inbound.insert(id, channel);
                        }
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            let busy = LedgerResponse::Refused(Refusal::Busy);
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .ledger
                                .send_response(channel, busy);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
                rr::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            rr::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(NetError::Request {
                        peer: peer.to_string(),
                        reason: error.to_string(),
                    }));
                }
            }
            rr::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound ledger request failed");
            }
            rr::Event::ResponseSent { .. } => {}
        }
    }
}
