//! Reaching a provider: its registered addresses, and a shard stream to it.

use super::{ClientError, Result};
use crate::net::{Multiaddr, NetHandle, PeerId};
use crate::wire::shard;
use atlas_protocol::escrow::Provider;

/// Addresses a provider registered, parsed; TCP ones only when it has any. A dial tries every
/// address and fails only when all have, and QUIC to a dead host waits out its handshake timeout
/// while TCP is refused at once: a reader facing dead holders must learn so quickly.
pub fn provider_addrs(p: &Provider) -> Vec<Multiaddr> {
    let all: Vec<Multiaddr> = p.addrs.iter().filter_map(|a| a.parse().ok()).collect();
    let is_tcp = |a: &Multiaddr| {
        a.iter()
            .any(|p| matches!(p, libp2p::multiaddr::Protocol::Tcp(_)))
    };
    if all.iter().any(is_tcp) {
        all.into_iter().filter(is_tcp).collect()
    } else {
        all
    }
}

/// Opens a shard stream to a provider.
pub async fn open_shard_stream(
    net: &NetHandle,
    provider: &Provider,
) -> Result<(PeerId, libp2p::Stream)> {
    let peer = PeerId::from_bytes(&provider.peer_id).map_err(|_| ClientError::BadPeerId)?;
    net.connect(peer, provider_addrs(provider)).await?;
    let stream = net
        .streams()
        .open_stream(peer, shard::PROTOCOL)
        .await
        .map_err(|e| ClientError::Stream {
            peer: peer.to_string(),
            reason: e.to_string(),
        })?;
    Ok((peer, stream))
}
