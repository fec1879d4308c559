//! `/atlas/shard/1`: header frames (capped at [`MAX_SHARD_HEADER`]) followed, where the header
//! says so, by exactly `len` raw bytes (at most one shard). Both sides check every length against
//! its cap before allocating.

use super::{read_message, write_message, WireError};
use atlas_protocol::layout::MAX_SHARD_SIZE;
use atlas_protocol::wire::{ShardRequest, ShardResponse, MAX_SHARD_HEADER, SHARD_PROTOCOL};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// The protocol name as libp2p wants it.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new(SHARD_PROTOCOL);

/// Reads the next request, or `None` when the peer closed the stream.
pub async fn read_request<T: AsyncRead + Unpin>(
    io: &mut T,
) -> Result<Option<ShardRequest>, WireError> {
    read_message(io, MAX_SHARD_HEADER, "shard request").await
}

pub async fn write_request<T: AsyncWrite + Unpin>(
    io: &mut T,
    req: &ShardRequest,
) -> Result<(), WireError> {
    write_message(io, req).await
}

pub async fn read_response<T: AsyncRead + Unpin>(io: &mut T) -> Result<ShardResponse, WireError> {
    read_message(io, MAX_SHARD_HEADER, "shard answer")
        .await?
        .ok_or(WireError::Closed("answering"))
}

/// Writes an answer and flushes it.
pub async fn write_response<T: AsyncWrite + Unpin>(
    io: &mut T,
    res: &ShardResponse,
) -> Result<(), WireError> {
    write_message(io, res).await?;
    io.flush().await?;
    Ok(())
}

/// Reads `len` raw bytes (at most one shard).
pub async fn read_body<T: AsyncRead + Unpin>(io: &mut T, len: u64) -> Result<Vec<u8>, WireError> {
    if len > MAX_SHARD_SIZE {
        return Err(WireError::TooLarge {
            what: "shard body",
            len,
            max: MAX_SHARD_SIZE,
        });
    }
    let mut buf = vec![0u8; len as usize];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}
