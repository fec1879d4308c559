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
//! Every connection, decoded byte and decoder is counted against [`GatewayLimits`]; over a limit
//! the answer is 503 with `Retry-After`.

mod limits;
mod media;
mod object;
mod page;
pub mod range;

use crate::client::ClientError;
use crate::ledger::{LedgerError, Settlement};
use crate::net::NetHandle;
use atlas_protocol::PublicKey;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
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

use limits::{Activity, Budget, Watched};
pub use limits::{Busy, GatewayLimits};
pub use range::{parse_range, RangeSpec};

pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// The first and the longest wait after a failed `accept`.
const ACCEPT_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a request could not be served; each maps to one status.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("cannot read the object: {0}")]
    Read(String),
    #[error(transparent)]
    Busy(#[from] Busy),
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
            Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
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
    pub limits: GatewayLimits,
}

#[derive(Default)]
struct Metrics {
    requests: Counter,
    bytes: Counter,
    degraded: Counter,
    errors: Counter,
    objects: Gauge,
    connections: Gauge,
    shed: Counter,
    dropped_idle: Counter,
}

/// The gateway's state, shared by every connection.
pub struct Gateway {
    ledger: Arc<dyn Settlement>,
    net: NetHandle,
    config: GatewayConfig,
    pool: Pool,
    budget: Arc<Budget>,
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
            "degraded_stripes",
            "Stripes of object reads rebuilt from parity because holders were down",
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
        registry.register(
            "connections",
            "Open HTTP connections",
            metrics.connections.clone(),
        );
        registry.register(
            "shed",
            "Connections and requests answered 503 because a limit was reached",
            metrics.shed.clone(),
        );
        registry.register(
            "dropped_idle",
            "Connections closed because nothing moved on them for the idle timeout, or because they sat on decoded bytes while other requests waited for room",
            metrics.dropped_idle.clone(),
        );
        Arc::new(Self {
            ledger,
            net,
            budget: Arc::new(Budget::new(config.limits.clone())),
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
        // After a failed accept (out of file descriptors, say) wait before the next, longer each
        // time, so the loop never spins.
        let mut backoff = ACCEPT_BACKOFF_MIN;
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = listener.accept() => match accepted {
                    Ok(a) => {
                        backoff = ACCEPT_BACKOFF_MIN;
                        a
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "accept failed");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                        continue;
                    }
                },
            };
            let Ok(permit) = self.budget.connections.clone().try_acquire_owned() else {
                self.metrics.shed.inc();
                // The refusal itself is bounded: beyond twice the cap, the socket is just closed.
                if connections.len() < 2 * self.budget.limits.max_connections {
                    connections.spawn(limits::refuse_connection(stream));
                }
                continue;
            };
            let _ = stream.set_nodelay(true);
            let gw = self.clone();
            let shutdown = shutdown.clone();
            let span = tracing::debug_span!("http", %peer);
            connections.spawn(
                async move {
                    let _permit = permit;
                    gw.metrics.connections.inc();
                    gw.connection(stream, shutdown).await;
                    gw.metrics.connections.dec();
                }
                .instrument(span),
            );
        }
    }

    /// Serves one connection until it ends, goes still for the idle timeout, or `shutdown`.
    async fn connection(
        self: &Arc<Self>,
        stream: tokio::net::TcpStream,
        shutdown: CancellationToken,
    ) {
        let limits = &self.budget.limits;
        let (activity, _registered) = self.budget.open();
        activity.touch();
        let gw = self.clone();
        let on_request = activity.clone();
        let service = hyper::service::service_fn(move |req| {
            let (gw, activity) = (gw.clone(), on_request.clone());
            async move {
                let _working = activity.working();
                Ok::<_, Infallible>(gw.handle(req, &activity).await)
            }
        });
        let io = hyper_util::rt::TokioIo::new(Watched::new(stream, activity.clone()));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(io, service);
        tokio::pin!(conn);
        let mut check = tokio::time::interval(limits.idle_timeout / 4);
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended");
                    }
                    return;
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    // A client that stopped reading does not hold the shutdown up.
                    let _ = tokio::time::timeout(limits.idle_timeout, conn.as_mut()).await;
                    return;
                }
                _ = activity.drop_it.cancelled() => {
                    self.metrics.dropped_idle.inc();
                    return;
                }
                _ = check.tick() => if activity.idle_for(limits.idle_timeout) {
                    self.metrics.dropped_idle.inc();
                    tracing::debug!(idle = ?limits.idle_timeout, "nothing moved on the connection; closing it");
                    return;
                },
            }
        }
    }

    async fn handle(
        self: &Arc<Self>,
        req: Request<Incoming>,
        activity: &Arc<Activity>,
    ) -> Response<Body> {
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
            "/metrics" => Ok(crate::metrics::answer(&req, &self.registry)),
            p => match p.strip_prefix("/v1/objects/") {
                Some(id) => {
                    let range = req
                        .headers()
                        .get(header::RANGE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    self.object(id, range.as_deref(), head, activity).await
                }
                _ => Ok(plain(
                    StatusCode::NOT_FOUND,
                    "no such page; objects are at /v1/objects/{id}\n",
                )),
            },
        };
        result.unwrap_or_else(|e| {
            let mut r = plain(e.status(), &format!("{e}\n"));
            if r.status() == StatusCode::SERVICE_UNAVAILABLE {
                self.metrics.shed.inc();
                r.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            r
        })
    }
}

pub(crate) fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
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
