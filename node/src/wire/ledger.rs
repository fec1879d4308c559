//! `/atlas/ledger/1` framing: a 4-byte big-endian length, then postcard, capped per direction.

use atlas_protocol::wire::{
    self, LedgerRequest, LedgerResponse, MAX_LEDGER_REQUEST, MAX_LEDGER_RESPONSE,
};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use std::io;

#[derive(Debug, Clone, Default)]
pub struct LedgerCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes is over the {max}-byte limit"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(body).await?;
    io.flush().await
}

fn invalid(e: wire::WireError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl libp2p::request_response::Codec for LedgerCodec {
    type Protocol = StreamProtocol;
    type Request = LedgerRequest;
    type Response = LedgerResponse;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<LedgerRequest> {
        let body = read_frame(io, MAX_LEDGER_REQUEST).await?;
        wire::decode(&body, MAX_LEDGER_REQUEST).map_err(invalid)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<LedgerResponse> {
        let body = read_frame(io, MAX_LEDGER_RESPONSE).await?;
        wire::decode(&body, MAX_LEDGER_RESPONSE).map_err(invalid)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: LedgerRequest,
    ) -> io::Result<()> {
        write_frame(io, &wire::encode(&req)).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: LedgerResponse,
    ) -> io::Result<()> {
        write_frame(io, &wire::encode(&res)).await
    }
}
