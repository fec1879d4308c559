//! `/metrics` over plain HTTP: each process serves its own `prometheus-client` registry.

use anyhow::{Context as _, Result};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Largest request head read before answering.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Serves `GET /metrics` on `addr` until `shutdown`. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Mutex<Registry>>,
    shutdown: CancellationToken,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let conn = tokio::select! {
                _ = shutdown.cancelled() => break,
                conn = listener.accept() => conn,
            };
            let Ok((mut stream, _)) = conn else { continue };
            let registry = registry.clone();
            tokio::spawn(async move {
                let mut head = vec![0u8; MAX_REQUEST_HEAD];
                let n = match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    stream.read(&mut head),
                )
                .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
                let line = String::from_utf8_lossy(&head[..n]);
                let ok = line.starts_with("GET /metrics ") || line.starts_with("GET / ");
                let (status, ctype, body) = if ok {
                    let mut body = String::new();
                    {
                        // Encoding is quick and never awaits: the lock is never held across .await.
                        let reg = registry.lock().unwrap_or_else(|p| p.into_inner());
                        let _ = prometheus_client::encoding::text::encode(&mut body, &reg);
                    }
                    (
                        "200 OK",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        body,
                    )
                } else {
                    ("404 Not Found", "text/plain", "try /metrics\n".to_string())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(bound)
}
