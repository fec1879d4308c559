//! Framing on libp2p streams: one length-prefixed codec for both protocols.
//!
//! A frame is a 4-byte big-endian length, then that many bytes of postcard. The length is checked
//! against the message type's cap before anything is allocated. `/atlas/ledger/1` carries one
//! request frame and one response frame per stream (libp2p request-response, [`ledger`]);
//! `/atlas/shard/1` carries header frames, each followed where it says so by exactly `len` raw
//! bytes ([`shard`]).

pub mod ledger;
pub mod shard;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use serde::{de::DeserializeOwned, Serialize};
use std::io;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("{what} of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("undecodable {what}: {source}")]
    Decode {
        what: &'static str,
        source: atlas_protocol::wire::WireError,
    },
    #[error("the peer closed the stream before {0}")]
    Closed(&'static str),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<WireError> for io::Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

/// Reads one frame of at most `max` bytes; `None` when the peer closed the stream cleanly
/// before it.
pub async fn read_frame<T: AsyncRead + Unpin>(
    io: &mut T,
    max: usize,
    what: &'static str,
) -> Result<Option<Vec<u8>>, WireError> {
    let mut len = [0u8; 4];
    match io.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(WireError::TooLarge {
            what,
            len: len as u64,
            max: max as u64,
        });
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// Reads and decodes one message of at most `max` bytes; `None` when the peer closed first.
pub async fn read_message<T: AsyncRead + Unpin, M: DeserializeOwned>(
    io: &mut T,
    max: usize,
    what: &'static str,
) -> Result<Option<M>, WireError> {
    match read_frame(io, max, what).await? {
        Some(body) => atlas_protocol::wire::decode(&body, max)
            .map(Some)
            .map_err(|source| WireError::Decode { what, source }),
        None => Ok(None),
    }
}

/// Encodes and writes one message (not flushed).
pub async fn write_message<T: AsyncWrite + Unpin, M: Serialize>(
    io: &mut T,
    msg: &M,
) -> Result<(), WireError> {
    let body = atlas_protocol::wire::encode(msg);
    let len = u32::try_from(body.len()).map_err(|_| WireError::TooLarge {
        what: "message",
        len: body.len() as u64,
        max: u32::MAX as u64,
    })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(&body).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_over_its_cap_is_refused_before_it_is_read() {
        futures::executor::block_on(async {
            let mut bytes = (1_000_000u32).to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0; 16]);
            let mut io = futures::io::Cursor::new(bytes);
            let err = read_frame(&mut io, 1024, "header")
                .await
                .expect_err("too large");
            assert!(matches!(err, WireError::TooLarge { len: 1_000_000, .. }));
        });
    }

    #[test]
    fn messages_round_trip_and_a_clean_close_is_not_an_error() {
        futures::executor::block_on(async {
            let mut io = futures::io::Cursor::new(Vec::new());
            write_message(&mut io, &(7u64, "x".to_string()))
                .await
                .expect("written");
            io.set_position(0);
            let got: Option<(u64, String)> = read_message(&mut io, 64, "m").await.expect("read");
            assert_eq!(got, Some((7, "x".into())));
            let next: Option<(u64, String)> = read_message(&mut io, 64, "m").await.expect("read");
            assert_eq!(next, None);
        });
    }
}
