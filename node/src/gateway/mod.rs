//! The HTTP gateway: serves pinned objects to browsers and players, verified, from their holders.
//!
//! - `GET|HEAD /v1/objects/{id}`: the object's bytes with its media type; `Range: bytes=…` gives a
//!   206 with only the stripes that cover the range fetched, every shard verified against its slot
//!   root, parity standing in for holders that are down.
//! - `GET /`: a page listing the catalogue of the configured creators, each video playable.
//! - `GET /metrics`: the gateway's Prometheus metrics.
//!
//! Objects are immutable, so responses carry an `ETag` of the object id and may be cached forever.

use crate::client::LedgerClient;
use crate::creator::{self, NetShardSource};
use crate::units::format_size;
use anyhow::{anyhow, bail, Context as _, Result};
use atlas_protocol::erasure::{decode_range, DecodeError};
use atlas_protocol::escrow::{Deal, Provider};
use atlas_protocol::manifest::VerifiedManifest;
use atlas_protocol::wire::DealQuery;
use atlas_protocol::{ObjectId, PublicKey};
use futures::StreamExt as _;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long an object's holder list is trusted before it is asked of the ledger again.
const HOLDERS_TTL: Duration = Duration::from_secs(10);

/// Readers kept open per object between requests (their streams to the holders stay up).
const POOLED_READERS: usize = 4;

/// Bytes handed to the HTTP body at a time, and how many such chunks may wait to be sent.
const CHUNK: usize = 256 << 10;
const CHUNKS_IN_FLIGHT: usize = 8;

type Body = BoxBody<Bytes, std::io::Error>;

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Creators whose objects the page at `/` lists.
    pub creators: Vec<PublicKey>,
}

#[derive(Default)]
struct Metrics {
    requests: Counter,
    bytes: Counter,
    degraded: Counter,
    errors: Counter,
    objects: Gauge,
}

/// The gateway's state, shared by every connection.
pub struct Gateway {
    ledger: LedgerClient,
    config: GatewayConfig,
    objects: Mutex<HashMap<ObjectId, Arc<Object>>>,
    metrics: Metrics,
    registry: Mutex<Registry>,
}

/// An object as last looked up: its manifest, holders and open readers.
struct Object {
    manifest: VerifiedManifest,
    holders: Vec<Option<Provider>>,
    fetched: Instant,
    readers: Mutex<Vec<NetShardSource>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("creators", &self.config.creators.len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    pub fn new(ledger: LedgerClient, config: GatewayConfig) -> Arc<Self> {
        let metrics = Metrics::default();
        let mut registry = Registry::with_prefix("atlas_gateway");
        registry.register(
            "requests",
            "HTTP requests answered",
            metrics.requests.clone(),
        );
        registry.register(
            "bytes",
            "Object bytes sent to clients",
            metrics.bytes.clone(),
        );
        registry.register(
            "degraded_reads",
            "Object reads that rebuilt stripes from parity because holders were down",
            metrics.degraded.clone(),
        );
        registry.register(
            "read_errors",
            "Object reads that failed after the response started (too few holders)",
            metrics.errors.clone(),
        );
        registry.register(
            "objects_cached",
            "Objects whose holders and readers are kept",
            metrics.objects.clone(),
        );
        Arc::new(Self {
            ledger,
            config,
            objects: Mutex::new(HashMap::new()),
            metrics,
            registry: Mutex::new(registry),
        })
    }

    /// Serves HTTP on `listener` until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let gw = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let gw = gw.clone();
                    async move { Ok::<_, Infallible>(gw.handle(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended");
                    },
                    _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
                }
            });
        }
    }

    async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        self.metrics.requests.inc();
        let path = req.uri().path().to_string();
        let head = req.method() == Method::HEAD;
        if req.method() != Method::GET && !head {
            return plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET and HEAD are served\n",
            );
        }
        let result = match path.as_str() {
            "/" | "/index.html" => self.page().await,
            "/metrics" => Ok(self.metrics_text()),
            p => match p.strip_prefix("/v1/objects/") {
                Some(id) if id.parse::<atlas_protocol::IdPrefix>().is_err() => Ok(plain(
                    StatusCode::BAD_REQUEST,
                    &format!("'{id}' is not an object id (hex digits)\n"),
                )),
                Some(id) => {
                    let range = req
                        .headers()
                        .get(header::RANGE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    self.object(id, range.as_deref(), head).await
                }
                _ => Ok(plain(
                    StatusCode::NOT_FOUND,
                    "no such page; objects are at /v1/objects/{id}\n",
                )),
            },
        };
        result.unwrap_or_else(|e| {
            let text = format!("{e:#}\n");
            let status = if text.contains("no object or deal matches") {
                StatusCode::NOT_FOUND
            } else {
                // The ledger or too many holders could not be reached.
                StatusCode::BAD_GATEWAY
            };
            plain(status, &text)
        })
    }

    fn metrics_text(&self) -> Response<Body> {
        let mut text = String::new();
        let registry = self.registry.lock().expect("metrics lock");
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics encoding failed\n",
            );
        }
        let mut r = Response::new(full(text.into_bytes()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        r
    }

    /// The object `id` (a full id or unique prefix), with fresh holders when the cache is stale.
    async fn lookup(&self, id: &str) -> Result<Arc<Object>> {
        let cached = {
            let objects = self.objects.lock().expect("objects lock");
            // Only a full id hits the cache: a prefix may have become ambiguous since.
            id.parse::<ObjectId>()
                .ok()
                .and_then(|oid| objects.get(&oid).cloned())
        };
        if let Some(o) = cached.filter(|o| o.fetched.elapsed() < HOLDERS_TTL) {
            return Ok(o);
        }
        let (_, deal) = creator::find_deal(&self.ledger, id).await?;
        let manifest = deal
            .terms
            .manifest
            .verify()
            .map_err(|e| anyhow!("deal manifest: {e}"))?;
        // Holders from every live deal of the object: shards are verified against the manifest.
        let holders = creator::object_holders(&self.ledger, &deal.terms.object).await?;
        let object = Arc::new(Object {
            manifest,
            holders,
            fetched: Instant::now(),
            readers: Mutex::new(Vec::new()),
        });
        let mut objects = self.objects.lock().expect("objects lock");
        objects.retain(|_, o| o.fetched.elapsed() < HOLDERS_TTL * 6);
        objects.insert(deal.terms.object, object.clone());
        self.metrics.objects.set(objects.len() as i64);
        Ok(object)
    }

    async fn object(
        self: &Arc<Self>,
        id: &str,
        range: Option<&str>,
        head: bool,
    ) -> Result<Response<Body>> {
        let object = self.lookup(id).await?;
        let size = object.manifest.manifest().size;
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
                    HeaderValue::from_str(&format!("bytes */{size}"))?,
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
                HeaderValue::from_str(&format!(
                    "bytes {}-{}/{size}",
                    bytes.start,
                    bytes.end.saturating_sub(1)
                ))?,
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
            HeaderValue::from_str(&format!("\"{}\"", object.manifest.id()))?,
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        );
        Ok(r)
    }

    /// A body that decodes `bytes` of `object` on a blocking thread as the client reads it,
    /// returned once its first chunk is decoded (or the read failed before any byte).
    async fn stream(self: &Arc<Self>, object: Arc<Object>, bytes: Range<u64>) -> Result<Body> {
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(CHUNKS_IN_FLIGHT);
        let gw = self.clone();
        let rt = tokio::runtime::Handle::current();
        let net = self.ledger.net().clone();
        tokio::task::spawn_blocking(move || {
            let reader = object.readers.lock().expect("readers lock").pop();
            let mut reader = match reader {
                Some(r) => r,
                None => match NetShardSource::new(
                    rt,
                    net,
                    object.manifest.clone(),
                    object.holders.clone(),
                ) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                        return;
                    }
                },
            };
            let mut out = ChunkWriter {
                tx: &tx,
                buf: Vec::with_capacity(CHUNK),
            };
            let layout = object.manifest.layout();
            let result = decode_range(&layout, &mut reader, bytes, &mut out, &mut |_| {}).and_then(
                |stats| {
                    out.flush_chunk().map_err(DecodeError::Write)?;
                    Ok(stats)
                },
            );
            match result {
                Ok(stats) => {
                    gw.metrics.bytes.inc_by(stats.bytes_written);
                    if stats.reconstructed_stripes > 0 {
                        gw.metrics.degraded.inc();
                    }
                    let mut readers = object.readers.lock().expect("readers lock");
                    if readers.len() < POOLED_READERS {
                        readers.push(reader);
                    }
                }
                // The client went away: nothing to report.
                Err(DecodeError::Write(_)) => {}
                Err(e) => {
                    gw.metrics.errors.inc();
                    tracing::warn!(object = %object.manifest.id().short(), error = %e, "read failed");
                    let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
                }
            }
        });
        let mut rx = rx;
        let first = match rx.recv().await {
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => bail!("cannot read the object: {e}"),
            None => bail!("the object read ended before its first byte"),
        };
        let first =
            futures::stream::once(async move { Ok::<_, std::io::Error>(Frame::data(first)) });
        let rest = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk.map(Frame::data), rx))
        });
        Ok(BodyExt::boxed(StreamBody::new(first.chain(rest))))
    }

    /// The catalogue page.
    async fn page(&self) -> Result<Response<Body>> {
        let status = self.ledger.status().await?;
        let mut rows = String::new();
        let mut count = 0;
        for creator in &self.config.creators {
            let deals = self.ledger.deals(DealQuery::OfCreator(*creator)).await?;
            for (_, d) in deals.iter().filter(|(_, d)| !d.ended) {
                rows.push_str(&catalogue_entry(d)?);
                count += 1;
            }
        }
        if count == 0 {
            rows.push_str("<p class=\"empty\">Nothing pinned yet. Pin a video with <code>atlas pin FILE</code> and reload.</p>");
        }
        let html = PAGE
            .replace("{{height}}", &status.height.to_string())
            .replace("{{epoch}}", &status.epoch.to_string())
            .replace("{{count}}", &count.to_string())
            .replace("{{rows}}", &rows);
        let mut r = Response::new(full(html.into_bytes()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(r)
    }
}

/// The policy on every object response: no scripts, no plugins, no subresources, a unique origin.
const OBJECT_CSP: &str = "default-src 'none'; media-src 'self'; sandbox";

/// The `Content-Type` an object is served with. A manifest's media type is the creator's word, so
/// only plain video, audio and raster image types are passed on; anything else (HTML, SVG, XML,
/// script, or text that is not a media type) is served as `application/octet-stream`, which no
/// browser renders as a page.
fn served_media_type(claimed: &str) -> HeaderValue {
    const FALLBACK: HeaderValue = HeaderValue::from_static("application/octet-stream");
    let essence = claimed
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((kind, sub)) = essence.split_once('/') else {
        return FALLBACK;
    };
    let token = |t: &str| {
        !t.is_empty()
            && t.len() <= 64
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    let allowed = matches!(kind, "video" | "audio" | "image")
        && token(sub)
        && !sub.contains("svg")
        && !sub.contains("xml");
    if allowed {
        HeaderValue::from_str(&essence).unwrap_or(FALLBACK)
    } else {
        FALLBACK
    }
}

/// One catalogue entry: title, size, health, escrow left, and a player.
fn catalogue_entry(d: &Deal) -> Result<String> {
    let m = d
        .terms
        .manifest
        .verify()
        .map_err(|e| anyhow!("deal manifest: {e}"))?;
    let margin = creator::margin(d)?;
    let health = if margin >= 0 {
        format!("{margin} more holder(s) may be lost")
    } else {
        format!("{} slot(s) short of readable", -margin)
    };
    let id = d.terms.object.to_string();
    let media = &m.manifest().media_type;
    let player = if media.starts_with("video/") {
        format!("<video controls preload=\"metadata\" src=\"/v1/objects/{id}\"></video>")
    } else if media.starts_with("audio/") {
        format!("<audio controls preload=\"metadata\" src=\"/v1/objects/{id}\"></audio>")
    } else {
        String::new()
    };
    Ok(format!(
        "<article class=\"object\" data-id=\"{id}\"><h2>{title}</h2>{player}<dl>\
         <dt>size</dt><dd>{size}</dd><dt>code</dt><dd>{k}+{mm}</dd>\
         <dt>health</dt><dd class=\"{class}\">{health}</dd>\
         <dt>escrow left</dt><dd>{covered} epochs (until epoch {end})</dd>\
         <dt>object</dt><dd><a href=\"/v1/objects/{id}\"><code>{short}</code></a></dd></dl></article>\n",
        title = escape_html(&m.manifest().name),
        size = format_size(m.manifest().size),
        k = m.layout().data_shards(),
        mm = m.layout().parity_shards(),
        class = if margin > 0 { "ok" } else { "warn" },
        covered = d.epochs_covered(),
        end = d.end_epoch,
        short = d.terms.object.short(),
    ))
}

const PAGE: &str = include_str!("gateway.html");

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes))
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(full(text.as_bytes().to_vec()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Collects decoded bytes into chunks for the HTTP body; fails once the client is gone.
struct ChunkWriter<'a> {
    tx: &'a mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChunkWriter<'_> {
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

impl std::io::Write for ChunkWriter<'_> {
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

/// What a `Range` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeSpec {
    /// One satisfiable byte range, clipped to the object.
    Bytes(Range<u64>),
    /// Syntactically valid but beyond the object: 416.
    Unsatisfiable,
    /// Not understood (another unit, several ranges, malformed): serve the whole object, as
    /// RFC 9110 allows.
    Ignore,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n` against an object of `size` bytes.
pub fn parse_range(header: &str, size: u64) -> RangeSpec {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    match (a.is_empty(), b.is_empty()) {
        // Suffix: the last n bytes.
        (true, false) => match parse(b) {
            Some(0) => RangeSpec::Unsatisfiable,
            Some(n) => RangeSpec::Bytes(size.saturating_sub(n)..size),
            None => RangeSpec::Ignore,
        },
        (false, true) => match parse(a) {
            Some(start) if start < size => RangeSpec::Bytes(start..size),
            Some(_) => RangeSpec::Unsatisfiable,
            None => RangeSpec::Ignore,
        },
        (false, false) => match (parse(a), parse(b)) {
            (Some(start), Some(last)) if start <= last => {
                if start >= size {
                    RangeSpec::Unsatisfiable
                } else {
                    RangeSpec::Bytes(start..last.saturating_add(1).min(size))
                }
            }
            _ => RangeSpec::Ignore,
        },
        (true, true) => RangeSpec::Ignore,
    }
}

/// Runs a gateway on `listen` until `shutdown`; returns the bound address once listening.
pub async fn start(
    ledger: LedgerClient,
    config: GatewayConfig,
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {listen}"))?;
    let bound = listener.local_addr()?;
    let gw = Gateway::new(ledger, config);
    let task = tokio::spawn(gw.serve(listener, shutdown));
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_media_types_are_served_as_such() {
        for (claimed, served) in [
            ("video/mp4", "video/mp4"),
            ("Video/MP4; codecs=\"avc1\"", "video/mp4"),
            ("audio/ogg", "audio/ogg"),
            ("image/png", "image/png"),
            ("text/html", "application/octet-stream"),
            ("text/html; charset=utf-8", "application/octet-stream"),
            ("image/svg+xml", "application/octet-stream"),
            ("application/xhtml+xml", "application/octet-stream"),
            ("application/javascript", "application/octet-stream"),
            ("video/mp4\r\nSet-Cookie: a=b", "application/octet-stream"),
            ("video/", "application/octet-stream"),
            ("nonsense", "application/octet-stream"),
        ] {
            assert_eq!(served_media_type(claimed), served, "{claimed:?}");
        }
    }

    #[test]
    fn ranges_parse_as_rfc_9110_says() {
        assert_eq!(parse_range("bytes=0-99", 1000), RangeSpec::Bytes(0..100));
        assert_eq!(parse_range("bytes=500-", 1000), RangeSpec::Bytes(500..1000));
        assert_eq!(parse_range("bytes=-100", 1000), RangeSpec::Bytes(900..1000));
        assert_eq!(parse_range("bytes=-5000", 1000), RangeSpec::Bytes(0..1000));
        assert_eq!(
            parse_range("bytes=900-5000", 1000),
            RangeSpec::Bytes(900..1000)
        );
        assert_eq!(parse_range("bytes=1000-", 1000), RangeSpec::Unsatisfiable);
        assert_eq!(
            parse_range("bytes=2000-3000", 1000),
            RangeSpec::Unsatisfiable
        );
        assert_eq!(parse_range("bytes=-0", 1000), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("items=0-1", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=x-", 1000), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=0-", 0), RangeSpec::Unsatisfiable);
    }

    #[test]
    fn titles_are_escaped() {
        assert_eq!(
            escape_html("<b>\"Tom & Jerry's\"</b>"),
            "&lt;b&gt;&quot;Tom &amp; Jerry&#39;s&quot;&lt;/b&gt;"
        );
    }
}
