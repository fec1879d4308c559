//! The HTTP gateway: serves pinned objects to browsers and players, verified, from their holders.
//!
//! - `GET|HEAD /v1/objects/{id}`: the object's bytes with its media type; `Range: bytes=…` gives a
//!   206 with only the stripes that cover the range fetched, every shard verified against its slot
//!   root, parity standing in for holders that are down ([`object`], [`range`], [`media`]).
//! - `GET /`: a page listing the catalogue of the configured creators, each video playable
//!   ([`page`]).
//! - `GET /metrics`: the gateway's metrics, in OpenMetrics text.
//!
//! Objects are immutable, so responses carry an `ETag` of the object id and may be cached forever.

mod media;
mod object;
mod page;
pub mod range;

use crate::client::ClientError;
use crate::ledger::{LedgerError, Settlement};
use crate::net::NetHandle;
use atlas_protocol::PublicKey;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header;
use hyper::{Method, Request, Response, StatusCode};
use object::Pool;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

pub use range::{parse_range, RangeSpec};

pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// Why a request could not be served; each maps to one status.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("cannot read the object: {0}")]
    Read(String),
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl GatewayError {
    /// The HTTP status a client is answered with.
    fn status(&self) -> StatusCode {
        match self {
            Self::Client(ClientError::NoMatch(_)) => StatusCode::NOT_FOUND,
            Self::Client(ClientError::BadId(..) | ClientError::Ambiguous { .. }) => {
                StatusCode::BAD_REQUEST
            }
            // The ledger or too many holders could not be reached.
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

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
    ledger: Arc<dyn Settlement>,
    net: NetHandle,
    config: GatewayConfig,
    pool: Pool,
    metrics: Metrics,
    registry: Registry,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("creators", &self.config.creators.len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    pub fn new(ledger: Arc<dyn Settlement>, net: NetHandle, config: GatewayConfig) -> Arc<Self> {
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
            net,
            config,
            pool: Pool::default(),
            metrics,
            registry,
        })
    }

    /// Serves HTTP on `listener` until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
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
            let span = tracing::debug_span!("http", %peer);
            connections.spawn(
                async move {
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
                }
                .instrument(span),
            );
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
            "/metrics" => Ok(crate::metrics::openmetrics(&self.registry)),
            p => match p.strip_prefix("/v1/objects/") {
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
        result.unwrap_or_else(|e| plain(e.status(), &format!("{e}\n")))
    }
}

pub(crate) fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes))
        .map_err(|never: Infallible| match never {})
        .boxed()
}

pub(crate) fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(full(text.as_bytes().to_vec()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Runs a gateway on `listen` until `shutdown`; returns the bound address once listening.
pub async fn start(
    ledger: Arc<dyn Settlement>,
    net: NetHandle,
    config: GatewayConfig,
    listen: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), GatewayError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| GatewayError::Listen {
            addr: listen,
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|source| GatewayError::Listen {
            addr: listen,
            source,
        })?;
    let gw = Gateway::new(ledger, net, config);
    let task = tokio::spawn(gw.serve(listener, shutdown));
    Ok((bound, task))
}
