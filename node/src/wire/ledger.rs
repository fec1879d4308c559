//! `/atlas/ledger/1`: one request frame, one response frame, each capped per direction.

use super::{read_message, write_message, WireError};
use atlas_protocol::wire::{
    LedgerRequest, LedgerResponse, MAX_LEDGER_REQUEST, MAX_LEDGER_RESPONSE,
};
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use std::io;

/// The libp2p request-response codec of the ledger protocol.
#[derive(Debug, Clone, Default)]
pub struct LedgerCodec;

async fn read_one<T: AsyncRead + Unpin + Send, M: serde::de::DeserializeOwned>(
    io: &mut T,
    max: usize,
    what: &'static str,
) -> io::Result<M> {
    read_message(io, max, what)
        .await?
        .ok_or_else(|| WireError::Closed(what).into())
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
        read_one(io, MAX_LEDGER_REQUEST, "ledger request").await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<LedgerResponse> {
        read_one(io, MAX_LEDGER_RESPONSE, "ledger response").await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: LedgerRequest,
    ) -> io::Result<()> {
        write_message(io, &req).await?;
        io.flush().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: LedgerResponse,
    ) -> io::Result<()> {
        write_message(io, &res).await?;
        io.flush().await
    }
}
