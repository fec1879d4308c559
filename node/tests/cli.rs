//! The `atlas` binary as a user runs it: encode, verify, decode, and clear refusals of bad input.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let env = Self {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let out = env.atlas(&["key", "gen"]);
        assert!(out.status.success(), "key gen: {}", stderr(&out));
        env
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn atlas(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_atlas"))
            .args(args)
            .env("ATLAS_HOME", self.path("home"))
            .current_dir(self.dir.path())
            .output()
            .expect("run atlas")
    }

    /// Writes a pseudo-random file and encodes it; returns (file bytes, encoded dir).
    fn encoded(&self, size: usize, extra: &[&str]) -> (Vec<u8>, PathBuf) {
        let mut data = vec![0u8; size];
        blake3::Hasher::new()
            .update(&size.to_le_bytes())
            .finalize_xof()
            .fill(&mut data);
        let input = self.path("video.mp4");
        fs::write(&input, &data).expect("write input");
        let enc = self.path("enc");
        let mut args = vec![
            "encode",
            "video.mp4",
            "--out",
            "enc",
            "--shard-size",
            "64KiB",
        ];
        args.extend_from_slice(extra);
        let out = self.atlas(&args);
        assert!(out.status.success(), "encode: {}", stderr(&out));
        (data, enc)
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A failure is exit status 1 with exactly one line on stderr.
fn assert_fails_with(out: &Output, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

fn corrupt(path: &Path, at: u64) {
    let mut bytes = fs::read(path).expect("read slot");
    bytes[at as usize] ^= 0x55;
    fs::write(path, bytes).expect("write slot");
}

#[test]
fn encode_then_decode_returns_identical_bytes_with_json_reports() {
    let env = Env::new();
    let (data, _) = env.encoded(1_000_000, &["--json"]);
    let out = env.atlas(&["verify", "enc", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    assert_eq!(report["slots"].as_array().map(Vec::len), Some(6));
    assert_eq!(report["recoverable"], true);
    let out = env.atlas(&["decode", "enc", "--out", "back.mp4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs::read(env.path("back.mp4")).expect("output") == data);
}

#[test]
fn decode_survives_m_slots_deleted_or_corrupted_and_verify_names_them() {
    let env = Env::new();
    let (data, enc) = env.encoded(777_777, &["-k", "4", "-m", "2"]);
    fs::remove_file(enc.join("slot-001.data")).expect("delete slot 1");
    corrupt(&enc.join("slot-003.data"), 70_000);
    let out = env.atlas(&["verify", "enc"]);
    assert_fails_with(&out, "2 of 6 slots bad (1, 3)");
    let report = stdout(&out);
    assert!(report.contains("slot   1  missing"), "{report}");
    assert!(report.contains("slot   3  corrupted"), "{report}");
    let out = env.atlas(&["decode", "enc", "--out", "back.mp4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs::read(env.path("back.mp4")).expect("output") == data);
}

#[test]
fn a_truncated_slot_and_a_lost_outboard_are_survived() {
    let env = Env::new();
    let (data, enc) = env.encoded(500_000, &[]);
    let slot = enc.join("slot-000.data");
    let len = fs::metadata(&slot).expect("slot").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&slot)
        .and_then(|f| f.set_len(len - 1000))
        .expect("truncate");
    fs::remove_file(enc.join("slot-002.obao")).expect("remove outboard");
    let out = env.atlas(&["verify", "enc"]);
    assert_fails_with(&out, "1 of 6 slots bad (0)");
    assert!(stdout(&out).contains("truncated"), "{}", stdout(&out));
    let out = env.atlas(&["decode", "enc", "--out", "back.mp4"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs::read(env.path("back.mp4")).expect("output") == data);
}

#[test]
fn more_than_m_lost_is_refused_and_writes_nothing() {
    let env = Env::new();
    env.encoded(300_000, &[]);
    for j in [0, 2] {
        fs::remove_file(env.path(&format!("enc/slot-00{j}.data"))).expect("delete");
    }
    corrupt(&env.path("enc/slot-005.data"), 10);
    let out = env.atlas(&["decode", "enc", "--out", "back.mp4"]);
    assert_fails_with(&out, "cannot rebuild");
    assert!(stderr(&out).contains("nothing was written"));
    assert!(!env.path("back.mp4").exists());
    let leftovers: Vec<_> = fs::read_dir(env.dir.path())
        .expect("list")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "no partial output left behind");
}

#[test]
fn a_manifest_edited_after_signing_is_rejected() {
    let env = Env::new();
    env.encoded(200_000, &[]);
    let manifest = env.path("enc/manifest.atlas");
    let original = fs::read(&manifest).expect("manifest");
    // Flip a byte inside the signed body (past the magic and length prefix).
    let mut edited = original.clone();
    edited[30] ^= 0x01;
    fs::write(&manifest, &edited).expect("write");
    assert_fails_with(&env.atlas(&["verify", "enc"]), "manifest rejected");
    assert_fails_with(
        &env.atlas(&["decode", "enc", "--out", "x"]),
        "manifest rejected",
    );
    assert!(!env.path("x").exists());
    // A damaged signature over the original bytes is rejected too.
    let mut resigned = original;
    let n = resigned.len();
    resigned[n - 5] ^= 0x80;
    fs::write(&manifest, &resigned).expect("write");
    assert_fails_with(&env.atlas(&["verify", "enc"]), "signature");
}

#[test]
fn bad_input_gets_one_clear_line() {
    let env = Env::new();
    assert_fails_with(
        &env.atlas(&["encode", "nope.mp4", "--out", "e"]),
        "cannot open nope.mp4",
    );
    assert_fails_with(
        &env.atlas(&["decode", "nothing", "--out", "x"]),
        "does not exist",
    );
    fs::create_dir(env.path("empty")).expect("mkdir");
    assert_fails_with(&env.atlas(&["verify", "empty"]), "no manifest.atlas");
    fs::write(env.path("f"), b"abc").expect("write");
    assert_fails_with(
        &env.atlas(&["encode", "f", "--out", "e", "--shard-size", "100KiB"]),
        "power of two",
    );
    assert_fails_with(
        &env.atlas(&["encode", "f", "--out", "e", "-m", "0"]),
        "parity shards",
    );
    env.encoded(1000, &[]);
    assert_fails_with(
        &env.atlas(&["encode", "video.mp4", "--out", "enc"]),
        "already holds files",
    );
    assert!(env
        .atlas(&["decode", "enc", "--out", "out.bin"])
        .status
        .success());
    assert_fails_with(
        &env.atlas(&["decode", "enc", "--out", "out.bin"]),
        "already exists",
    );
    // Usage errors exit 2.
    assert_eq!(env.atlas(&["encode"]).status.code(), Some(2));
    // Encoding without a key says how to make one.
    let out = Command::new(env!("CARGO_BIN_EXE_atlas"))
        .args(["encode", "f", "--out", "e2"])
        .env("ATLAS_HOME", env.path("nohome"))
        .current_dir(env.dir.path())
        .output()
        .expect("run");
    assert_fails_with(&out, "atlas key gen");
}

/// Local input someone else prepared: a FIFO instead of a file is refused at once (it would block
/// an open forever), and a link planted where decode writes its temporary file is never followed.
#[test]
fn hostile_local_input_is_refused_without_hanging_or_following_links() {
    let env = Env::new();
    let fifo = env.path("pipe.mp4");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    assert_fails_with(
        &env.atlas(&["encode", "pipe.mp4", "--out", "e"]),
        "not a regular file",
    );
    let (data, _) = env.encoded(200_000, &[]);
    fs::rename(env.path("enc/manifest.atlas"), env.path("manifest.keep")).expect("move");
    let made = Command::new("mkfifo")
        .arg(env.path("enc/manifest.atlas"))
        .status()
        .expect("mkfifo");
    assert!(made.success());
    assert_fails_with(&env.atlas(&["verify", "enc"]), "not a regular file");
    fs::remove_file(env.path("enc/manifest.atlas")).expect("rm");
    fs::rename(env.path("manifest.keep"), env.path("enc/manifest.atlas")).expect("move back");
    // A link where the temporary file goes, pointing at a file of the victim's.
    fs::write(env.path("precious"), b"keep me").expect("write");
    std::os::unix::fs::symlink(env.path("precious"), env.path(".out.bin.atlas-partial"))
        .expect("symlink");
    let out = env.atlas(&["decode", "enc", "--out", "out.bin"]);
    assert!(out.status.success(), "decode: {}", stderr(&out));
    assert_eq!(fs::read(env.path("precious")).expect("read"), b"keep me");
    assert!(fs::read(env.path("out.bin")).expect("read") == data);
}

#[test]
fn key_gen_refuses_to_overwrite_and_show_prints_the_same_key() {
    let env = Env::new();
    let shown = env.atlas(&["key", "show"]);
    assert!(shown.status.success());
    assert_eq!(stdout(&shown).trim().len(), 64);
    assert_fails_with(&env.atlas(&["key", "gen"]), "already holds a key");
    let again = env.atlas(&["key", "show"]);
    assert_eq!(stdout(&again), stdout(&shown));
}
