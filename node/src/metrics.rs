//! `/metrics` over HTTP (hyper): each process serves its own `prometheus-client` registry in
//! OpenMetrics text, with the content type Prometheus asks for.

use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The content type of OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

fn body(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// `registry` as an OpenMetrics response.
pub fn openmetrics(registry: &Registry) -> Response<Body> {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        let mut r = Response::new(body("metrics encoding failed\n"));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return r;
    }
    let mut r = Response::new(body(text));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
    r
}

/// Serves `GET /metrics` on `addr` until `shutdown`. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let registry = Arc::new(registry);
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let stream = tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                conn = listener.accept() => match conn {
                    Ok((s, _)) => s,
                    Err(_) => continue,
                },
            };
            let registry = registry.clone();
            connections.spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let registry = registry.clone();
                        async move {
                            Ok::<_, Infallible>(match req.uri().path() {
                                "/metrics" | "/" => openmetrics(&registry),
                                _ => {
                                    let mut r = Response::new(body("try /metrics\n"));
                                    *r.status_mut() = StatusCode::NOT_FOUND;
                                    r
                                }
                            })
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .header_read_timeout(std::time::Duration::from_secs(5))
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn metrics_are_openmetrics_with_help_for_every_family() {
        let mut registry = Registry::with_prefix("atlas_test");
        registry.register("shards", "Shards seen", Counter::<u64>::default());
        let r = openmetrics(&registry);
        assert_eq!(r.headers()[header::CONTENT_TYPE], OPENMETRICS);
        let text = futures::executor::block_on(r.into_body().collect())
            .expect("body")
            .to_bytes();
        let text = String::from_utf8(text.to_vec()).expect("utf-8");
        assert!(text.ends_with("# EOF\n"), "{text}");
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let family = line.split_whitespace().nth(2).expect("a name");
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "{family} has no help text"
            );
        }
    }
}
