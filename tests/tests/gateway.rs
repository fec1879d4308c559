//! The gateway against hostile HTTP clients, played over real TCP on loopback: half-sent request
//! heads, clients that ask for a whole video and never read, and one connection too many. What the
//! gateway's users care about: it answers a connection over its cap at once with a 503 to retry,
//! it lets go of every client that holds it still, and an honest viewer is served byte for byte
//! afterwards.

use atlas_node::gateway::{self, GatewayConfig, GatewayLimits};
use atlas_tests::{new_key, wait_for, Cluster};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

/// Sends `request` on a new connection and reads the whole answer (the request asks the gateway
/// to close the connection after it).
async fn fetch(addr: SocketAddr, request: &str) -> anyhow::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await?;
    Ok(answer)
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: gateway\r\n{extra}Connection: close\r\n\r\n")
}

/// The body of an HTTP answer (the gateway sends a length, never chunks, for objects).
fn body(answer: &[u8]) -> &[u8] {
    let at = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    &answer[at + 4..]
}

/// A gauge or counter from the gateway's metrics, once it answers them.
async fn metric(addr: SocketAddr, name: &str) -> anyhow::Result<Option<f64>> {
    let answer = fetch(addr, &get("/metrics", "")).await?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(body(&answer)).into_owned();
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_hold_the_gateway_still_are_let_go_and_honest_viewers_are_served() {
    tokio::time::timeout(Duration::from_secs(240), async {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = Cluster::start(dir.path(), 6).await.expect("cluster");
        // 64 KiB shards at 4+2: 256 KiB stripes, so the video is many pieces.
        let (data, manifest, _) = cluster
            .pin_random(dir.path(), 6 << 20, 4, 2)
            .await
            .expect("pinned");
        let path = format!("/v1/objects/{}", manifest.id());
        let client = cluster.ledger.client(&new_key()).await.expect("client");
        let net = client.net().clone();
        const CAP: usize = 8;
        let limits = GatewayLimits {
            max_connections: CAP,
            header_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(15),
            // Room for a few stripes in all: stalled readers cannot take more than that.
            buffer_bytes: 4 << 20,
            max_decodes: 2,
            queue_wait: Duration::from_secs(5),
        };
        let shutdown = CancellationToken::new();
        let (addr, task) = gateway::start(
            Arc::new(client),
            net,
            GatewayConfig {
                creators: Vec::new(),
                limits,
            },
            "127.0.0.1:0".parse().expect("addr"),
            shutdown.clone(),
        )
        .await
        .expect("gateway listens");

        // Half the cap: request heads that stop half way. The rest but one: a whole-video GET
        // each, never read.
        let half_head = format!("GET {path} HTTP/1.1\r\nHost: gate");
        let mut hostile = Vec::new();
        for i in 0..CAP - 1 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            let sent = if i < CAP / 2 {
                half_head.clone()
            } else {
                format!("GET {path} HTTP/1.1\r\nHost: gateway\r\n\r\n")
            };
            s.write_all(sent.as_bytes()).await.expect("sent");
            hostile.push(s);
        }
        // The gateway has taken every one of them (the metrics request is the last connection
        // the cap allows).
        wait_for("the hostile connections to be open", WAIT, || async {
            let n = metric(addr, "atlas_gateway_connections").await?;
            Ok((n == Some(CAP as f64)).then_some(()))
        })
        .await
        .expect("every hostile connection is open");
        let mut last = TcpStream::connect(addr).await.expect("connect");
        last.write_all(half_head.as_bytes()).await.expect("sent");
        hostile.push(last);

        // One connection over the cap: an immediate 503 that says when to try again.
        let answer = fetch(addr, &get(&path, "")).await.expect("an answer");
        let head = String::from_utf8_lossy(&answer);
        assert!(head.starts_with("HTTP/1.1 503"), "over the cap: {head}");
        assert!(head.contains("Retry-After: 1"), "over the cap: {head}");

        // Every hostile connection is let go: none of them holds the gateway.
        wait_for("the hostile clients to be dropped", WAIT, || async {
            let n = metric(addr, "atlas_gateway_connections").await?;
            Ok((n == Some(1.0)).then_some(()))
        })
        .await
        .expect("the gateway closed every hostile connection");
        for mut s in hostile {
            // Whatever the kernel still held for it, then the end of the stream.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        }
        assert!(
            metric(addr, "atlas_gateway_shed_total")
                .await
                .expect("metrics")
                .unwrap_or(0.0)
                >= 1.0
        );

        // An honest viewer gets the video, and a range of it, byte for byte.
        let answer = fetch(addr, &get(&path, "")).await.expect("video");
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        assert!(body(&answer) == data.as_slice(), "the video differs");
        let answer = fetch(addr, &get(&path, "Range: bytes=1000000-2999999\r\n"))
            .await
            .expect("range");
        assert!(answer.starts_with(b"HTTP/1.1 206"));
        assert!(
            body(&answer) == &data[1_000_000..3_000_000],
            "the range differs"
        );

        shutdown.cancel();
        task.await.expect("gateway stops");
    })
    .await
    .expect("within the test's time");
}
