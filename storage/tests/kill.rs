//! The RocksDB slot store killed with SIGKILL at many points of its writes: a child process runs
//! a stream of creates, puts, imports and deletes, prints each one once the store has
//! acknowledged it and waits for a go-ahead before the next. The parent lets it go on once more
//! after a different number of acknowledgements each time and kills it at once, so the kill
//! lands inside the next write; then it reopens the store and checks that everything
//! acknowledged is there, byte for byte, that the accounting matches what is on disk, and that
//! the store takes writes again.

#[path = "conformance/suite.rs"]
#[allow(dead_code)] // the kill test needs the fixtures, not the checks
mod suite;

use atlas_storage::{RocksSlotStore, SlotKey, SlotStore};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use suite::Fixture;

const CHILD_ENV: &str = "ATLAS_KILL_TEST_STORE";
/// Marks the child's acknowledgements among what the test harness prints around them.
const ACK: &str = "ack: ";
const C: u64 = 64 * 1024;
const STRIPES: u64 = 8;
const ROUNDS: u16 = 64;

/// What round `r` writes: its own slot, filled shard by shard.
fn fixture(r: u16) -> Fixture {
    Fixture::new((r % 251) as u8, r, STRIPES, C)
}

/// The child's workload, acknowledging each write on stdout once it returned. Every third
/// round's slot comes in whole by import instead; every other round deletes the one before.
fn child(dir: &Path) {
    let store = RocksSlotStore::open(dir, u64::MAX).expect("child opens the store");
    let mut out = Acks {
        out: std::io::stdout().lock(),
        go: std::io::stdin().lock(),
    };
    for r in 0..ROUNDS {
        let f = fixture(r);
        if r % 3 == 2 {
            let scratch = dir.join(format!("import-{r}.tmp"));
            std::fs::write(&scratch, &f.bytes).expect("scratch");
            store.import_slot(f.key, f.spec, &scratch).expect("import");
            out.ack(format_args!("import {r}"));
        } else {
            store.create_slot(f.key, f.spec).expect("create");
            out.ack(format_args!("create {r}"));
            for s in 0..STRIPES {
                store.put_shard(f.key, &f.shard(s)).expect("put");
                out.ack(format_args!("put {r} {s}"));
            }
        }
        if r % 2 == 1 {
            store.delete_slot(fixture(r - 1).key).expect("delete");
            out.ack(format_args!("delete {}", r - 1));
        }
    }
}

/// The child's side of the exchange: an acknowledgement out, then a go-ahead in.
struct Acks<W, R> {
    out: W,
    go: R,
}

impl<W: Write, R: std::io::Read> Acks<W, R> {
    fn ack(&mut self, what: std::fmt::Arguments) {
        writeln!(self.out, "{ACK}{what}").expect("ack");
        self.out.flush().expect("ack");
        let mut go = [0u8];
        if self.go.read_exact(&mut go).is_err() {
            std::process::exit(0); // the parent is gone
        }
    }
}

/// What the parent saw acknowledged.
#[derive(Default)]
struct Acked {
    /// Stripes acknowledged, per round.
    puts: BTreeMap<u16, BTreeSet<u64>>,
    whole: BTreeSet<u16>,
    deleted: BTreeSet<u16>,
}

impl Acked {
    fn take(&mut self, line: &str) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| words[i].parse::<u64>().expect("a number");
        match words[0] {
            "create" => {
                self.puts.entry(num(1) as u16).or_default();
            }
            "put" => {
                self.puts.entry(num(1) as u16).or_default().insert(num(2));
            }
            "import" => {
                self.whole.insert(num(1) as u16);
            }
            "delete" => {
                self.deleted.insert(num(1) as u16);
            }
            other => panic!("unknown acknowledgement {other}"),
        }
    }
}

/// Everything acknowledged is there; the store's records, files and accounting agree.
fn check(dir: &Path, acked: &Acked, kill_at: usize) {
    let store = RocksSlotStore::open(dir, u64::MAX).expect("the store opens after a kill");
    let at = format!("(killed after {kill_at} acknowledgements)");
    assert!(
        store.misfiled().expect("misfiled").is_empty(),
        "no slot's files are missing or of the wrong length {at}"
    );
    let mut reserved = 0;
    let mut stored = 0;
    for (key, info) in store.list().expect("list") {
        reserved += info.spec.len();
        stored += info.present * info.spec.shard_size;
        let f = fixture(key.slot);
        assert_eq!(info.spec, f.spec, "slot {key} is the one written {at}");
        if info.complete() {
            let bytes = store.read(key, 0, info.spec.len()).expect("read");
            assert!(bytes == f.bytes, "slot {key} reads back its bytes {at}");
        }
    }
    let usage = store.usage();
    assert_eq!(usage.reserved, reserved, "reserved space is exact {at}");
    assert_eq!(usage.stored, stored, "stored bytes are exact {at}");

    let info = |r: u16| store.info(fixture(r).key).expect("info");
    for (&r, stripes) in &acked.puts {
        if acked.deleted.contains(&r) {
            continue;
        }
        let got = info(r).unwrap_or_else(|| panic!("created slot of round {r} is there {at}"));
        assert!(
            got.present >= stripes.len() as u64,
            "every acknowledged shard of round {r} is stored {at}"
        );
        let f = fixture(r);
        for &s in stripes {
            let bytes = store
                .read(f.key, s * C, C)
                .expect("acknowledged shard reads");
            assert!(
                bytes[..] == f.bytes[(s * C) as usize..((s + 1) * C) as usize],
                "shard {s} of round {r} holds its bytes {at}"
            );
        }
    }
    for &r in &acked.whole {
        if !acked.deleted.contains(&r) {
            assert!(
                info(r).is_some_and(|i| i.complete()),
                "imported slot of round {r} is whole {at}"
            );
        }
    }
    for &r in &acked.deleted {
        assert!(
            info(r).is_none(),
            "deleted slot of round {r} stays deleted {at}"
        );
    }
    // The store goes on: the slot being written when the kill came can be finished.
    let last = (0..ROUNDS)
        .rev()
        .find(|r| info(*r).is_some_and(|i| !i.complete()));
    if let Some(r) = last {
        let f = fixture(r);
        for s in 0..STRIPES {
            store
                .put_shard(f.key, &f.shard(s))
                .expect("put after restart");
        }
        assert!(
            info(r).is_some_and(|i| i.complete()),
            "round {r} completes after a restart"
        );
    }
    let listed: Vec<SlotKey> = store
        .list()
        .expect("list")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let stray: Vec<_> = std::fs::read_dir(dir.join("slots"))
        .expect("slots dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !listed
                .iter()
                .any(|k| n.starts_with(&format!("{}.{}.", k.object, k.slot)))
        })
        .collect();
    assert!(
        stray.is_empty(),
        "no files without a slot are left behind {at}: {stray:?}"
    );
}

#[test]
fn a_store_killed_at_any_write_keeps_everything_it_acknowledged() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let me = std::env::current_exe().expect("test binary");
    // Roughly 400 acknowledgements in a whole run; kill at spread-out points of it.
    for (attempt, kill_at) in [1usize, 2, 5, 9, 10, 17, 30, 41, 64, 99, 150, 222, 301]
        .into_iter()
        .enumerate()
    {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(&me)
            .args([
                "--exact",
                "a_store_killed_at_any_write_keeps_everything_it_acknowledged",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("child starts");
        let mut acked = Acked::default();
        let mut go = child.stdin.take().expect("stdin");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut seen = 0;
        while seen < kill_at {
            let Some(line) = lines.next() else { break };
            let line = line.expect("child output");
            // The test harness prints its own words too, on the same lines.
            if let Some((_, ack)) = line.split_once(ACK) {
                acked.take(ack);
                seen += 1;
                go.write_all(b"g").expect("go-ahead");
                go.flush().expect("go-ahead");
            }
        }
        // The child is inside its next write now.
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        assert_eq!(
            seen, kill_at,
            "attempt {attempt}: the child was killed mid-run"
        );
        check(dir.path(), &acked, kill_at);
    }
}
