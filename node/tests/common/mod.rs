//! What the end-to-end tests of the real binary share: running `atlas`, plain HTTP on
//! loopback, a free port range, and a guard that stops a testnet whatever happens.

#![allow(dead_code)] // each test file uses its own part of this

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub fn atlas(env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atlas"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run atlas")
}

pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A base port with the testnet's whole range free (ledger, gateway, up to 9 providers).
pub fn free_base_port() -> u16 {
    let seed = std::process::id() as u16;
    (0..200u16)
        .map(|i| 20_000 + (seed.wrapping_add(i * 97) % 400) * 100)
        .find(|&base| {
            (base..base + 30).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        })
        .expect("a free port range on loopback")
}

/// A minimal HTTP/1.1 exchange on a fresh connection: (status, headers, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 << 10];
    let end = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = s.read(&mut buf).expect("read");
        assert!(
            n > 0,
            "the server closed the connection before a complete response head"
        );
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head[9..12].parse().expect("status code");
    let mut body = raw[end + 4..].to_vec();
    let length = header(&head, "content-length").and_then(|v| v.parse::<usize>().ok());
    let chunked = header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked"));
    if method == "HEAD" {
        body.clear();
    } else if let Some(len) = length {
        while body.len() < len {
            let n = s.read(&mut buf).expect("read");
            assert!(n > 0, "the body ended after {} of {len} bytes", body.len());
            body.extend_from_slice(&buf[..n]);
        }
    } else {
        // Chunked or close-delimited: this client asked for the connection to close.
        s.read_to_end(&mut body).expect("read");
        if chunked {
            body = dechunk(&body);
        }
    }
    (status, head, body)
}

pub fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = usize::from_str_radix(
            std::str::from_utf8(&raw[..line_end]).expect("hex").trim(),
            16,
        )
        .expect("chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub struct Testnet {
    pub dir: PathBuf,
}

impl Drop for Testnet {
    fn drop(&mut self) {
        // Never leave processes behind, even when an assertion failed.
        let _ = atlas(
            &[],
            &[
                "testnet",
                "down",
                "--dir",
                &self.dir.display().to_string(),
                "-q",
            ],
        );
    }
}

/// The value of metric `name` (no labels) in a process's classic-text /metrics, if there.
pub fn metric(port: u16, name: &str) -> Option<f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == name).then(|| v.trim().parse().ok())?
    })
}
