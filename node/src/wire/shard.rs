//! `/atlas/shard/1` framing: header frames (4-byte big-endian length + postcard, capped) followed,
//! where the header says so, by exactly `len` raw bytes. Both sides check every length against a cap
//! before allocating.

use anyhow::{bail, Context as _, Result};
use atlas_protocol::layout::MAX_SHARD_SIZE;
use atlas_protocol::wire::{self, ShardRequest, ShardResponse, MAX_SHARD_HEADER, SHARD_PROTOCOL};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// The protocol name as libp2p wants it.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new(SHARD_PROTOCOL);

async fn read_frame<T: AsyncRead + Unpin>(io: &mut T) -> Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match io.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_SHARD_HEADER {
        bail!("shard header of {len} bytes is over the {MAX_SHARD_HEADER}-byte limit");
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

async fn write_frame<T: AsyncWrite + Unpin>(io: &mut T, body: &[u8]) -> Result<()> {
    io.write_all(&(body.len() as u32).to_be_bytes()).await?;
    io.write_all(body).await?;
    Ok(())
}

/// Reads the next request, or `None` when the peer closed the stream.
pub async fn read_request<T: AsyncRead + Unpin>(io: &mut T) -> Result<Option<ShardRequest>> {
    match read_frame(io).await? {
        Some(body) => Ok(Some(wire::decode(&body, MAX_SHARD_HEADER)?)),
        None => Ok(None),
    }
}

pub async fn write_request<T: AsyncWrite + Unpin>(io: &mut T, req: &ShardRequest) -> Result<()> {
    write_frame(io, &wire::encode(req)).await
}

pub async fn read_response<T: AsyncRead + Unpin>(io: &mut T) -> Result<ShardResponse> {
    let body = read_frame(io)
        .await?
        .context("the peer closed the shard stream before answering")?;
    Ok(wire::decode(&body, MAX_SHARD_HEADER)?)
}

pub async fn write_response<T: AsyncWrite + Unpin>(io: &mut T, res: &ShardResponse) -> Result<()> {
    write_frame(io, &wire::encode(res)).await?;
    io.flush().await?;
    Ok(())
}

/// Reads `len` raw bytes (at most one shard).
pub async fn read_body<T: AsyncRead + Unpin>(io: &mut T, len: u64) -> Result<Vec<u8>> {
    if len > MAX_SHARD_SIZE {
        bail!("shard body of {len} bytes is over the {MAX_SHARD_SIZE}-byte limit");
    }
    let mut buf = vec![0u8; len as usize];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}
