//! `/metrics` over HTTP (hyper): each process serves its own `prometheus-client` registry in
//! OpenMetrics text to a client that asks for it (Prometheus does, in its `Accept` header), and
//! in the classic Prometheus text format (0.0.4) otherwise, which `promtool check metrics` and
//! older scrapers read.

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
/// The content type of the classic Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics as `req` asks for them: OpenMetrics if its `Accept` names it, else classic text.
pub fn answer<B>(req: &Request<B>, registry: &Registry) -> Response<Body> {
    let wants_openmetrics = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        return openmetrics(registry);
    }
    let mut r = openmetrics(registry);
    if r.status() != StatusCode::OK {
        return r;
    }
    let mut text = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    *r.body_mut() = body(classic_text(&text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROMETHEUS_TEXT),
    );
    r
}

/// OpenMetrics text rewritten as classic Prometheus text: a counter family's `HELP` and `TYPE`
/// name its `_total` samples, `UNIT` lines and the closing `# EOF` go.
fn classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut pending: Vec<&str> = Vec::new();
    let mut counter = false;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            pending.clear();
            pending.push(line);
            counter = false;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            counter = rest.ends_with(" counter");
            pending.push(line);
            continue;
        }
        for head in pending.drain(..) {
            let mut words = head.splitn(4, ' ');
            let (hash, kind, name, rest) = (
                words.next().unwrap_or("#"),
                words.next().unwrap_or(""),
                words.next().unwrap_or(""),
                words.next().unwrap_or(""),
            );
            let suffix = if counter && !name.ends_with("_total") {
                "_total"
            } else {
                ""
            };
            out.push_str(&format!("{hash} {kind} {name}{suffix} {rest}\n"));
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

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
                                "/metrics" | "/" => answer(&req, &registry),
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
    fn without_openmetrics_in_accept_counters_are_named_by_their_samples() {
        let mut registry = Registry::with_prefix("atlas_test");
        registry.register("shards", "Shards seen", Counter::<u64>::default());
        let req = Request::new(());
        let r = answer(&req, &registry);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROMETHEUS_TEXT);
        let text = futures::executor::block_on(r.into_body().collect())
            .expect("body")
            .to_bytes();
        let text = String::from_utf8(text.to_vec()).expect("utf-8");
        assert!(
            text.contains("# HELP atlas_test_shards_total Shards seen"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE atlas_test_shards_total counter"),
            "{text}"
        );
        assert!(text.contains("\natlas_test_shards_total 0"), "{text}");
        assert!(!text.contains("# EOF"), "{text}");
    }

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
