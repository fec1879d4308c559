//! The local testnet as a newcomer meets it, all through the real binary and real processes:
//! `atlas testnet up`, pin a real video, watch it in headless Chromium (play, seek to the middle,
//! playback advances), read ranges through the gateway with a holder killed, `down`, and `up`
//! again resumes the same chain with the video still there.

mod common;

use common::{atlas, free_base_port, header, http, ok, Testnet};
use serde_json::Value;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// SIGKILLs the testnet provider (of the 6 in `dir`) whose key is `holder`.
fn kill_holder(dir: &Path, holder: &str) {
    let home = (0..6)
        .map(|i| dir.join(format!("provider-{i:02}")))
        .find(|home| {
            let out = atlas(&[("ATLAS_HOME", home)], &["key", "show"]);
            String::from_utf8_lossy(&out.stdout).trim() == holder
        })
        .expect("the holder is one of ours");
    let pid = std::fs::read_to_string(home.join("pid")).expect("pid file");
    let killed = Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .expect("kill");
    assert!(killed.success());
}

/// A real, playable H.264 video with sound: ffmpeg's test pattern.
fn make_video(path: &Path) {
    let out = Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "8",
        ])
        .args([
            "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", "25",
        ])
        .args(["-c:a", "aac", "-movflags", "+faststart"])
        .arg(path)
        .output()
        .expect("ffmpeg runs (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "ffmpeg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Chromium driven over WebDriver by chromedriver.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (scripts/test.sh installs chromium-driver)");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-quic", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--mute-audio",
                "--autoplay-policy=no-user-gesture-required",
                format!("--user-data-dir={}", profile.path().display()),
            ]
        }}}});
        let mut b = Self {
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"].as_str().expect("a session id").to_string();
        b.call(
            "POST",
            &format!("/session/{}/timeouts", b.session),
            Some(serde_json::json!({"script": 60_000, "pageLoad": 60_000})),
        );
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string());
        let (status, _, bytes) = http(self.port, method, path, &[], body.as_deref());
        let v: Value = serde_json::from_slice(&bytes).expect("WebDriver answers JSON");
        assert_eq!(status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn open(&self, url: &str) {
        self.call(
            "POST",
            &format!("/session/{}/url", self.session),
            Some(serde_json::json!({ "url": url })),
        );
    }

    fn run_async(&self, script: &str) -> Value {
        self.call(
            "POST",
            &format!("/session/{}/execute/async", self.session),
            Some(serde_json::json!({ "script": script, "args": [] })),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = std::panic::catch_unwind(|| {
                http(
                    self.port,
                    "DELETE",
                    &format!("/session/{}", self.session),
                    &[],
                    None,
                )
            });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Plays the first video on the page, seeks to its middle and waits for playback to move on.
/// The page's own deadline (40 s) turns a stall into a reported failure.
const PLAY_AND_SEEK: &str = r#"
const done = arguments[arguments.length - 1];
const v = document.querySelector('video');
if (!v) { done({ error: 'no <video> on the page' }); return; }
const out = {};
const fail = setTimeout(() => done({ error: 'stalled', readyState: v.readyState,
  currentTime: v.currentTime, mediaError: v.error && v.error.code, out }), 40000);
const advancePast = (from, then) => {
  const check = () => {
    if (v.currentTime > from + 0.5) { v.removeEventListener('timeupdate', check); then(); }
  };
  v.addEventListener('timeupdate', check);
};
v.muted = true;
v.play().then(() => advancePast(0, () => {
  out.started = v.currentTime;
  out.duration = v.duration;
  v.addEventListener('seeked', () => {
    out.seekedTo = v.currentTime;
    advancePast(v.currentTime, () => { out.after = v.currentTime; clearTimeout(fail); done(out); });
  }, { once: true });
  v.currentTime = v.duration / 2;
})).catch(e => { clearTimeout(fail); done({ error: 'play() refused: ' + e }); });
"#;

#[test]
fn a_newcomer_starts_a_testnet_pins_a_video_and_watches_it_in_a_browser() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("net");
    let dir_s = dir.display().to_string();
    let base = free_base_port();
    let base_s = base.to_string();
    let net = Testnet { dir: dir.clone() };

    let up = ok(
        atlas(
            &[],
            &[
                "testnet",
                "up",
                "--dir",
                &dir_s,
                "--providers",
                "6",
                "--base-port",
                &base_s,
            ],
        ),
        "testnet up",
    );
    assert!(up.contains("source"), "up says what to do next: {up}");
    let env_file = std::fs::read_to_string(dir.join("testnet.env")).expect("testnet.env written");
    assert!(env_file.contains("ATLAS_LEDGER="));
    assert!(dir.join("prometheus.yml").exists());

    let status: Value = serde_json::from_str(&ok(
        atlas(&[], &["testnet", "status", "--dir", &dir_s, "--json"]),
        "testnet status",
    ))
    .expect("status JSON");
    assert_eq!(
        status["running"], 8,
        "ledger, 6 providers and a gateway: {status}"
    );
    // Every process serves its metrics.
    for p in status["processes"].as_array().expect("processes") {
        let url = p["metrics"].as_str().expect("metrics url");
        let port: u16 = url
            .trim_start_matches("http://127.0.0.1:")
            .trim_end_matches("/metrics")
            .parse()
            .expect("port");
        // OpenMetrics to a scraper that asks for it, the classic text format otherwise.
        let accept = [("Accept", "application/openmetrics-text; version=1.0.0")];
        let (code, _, body) = http(port, "GET", "/metrics", &accept, None);
        assert_eq!(code, 200, "{url}");
        assert!(
            String::from_utf8_lossy(&body).contains("# EOF"),
            "{url} serves OpenMetrics"
        );
        let (code, _, body) = http(port, "GET", "/metrics", &[], None);
        assert_eq!(code, 200, "{url}");
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("# EOF") && text.contains("_total counter"),
            "{url} serves the classic text format"
        );
    }

    // Pin a real video as the funded creator, with the environment the testnet wrote.
    let creator = dir.join("creator");
    let ledger = env_file
        .lines()
        .find_map(|l| l.strip_prefix("export ATLAS_LEDGER="))
        .expect("ledger line")
        .trim_matches('\'')
        .to_string();
    let video = tmp.path().join("clip.mp4");
    make_video(&video);
    let original = std::fs::read(&video).expect("video");
    let mut pin = Command::new(env!("CARGO_BIN_EXE_atlas"));
    pin.args(["pin", &video.display().to_string(), "-q"])
        .env("ATLAS_HOME", &creator)
        .env("ATLAS_LEDGER", &ledger);
    let id = ok(pin.output().expect("pin"), "pin").trim().to_string();
    assert_eq!(id.len(), 64, "pin prints the object id: {id}");

    let gw = base + 2;
    let (code, _, page) = http(gw, "GET", "/", &[], None);
    let page = String::from_utf8_lossy(&page).into_owned();
    assert_eq!(code, 200);
    assert!(
        page.contains("clip.mp4") && page.contains(&id),
        "the catalogue lists the video"
    );

    // HEAD and Range as players use them.
    let object = format!("/v1/objects/{id}");
    let (code, head, _) = http(gw, "HEAD", &object, &[], None);
    assert_eq!(code, 200);
    assert_eq!(header(&head, "content-type"), Some("video/mp4"));
    assert_eq!(
        header(&head, "content-length"),
        Some(original.len().to_string().as_str())
    );
    assert_eq!(header(&head, "accept-ranges"), Some("bytes"));
    let mid = original.len() / 2;
    let (code, head, body) = http(
        gw,
        "GET",
        &object,
        &[("Range", &format!("bytes={mid}-{}", mid + 99_999))],
        None,
    );
    assert_eq!(code, 206);
    assert_eq!(
        header(&head, "content-range"),
        Some(format!("bytes {mid}-{}/{}", mid + 99_999, original.len()).as_str())
    );
    assert!(
        body == original[mid..mid + 100_000],
        "the range holds the right bytes"
    );
    let (code, _, _) = http(gw, "GET", &object, &[("Range", "bytes=999999999-")], None);
    assert_eq!(code, 416);
    let (code, _, _) = http(gw, "GET", "/v1/objects/not-hex", &[], None);
    assert_eq!(code, 400);

    // Headless Chromium plays the video from the page, seeks to the middle, and playback advances.
    let browser = Browser::start();
    browser.open(&format!("http://127.0.0.1:{gw}/"));
    let played = browser.run_async(PLAY_AND_SEEK);
    assert!(played.get("error").is_none(), "playback: {played}");
    let duration = played["duration"].as_f64().expect("duration");
    let seeked = played["seekedTo"].as_f64().expect("seeked");
    assert!(
        (duration - 8.0).abs() < 0.5,
        "the whole video is there: {played}"
    );
    assert!(
        (seeked - duration / 2.0).abs() < 1.0,
        "seeked to the middle: {played}"
    );
    assert!(
        played["after"].as_f64().expect("after") > seeked,
        "playback advanced after the seek"
    );
    drop(browser);

    // Kill a holder of a data slot: the gateway still serves every byte, rebuilt from parity.
    let st: Value = serde_json::from_str(&ok(
        {
            let mut c = Command::new(env!("CARGO_BIN_EXE_atlas"));
            c.args(["status", &id, "--json"])
                .env("ATLAS_HOME", &creator)
                .env("ATLAS_LEDGER", &ledger);
            c.output().expect("status")
        },
        "status",
    ))
    .expect("status JSON");
    kill_holder(
        &dir,
        st["slots"][0]["holder"].as_str().expect("slot 0 holder"),
    );
    let (code, _, body) = http(gw, "GET", &object, &[], None);
    assert_eq!(code, 200);
    assert!(
        body == original,
        "the whole video reads back identical with a holder down"
    );

    // Down loses nothing: up again resumes the chain, and the video is still listed and readable.
    let before_down: Value = serde_json::from_str(&ok(
        atlas(&[], &["testnet", "status", "--dir", &dir_s, "--json"]),
        "status before down",
    ))
    .expect("status JSON");
    let height_before = before_down["height"].as_u64().expect("height");
    ok(
        atlas(&[], &["testnet", "down", "--dir", &dir_s]),
        "testnet down",
    );
    let after_down: Value = serde_json::from_str(&ok(
        atlas(&[], &["testnet", "status", "--dir", &dir_s, "--json"]),
        "status after down",
    ))
    .expect("status JSON");
    assert_eq!(after_down["running"], 0);
    ok(
        atlas(&[], &["testnet", "up", "--dir", &dir_s]),
        "testnet up again",
    );
    let resumed: Value = serde_json::from_str(&ok(
        atlas(&[], &["testnet", "status", "--dir", &dir_s, "--json"]),
        "status after up",
    ))
    .expect("status JSON");
    assert_eq!(resumed["running"], 8);
    assert!(
        resumed["height"].as_u64().expect("height") >= height_before,
        "the chain resumed where it stopped, not from genesis"
    );
    let mut ls = Command::new(env!("CARGO_BIN_EXE_atlas"));
    ls.args(["ls", "--json"])
        .env("ATLAS_HOME", &creator)
        .env("ATLAS_LEDGER", &ledger);
    let ls: Value = serde_json::from_str(&ok(ls.output().expect("ls"), "ls")).expect("ls JSON");
    assert_eq!(ls["objects"][0]["object_id"], id.as_str());
    let (code, head, body) = http(gw, "GET", &object, &[], None);
    assert_eq!(code, 200);
    assert!(body == original, "the video survives down and up");
    assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));

    // A manifest cannot make the gateway's origin serve a page: HTML goes out as plain bytes,
    // with nosniff and a sandboxing policy.
    let page_file = tmp.path().join("page.html");
    let html = b"<html><body><script>document.title='owned'</script></body></html>";
    std::fs::write(&page_file, html).expect("html");
    let mut pin = Command::new(env!("CARGO_BIN_EXE_atlas"));
    pin.args([
        "pin",
        &page_file.display().to_string(),
        "--data-shards",
        "2",
        "--parity-shards",
        "1",
        "-q",
    ])
    .env("ATLAS_HOME", &creator)
    .env("ATLAS_LEDGER", &ledger);
    let page_id = ok(pin.output().expect("pin"), "pin html")
        .trim()
        .to_string();
    let page_object = format!("/v1/objects/{page_id}");
    let (code, head, body) = http(gw, "GET", &page_object, &[], None);
    assert_eq!(code, 200);
    assert!(body == html, "the bytes are served as they are");
    assert_eq!(
        header(&head, "content-type"),
        Some("application/octet-stream"),
        "text/html from a manifest is not served as a page"
    );
    assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
    assert!(header(&head, "content-security-policy").is_some_and(|c| c.contains("sandbox")));

    // With more holders down than the code can bear, the read fails cleanly before any header
    // is sent: a 502, never a 200 that is cut short.
    let page_status: Value = serde_json::from_str(&ok(
        {
            let mut c = Command::new(env!("CARGO_BIN_EXE_atlas"));
            c.args(["status", &page_id, "--json"])
                .env("ATLAS_HOME", &creator)
                .env("ATLAS_LEDGER", &ledger);
            c.output().expect("status")
        },
        "status",
    ))
    .expect("status JSON");
    for slot in 0..2 {
        kill_holder(
            &dir,
            page_status["slots"][slot]["holder"]
                .as_str()
                .expect("holder"),
        );
    }
    let (code, _, _) = http(gw, "GET", &page_object, &[], None);
    assert_eq!(code, 502, "an unreadable object is a clean 502");
    drop(net);
}
