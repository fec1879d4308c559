//! `GET|HEAD /v1/objects/{id}`: an object's bytes (or one range of them), decoded on a blocking
//! thread as the client reads them, from readers pooled per object.

use super::media::{served_media_type, OBJECT_CSP};
use super::range::{parse_range, RangeSpec};
use super::{full, plain, Body, Gateway, GatewayError};
use crate::client::holders::{find_deal, object_holders};
use crate::client::read::{ObjectReader, Output};
use crate::client::{manifest_of, ClientError};
use atlas_protocol::erasure::DecodeError;
use atlas_protocol::escrow::Provider;
use atlas_protocol::manifest::VerifiedManifest;
use atlas_protocol::ObjectId;
use futures::StreamExt as _;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long an object's holder list is trusted before it is asked of the ledger again.
const HOLDERS_TTL: Duration = Duration::from_secs(10);
/// Objects kept at most; the least recently looked up go first.
const MAX_OBJECTS: usize = 1024;
/// Readers kept open per object between requests (their streams to the holders stay up).
const POOLED_READERS: usize = 4;
/// Bytes handed to the HTTP body at a time, and how many such chunks may wait to be sent.
const CHUNK: usize = 256 << 10;
const CHUNKS_IN_FLIGHT: usize = 8;

/// An object as last looked up: its manifest, holders and open readers.
struct Object {
    manifest: VerifiedManifest,
    holders: Vec<Option<Provider>>,
    fetched: Instant,
    readers: Mutex<Vec<ObjectReader>>,
}

/// The objects looked up lately. Locked briefly, never across an await.
#[derive(Default)]
pub(super) struct Pool(Mutex<HashMap<ObjectId, Arc<Object>>>);

impl Gateway {
    /// The object `id` (a full id or unique prefix), with fresh holders when the cache is stale.
    async fn lookup(&self, id: &str) -> Result<Arc<Object>, GatewayError> {
        let cached = {
            let objects = self.pool.0.lock().unwrap_or_else(|p| p.into_inner());
            // Only a full id hits the cache: a prefix may have become ambiguous since.
            id.parse::<ObjectId>()
                .ok()
                .and_then(|oid| objects.get(&oid).cloned())
        };
        if let Some(o) = cached.filter(|o| o.fetched.elapsed() < HOLDERS_TTL) {
            return Ok(o);
        }
        let (_, deal) = find_deal(&*self.ledger, id).await?;
        let manifest = manifest_of(&deal)?;
        // Holders from every live deal of the object: shards are verified against the manifest.
        let holders = object_holders(&*self.ledger, &deal.terms.object).await?;
        let object = Arc::new(Object {
            manifest,
            holders,
            fetched: Instant::now(),
            readers: Mutex::new(Vec::new()),
        });
        let mut objects = self.pool.0.lock().unwrap_or_else(|p| p.into_inner());
        objects.retain(|_, o| o.fetched.elapsed() < HOLDERS_TTL * 6);
        if objects.len() >= MAX_OBJECTS {
            if let Some(oldest) = objects
                .iter()
                .min_by_key(|(_, o)| o.fetched)
                .map(|(k, _)| *k)
            {
                objects.remove(&oldest);
            }
        }
        objects.insert(deal.terms.object, object.clone());
        self.metrics.objects.set(objects.len() as i64);
        Ok(object)
    }

    pub(super) async fn object(
        self: &Arc<Self>,
        id: &str,
        range: Option<&str>,
        head: bool,
    ) -> Result<Response<Body>, GatewayError> {
        let object = self.lookup(id).await?;
        let size = object.manifest.manifest().size;
        let header_value = |s: String| HeaderValue::from_str(&s).expect("ascii digits");
        let wanted = match range.map(|r| parse_range(r, size)) {
            None | Some(RangeSpec::Ignore) => None,
            Some(RangeSpec::Bytes(r)) => Some(r),
            Some(RangeSpec::Unsatisfiable) => {
                let mut r = plain(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range outside the object\n",
                );
                r.headers_mut().insert(
                    header::CONTENT_RANGE,
                    header_value(format!("bytes */{size}")),
                );
                return Ok(r);
            }
        };
        let bytes = wanted.clone().unwrap_or(0..size);
        let body = if head || bytes.is_empty() {
            full(Vec::new())
        } else {
            // Headers go out only once the first verified bytes are in hand: a read that cannot
            // start is a clean 502, never a 200 that is cut short.
            self.stream(object.clone(), bytes.clone()).await?
        };
        let mut r = Response::new(body);
        if wanted.is_some() {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                header_value(format!(
                    "bytes {}-{}/{size}",
                    bytes.start,
                    bytes.end.saturating_sub(1)
                )),
            );
        }
        let m = object.manifest.manifest();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(bytes.end - bytes.start),
        );
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        h.insert(header::CONTENT_TYPE, served_media_type(&m.media_type));
        // Whatever a manifest claims, nothing served here runs as a page of the gateway's origin.
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(OBJECT_CSP),
        );
        h.insert(
            header::ETAG,
            header_value(format!("\"{}\"", object.manifest.id())),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        );
        Ok(r)
    }

    /// A body that decodes `bytes` of `object` on a blocking thread as the client reads it,
    /// returned once its first chunk is decoded (or the read failed before any byte).
    async fn stream(
        self: &Arc<Self>,
        object: Arc<Object>,
        bytes: Range<u64>,
    ) -> Result<Body, GatewayError> {
        let (tx, mut rx) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
        let gw = self.clone();
        let pooled = object
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let mut reader = match pooled {
            Some(r) => r,
            None => ObjectReader::new(&self.net, object.manifest.clone(), object.holders.clone())?,
        };
        tokio::task::spawn_blocking(move || {
            let out = ChunkWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            match reader.read(Output::Range(bytes, Box::new(out)), &mut |_| {}) {
                Ok(report) => {
                    gw.metrics.bytes.inc_by(report.stats.bytes_written);
                    if report.stats.reconstructed_stripes > 0 {
                        gw.metrics.degraded.inc();
                    }
                    let mut readers = object.readers.lock().unwrap_or_else(|p| p.into_inner());
                    if readers.len() < POOLED_READERS {
                        readers.push(reader);
                    }
                }
                // The client went away: nothing to report.
                Err(ClientError::Decode(DecodeError::Write(_))) => {}
                Err(e) => {
                    gw.metrics.errors.inc();
                    tracing::warn!(object = %object.manifest.id().short(), error = %e, "read failed");
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                }
            }
        });
        let first = match rx.recv().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => return Err(GatewayError::Read(e.to_string())),
            None => {
                return Err(GatewayError::Read(
                    "the read ended before its first byte".into(),
                ))
            }
        };
        let first =
            futures::stream::once(async move { Ok::<_, std::io::Error>(Frame::data(first)) });
        let rest = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk.map(Frame::data), rx))
        });
        Ok(BodyExt::boxed(StreamBody::new(first.chain(rest))))
    }
}

/// Collects decoded bytes into chunks for the HTTP body; fails once the client is gone.
struct ChunkWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn flush_chunk(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_chunk()
    }
}
