//! `GET|HEAD /v1/objects/{id}`: an object's bytes (or one range of them), decoded a stripe at a
//! time on a blocking thread, only as the client takes them, from readers pooled per object. A
//! response holds at most one decoded stripe, counted against the gateway's buffer.

use super::limits::{self, Activity};
use super::media::{served_media_type, OBJECT_CSP};
use super::range::{parse_range, RangeSpec};
use super::{full, plain, Body, Gateway, GatewayError};
use crate::client::holders::{find_deal, object_holders};
use crate::client::manifest_of;
use crate::client::read::ObjectReader;
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

/// How long an object's holder list is trusted before it is asked of the ledger again.
const HOLDERS_TTL: Duration = Duration::from_secs(10);
/// Objects kept at most; the least recently looked up go first.
const MAX_OBJECTS: usize = 1024;
/// Readers kept open per object between requests (their streams to the holders stay up).
const POOLED_READERS: usize = 8;
/// The most bytes decoded as one piece of a response (less when a stripe is smaller).
const MAX_PIECE: u64 = 4 << 20;

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
        activity: &Arc<Activity>,
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
            self.stream(object.clone(), bytes.clone(), activity).await?
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

    /// A body that decodes `bytes` of `object` piece by piece as the client takes them,
    /// returned once its first piece is decoded (or the read failed before any byte).
    async fn stream(
        self: &Arc<Self>,
        object: Arc<Object>,
        bytes: Range<u64>,
        activity: &Arc<Activity>,
    ) -> Result<Body, GatewayError> {
        let mut pieces = Pieces {
            gw: self.clone(),
            object,
            next: bytes.start,
            end: bytes.end,
            activity: activity.clone(),
        };
        let first = match pieces.next_piece().await {
            Some(Ok(piece)) => piece,
            Some(Err(e)) => return Err(e),
            None => {
                return Err(GatewayError::Read(
                    "the read ended before its first byte".into(),
                ))
            }
        };
        let first =
            futures::stream::once(async move { Ok::<_, std::io::Error>(Frame::data(first)) });
        let rest = futures::stream::unfold(pieces, |mut pieces| async move {
            let piece = pieces.next_piece().await?;
            let frame = piece
                .map(Frame::data)
                .map_err(|e| std::io::Error::other(e.to_string()));
            Some((frame, pieces))
        });
        Ok(BodyExt::boxed_unsync(StreamBody::new(first.chain(rest))))
    }
}

/// The rest of one response: the next byte to send. A reader (and its streams to the
/// holders) is taken from the object's pool only while a piece decodes, so readers and streams
/// are bounded by the decoders, not by the clients.
struct Pieces {
    gw: Arc<Gateway>,
    object: Arc<Object>,
    next: u64,
    end: u64,
    activity: Arc<Activity>,
}

impl Pieces {
    /// Decodes the next piece (up to the end of its stripe, at most [`MAX_PIECE`]), once there
    /// is room for it in the buffer and a decoder is free; `None` when the range is sent.
    async fn next_piece(&mut self) -> Option<Result<Bytes, GatewayError>> {
        if self.next >= self.end {
            return None;
        }
        let _working = self.activity.working();
        let stripe = self.object.manifest.layout().stripe_len().max(1);
        let piece_end = ((self.next / stripe + 1) * stripe)
            .min(self.next + MAX_PIECE)
            .min(self.end);
        let range = self.next..piece_end;
        let len = (range.end - range.start) as usize;
        let result = self.decode(range, len).await;
        if result.is_ok() {
            self.next = piece_end;
        } else {
            self.next = self.end;
        }
        Some(result)
    }

    async fn decode(&mut self, range: Range<u64>, len: usize) -> Result<Bytes, GatewayError> {
        let room = self.gw.budget.bytes(len).await?;
        let decoder = self.gw.budget.decoder().await?;
        let pooled = self
            .object
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let mut reader = match pooled {
            Some(r) => r,
            None => ObjectReader::new(
                &self.gw.net,
                self.object.manifest.clone(),
                self.object.holders.clone(),
            )?,
        };
        let mut scratch = self.gw.budget.scratch();
        let (reader, scratch, result) = tokio::task::spawn_blocking(move || {
            let mut buf = Vec::with_capacity(len);
            let result = reader.read_range_with(range, &mut buf, &mut |_| {}, &mut scratch);
            drop(decoder);
            (reader, scratch, result.map(|report| (buf, report)))
        })
        .await
        .map_err(|e| GatewayError::Read(e.to_string()))?;
        self.gw.budget.return_scratch(scratch);
        match result {
            Ok((buf, report)) => {
                let mut readers = self
                    .object
                    .readers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if readers.len() < POOLED_READERS {
                    readers.push(reader);
                }
                drop(readers);
                self.gw.metrics.bytes.inc_by(report.stats.bytes_written);
                self.gw
                    .metrics
                    .degraded
                    .inc_by(report.stats.reconstructed_stripes);
                Ok(limits::held(buf, room, &self.activity))
            }
            Err(e) => {
                self.gw.metrics.errors.inc();
                tracing::warn!(object = %self.object.manifest.id().short(), error = %e, "read failed");
                Err(GatewayError::Client(e))
            }
        }
    }
}
