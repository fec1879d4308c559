//! What the gateway holds at most, and how long it waits for a client: every connection, every
//! decoded byte and every decoding thread is counted, and a client that stops moving is dropped.
//! Over a limit a request is answered 503 with `Retry-After`, never by growing.

use hyper::body::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The gateway's limits.
#[derive(Debug, Clone)]
pub struct GatewayLimits {
    /// Open HTTP connections at most; one more is answered 503 and closed.
    pub max_connections: usize,
    /// How long a client may take to send a request's head.
    pub header_timeout: Duration,
    /// How long a connection may sit with nothing moving (no request arriving, no response byte
    /// taken by the client) before it is closed.
    pub idle_timeout: Duration,
    /// Decoded object bytes waiting to be taken by clients, over all responses.
    pub buffer_bytes: usize,
    /// Reads decoding at once (each holds a blocking thread and a stripe's shards).
    pub max_decodes: usize,
    /// How long a request waits for buffer room or a decoder before it is answered 503.
    pub queue_wait: Duration,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(20),
            buffer_bytes: 64 << 20,
            max_decodes: 8,
            queue_wait: Duration::from_secs(5),
        }
    }
}

/// The largest stripe buffer kept between decodes (a 4+2 stripe of 1 MiB shards is 6 MiB).
const MAX_KEPT_SCRATCH: usize = 8 << 20;

/// How long a client holding decoded bytes may take none before, when the buffer is short, its
/// connection is dropped to make room for others.
const STALL_GRACE: Duration = Duration::from_secs(1);

/// The shared counters behind the limits.
#[derive(Debug)]
pub(super) struct Budget {
    pub(super) limits: GatewayLimits,
    pub(super) connections: Arc<Semaphore>,
    /// Permits are bytes.
    pub(super) buffer: Arc<Semaphore>,
    pub(super) decodes: Arc<Semaphore>,
    /// Stripe buffers of finished decodes, kept for the next (one a decoder at most).
    scratch: Mutex<Vec<Vec<u8>>>,
    /// Open connections, to find the ones that hold bytes and take none.
    open: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
}

/// Why a request found no room.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum Busy {
    #[error("the gateway is sending as many bytes as it may hold; try again shortly")]
    Buffer,
    #[error("every decoder of the gateway is busy; try again shortly")]
    Decoders,
}

impl Budget {
    pub(super) fn new(limits: GatewayLimits) -> Self {
        Self {
            connections: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            buffer: Arc::new(Semaphore::new(limits.buffer_bytes.max(1))),
            decodes: Arc::new(Semaphore::new(limits.max_decodes.max(1))),
            scratch: Mutex::new(Vec::new()),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            limits,
        }
    }

    /// A new connection's activity, known to the budget until the returned guard is dropped.
    pub(super) fn open(self: &Arc<Self>) -> (Arc<Activity>, Registered) {
        let activity = Activity::new();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, activity.clone());
        (
            activity,
            Registered {
                id,
                budget: self.clone(),
            },
        )
    }

    /// Drops every connection that holds decoded bytes its client has not taken for
    /// [`STALL_GRACE`]; returns how many.
    fn shed_stalled(&self) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut shed = 0;
        for a in open.values() {
            if a.holding.load(Ordering::Relaxed) > 0 && a.idle_for(STALL_GRACE) {
                a.drop_it.cancel();
                shed += 1;
            }
        }
        shed
    }

    /// Room for `len` decoded bytes, waiting at most `queue_wait`. When there is none at once,
    /// clients that sit on bytes they do not take are dropped first.
    pub(super) async fn bytes(&self, len: usize) -> Result<OwnedSemaphorePermit, Busy> {
        let want = len.clamp(1, self.limits.buffer_bytes.max(1)) as u32;
        if let Ok(permit) = self.buffer.clone().try_acquire_many_owned(want) {
            return Ok(permit);
        }
        let shed = self.shed_stalled();
        if shed > 0 {
            tracing::debug!(shed, "dropped clients that take no bytes to make room");
        }
        tokio::time::timeout(
            self.limits.queue_wait,
            self.buffer.clone().acquire_many_owned(want),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or(Busy::Buffer)
    }

    /// A stripe buffer for one decode: a kept one, or a new empty one.
    pub(super) fn scratch(&self) -> Vec<u8> {
        self.scratch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// Keeps a decode's stripe buffer for the next, unless as many are kept as there are
    /// decoders or it is larger than [`MAX_KEPT_SCRATCH`] (a rare huge stripe is not held).
    pub(super) fn return_scratch(&self, buf: Vec<u8>) {
        if buf.capacity() > MAX_KEPT_SCRATCH {
            return;
        }
        let mut kept = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < self.limits.max_decodes {
            kept.push(buf);
        }
    }

    /// A decoder, waiting at most `queue_wait`.
    pub(super) async fn decoder(&self) -> Result<OwnedSemaphorePermit, Busy> {
        tokio::time::timeout(self.limits.queue_wait, self.decodes.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(Busy::Decoders)
    }
}

/// One open connection in the budget's list, taken out when dropped.
pub(super) struct Registered {
    id: u64,
    budget: Arc<Budget>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.budget
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// Decoded bytes that keep their share of the buffer, counted as held by their connection,
/// until the client has taken them (hyper drops a frame once it is written to the socket).
pub(super) fn held(bytes: Vec<u8>, permit: OwnedSemaphorePermit, by: &Arc<Activity>) -> Bytes {
    struct Held {
        bytes: Vec<u8>,
        _permit: OwnedSemaphorePermit,
        by: Arc<Activity>,
    }
    impl AsRef<[u8]> for Held {
        fn as_ref(&self) -> &[u8] {
            &self.bytes
        }
    }
    impl Drop for Held {
        fn drop(&mut self) {
            self.by.holding.fetch_sub(1, Ordering::Relaxed);
        }
    }
    by.holding.fetch_add(1, Ordering::Relaxed);
    Bytes::from_owner(Held {
        bytes,
        _permit: permit,
        by: by.clone(),
    })
}

/// What moves on one connection: when something last did, and whether the gateway itself is
/// working on it (then the client is not the one keeping it still).
#[derive(Debug)]
pub(super) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    working: AtomicUsize,
    /// Pieces of decoded bytes the client has not taken yet.
    holding: AtomicUsize,
    /// Cancelled to drop the connection (it sat on bytes while others waited for room).
    pub(super) drop_it: CancellationToken,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            working: AtomicUsize::new(0),
            holding: AtomicUsize::new(0),
            drop_it: CancellationToken::new(),
        })
    }

    /// Something moved now.
    pub(super) fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// The gateway works on this connection until the guard is dropped.
    pub(super) fn working(self: &Arc<Self>) -> Working {
        self.touch();
        self.working.fetch_add(1, Ordering::Relaxed);
        Working(self.clone())
    }

    /// Whether nothing moved for `idle` while the gateway was not working.
    pub(super) fn idle_for(&self, idle: Duration) -> bool {
        let now = self.start.elapsed().as_millis() as u64;
        self.working.load(Ordering::Relaxed) == 0
            && now.saturating_sub(self.last_ms.load(Ordering::Relaxed)) > idle.as_millis() as u64
    }
}

/// See [`Activity::working`].
pub(super) struct Working(Arc<Activity>);

impl Drop for Working {
    fn drop(&mut self) {
        self.0.touch();
        self.0.working.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers a connection over the cap with a 503 and closes it, without reading its request.
pub(super) async fn refuse_connection(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt as _;
    let text = "too many connections; try again shortly\n";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// A connection's socket that marks its [`Activity`] whenever bytes move either way.
pub(super) struct Watched {
    io: tokio::net::TcpStream,
    activity: Arc<Activity>,
}

impl Watched {
    pub(super) fn new(io: tokio::net::TcpStream, activity: Arc<Activity>) -> Self {
        Self { io, activity }
    }
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(polled, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(polled, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
