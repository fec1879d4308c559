//! Crashes, as a power cut or the OOM killer would cause them, on a testnet of real processes:
//! providers killed with SIGKILL again and again while a video uploads to them, the ledger killed
//! right after blocks, the provider rebuilding a lost slot killed mid-rebuild, a slot file cut
//! short while its holder was down. After each, the
//! killed process comes back with `atlas testnet up NAME`, and what users care about holds: the
//! pin completes, the video reads back identical (with two holders down), no honest provider is
//! charged a missed proof, every token is accounted for, and every slot the ledger says a provider
//! holds is whole on its disk.

mod common;

use atlas_storage::ledger_store::LedgerStore;
use atlas_storage::rocks::RocksSlotStore;
use atlas_storage::SlotStore as _;
use common::{atlas, free_base_port, metric, ok, Testnet};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Six holders of a 4+2 object and two spares to repair it.
const PROVIDERS: usize = 8;
/// Slot stripes at the size pinned below: 16 MiB slots of 256 KiB shards.
const STRIPES: f64 = 64.0;

struct Net {
    dir: PathBuf,
    base: u16,
    creator: PathBuf,
    ledger: String,
}

impl Net {
    fn testnet(&self, args: &[&str]) -> String {
        let dir = self.dir.display().to_string();
        let mut all = vec!["testnet"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--dir", &dir]);
        ok(atlas(&[], &all), &format!("testnet {}", args.join(" ")))
    }

    fn creator(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_atlas"));
        c.env("ATLAS_HOME", &self.creator)
            .env("ATLAS_LEDGER", &self.ledger);
        c
    }

    fn status(&self, id: &str) -> Value {
        let out = self
            .creator()
            .args(["status", id, "--json"])
            .output()
            .expect("status");
        serde_json::from_str(&ok(out, "status")).expect("status JSON")
    }

    /// The ledger's current epoch, from its metrics (once it serves them).
    fn epoch(&self) -> u64 {
        until(
            "the ledger to serve its epoch",
            Duration::from_secs(60),
            || metric(self.base + 1, "atlas_ledger_epoch"),
        ) as u64
    }

    fn provider_home(&self, i: usize) -> PathBuf {
        self.dir.join(format!("provider-{i:02}"))
    }

    fn provider_metric(&self, i: usize, name: &str) -> f64 {
        metric(self.base + 11 + 2 * i as u16, name).unwrap_or(0.0)
    }

    /// The key of provider `i`.
    fn key_of(&self, i: usize) -> String {
        let out = atlas(&[("ATLAS_HOME", &self.provider_home(i))], &["key", "show"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Which provider has key `key`.
    fn provider_with_key(&self, key: &str) -> usize {
        (0..PROVIDERS)
            .find(|&i| self.key_of(i) == key)
            .expect("every holder is one of ours")
    }

    /// Reads the object back through the CLI and compares it with `original`.
    fn reads_back(&self, id: &str, original: &[u8], what: &str) {
        let out = self.dir.join("read-back");
        let got = self
            .creator()
            .args(["get", id, "-o", &out.display().to_string(), "--force"])
            .output()
            .expect("get");
        ok(got, what);
        assert!(
            std::fs::read(&out).expect("read back") == original,
            "{what}: the video reads back identical"
        );
    }
}

/// Polls `check` (every 10 ms) until it returns a value or `limit` passes.
fn until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Bytes no compressor or deduplicator shortens, from a fixed seed.
fn film(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

fn slots(status: &Value) -> &Vec<Value> {
    status["slots"].as_array().expect("slots")
}

#[test]
fn a_network_killed_again_and_again_loses_nothing_it_acknowledged() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let base = free_base_port();
    let mut net = Net {
        dir: tmp.path().join("net"),
        base,
        creator: tmp.path().join("net").join("creator"),
        ledger: String::new(),
    };
    let _guard = Testnet {
        dir: net.dir.clone(),
    };
    net.testnet(&[
        "up",
        "--providers",
        &PROVIDERS.to_string(),
        "--base-port",
        &base.to_string(),
        "--block-time",
        "200ms",
        "--epoch-blocks",
        "20",
        "--capacity",
        "1GiB",
    ]);
    let env = std::fs::read_to_string(net.dir.join("testnet.env")).expect("testnet.env");
    net.ledger = env
        .lines()
        .find_map(|l| l.strip_prefix("export ATLAS_LEDGER="))
        .expect("ledger line")
        .trim_matches('\'')
        .to_string();

    // 1. Providers killed during the upload: twice at once mid-slot, then again once resumed.
    let original = film(64 << 20);
    let file = tmp.path().join("film.bin");
    std::fs::write(&file, &original).expect("film");
    let mut pin = net
        .creator()
        .args(["pin", &file.display().to_string(), "-q"])
        .args(["--shard-size", "256KiB", "--epochs", "400"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pin starts");
    let received = "atlas_provider_shards_received_total";
    let mid_slot = |i: usize| {
        let n = net.provider_metric(i, received);
        (1.0..STRIPES).contains(&n)
    };
    let mut kills_mid_slot = 0;
    let killed_first: Vec<usize> = until("two uploads under way", Duration::from_secs(120), || {
        let busy: Vec<usize> = (0..PROVIDERS).filter(|&i| mid_slot(i)).take(2).collect();
        (busy.len() == 2).then_some(busy)
    });
    let names: Vec<String> = killed_first
        .iter()
        .map(|i| format!("provider-{i:02}"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    net.testnet(&[&["kill"][..], &names].concat());
    kills_mid_slot += 2;
    net.testnet(&[&["up"][..], &names].concat());
    // The same uploads resume on the restarted processes; kill one of them again while it does.
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && pin.try_wait().expect("pin").is_none() {
        if let Some(&i) = killed_first.iter().find(|&&i| mid_slot(i)) {
            let name = format!("provider-{i:02}");
            net.testnet(&["kill", &name]);
            kills_mid_slot += 1;
            net.testnet(&["up", &name]);
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = pin.wait_with_output().expect("pin ends");
    let id = ok(out, "pin with its providers killed under it")
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "pin prints the object id: {id}");
    assert!(kills_mid_slot >= 2);
    let st = net.status(&id);
    assert!(
        slots(&st).iter().all(|s| s["state"] == "active"),
        "every slot was accepted: {st}"
    );
    net.reads_back(&id, &original, "get after killed uploads");

    // 2. The ledger killed right after blocks, three times; honest provers lose nothing.
    let ledger_http = base + 1;
    for _ in 0..3 {
        let height = |_: ()| metric(ledger_http, "atlas_ledger_height");
        let seen = until(
            "the ledger to serve its height",
            Duration::from_secs(60),
            || height(()),
        );
        until("a new block", Duration::from_secs(60), || {
            height(()).filter(|h| *h > seen)
        });
        net.testnet(&["kill", "ledger"]);
        net.testnet(&["up", "ledger"]);
    }
    let after_kills = net.epoch();
    until("two more epochs", Duration::from_secs(120), || {
        (net.epoch() >= after_kills + 2).then_some(())
    });
    let st = net.status(&id);
    for s in slots(&st) {
        assert_eq!(s["misses"], 0, "no holder was charged a miss: {st}");
        assert!(
            s["proven_epoch"].as_u64().expect("proven") > after_kills,
            "every holder proved after the ledger's crashes: {st}"
        );
    }

    // 3. A holder lost for good; the spare that rebuilds its slot killed mid-rebuild.
    let holders: Vec<usize> = slots(&st)
        .iter()
        .map(|s| net.provider_with_key(s["holder"].as_str().expect("holder")))
        .collect();
    let lost = holders[0];
    let spares: Vec<usize> = (0..PROVIDERS).filter(|i| !holders.contains(i)).collect();
    assert_eq!(spares.len(), 2);
    net.testnet(&["kill", &format!("provider-{lost:02}")]);
    let rebuilding = "atlas_provider_repairs_running";
    let spare = until(
        "a spare to start rebuilding",
        Duration::from_secs(180),
        || {
            spares
                .iter()
                .copied()
                .find(|&i| net.provider_metric(i, rebuilding) >= 1.0)
        },
    );
    let spare_name = format!("provider-{spare:02}");
    net.testnet(&["kill", &spare_name]);
    net.testnet(&["up", &spare_name]);
    let spare_key = net.key_of(spare);
    until(
        "the rebuilt slot to be accepted",
        Duration::from_secs(180),
        || {
            let st = net.status(&id);
            let s = &slots(&st)[0];
            (s["holder"] == spare_key.as_str() && s["state"] == "active").then_some(())
        },
    );
    assert!(
        net.provider_metric(spare, "atlas_provider_repaired_slots_total") >= 1.0,
        "the restarted spare finished the rebuild it was killed in"
    );

    // 4. A slot file cut short behind its holder's back while it was down: at start the holder
    //    finds it, records it, and hands the slot back at once; the other spare rebuilds it.
    let other = spares.iter().copied().find(|&i| i != spare).expect("two");
    let damaged = holders[1];
    let damaged_name = format!("provider-{damaged:02}");
    net.testnet(&["kill", &damaged_name]);
    let data = net
        .provider_home(damaged)
        .join("slots")
        .join("slots")
        .join(format!("{id}.1.data"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&data)
        .expect("the holder's slot file");
    file.set_len(file.metadata().expect("len").len() / 2)
        .expect("truncate");
    drop(file);
    net.testnet(&["up", &damaged_name]);
    let other_key = net.key_of(other);
    until(
        "the damaged slot to be rebuilt elsewhere",
        Duration::from_secs(180),
        || {
            let st = net.status(&id);
            let s = &slots(&st)[1];
            (s["holder"] == other_key.as_str() && s["state"] == "active").then_some(())
        },
    );
    let status: Value = serde_json::from_str(&ok(
        atlas(
            &[("ATLAS_HOME", &net.provider_home(damaged))],
            &["provider", "status", "--json", "--ledger", &net.ledger],
        ),
        "provider status",
    ))
    .expect("provider status JSON");
    let found = status["damaged"].as_array().expect("damaged list");
    assert!(
        found
            .iter()
            .any(|d| d["object"] == id.as_str() && d["slot"] == 1),
        "provider status names the damaged slot: {status}"
    );
    assert!(
        status["slots"]
            .as_array()
            .expect("slots")
            .iter()
            .all(|s| !(s["object_id"] == id.as_str() && s["slot"] == 1)),
        "and no longer holds it: {status}"
    );

    // Two more holders down: both rebuilt slots are among the four that remain to read from.
    for &i in &holders[2..4] {
        net.testnet(&["kill", &format!("provider-{i:02}")]);
    }
    net.reads_back(
        &id,
        &original,
        "get with two holders down after the repairs",
    );

    // 5. At rest, the books balance and every disk matches the ledger.
    let st = net.status(&id);
    net.testnet(&["down"]);
    let chain = LedgerStore::open(&net.dir.join("ledger").join("ledger")).expect("ledger opens");
    let escrow = chain.resume().expect("resumes").expect("a chain").escrow;
    assert_eq!(
        escrow.total_supply(),
        escrow.minted(),
        "every token minted is somewhere"
    );
    for (j, s) in slots(&st).iter().enumerate() {
        let holder = net.provider_with_key(s["holder"].as_str().expect("holder"));
        assert_on_disk(&net.provider_home(holder), &id, j);
    }
}

/// The provider in `home` has slot `slot` of object `id` whole, and its store agrees with its
/// files.
fn assert_on_disk(home: &Path, id: &str, slot: usize) {
    let store = RocksSlotStore::open(&home.join("slots"), u64::MAX).expect("store opens");
    assert!(
        store.misfiled().expect("files checked").is_empty(),
        "no slot file of {} is missing or of the wrong length",
        home.display()
    );
    let list = store.list().expect("list");
    let (_, info) = list
        .iter()
        .find(|(k, _)| k.object.to_string() == id && k.slot as usize == slot)
        .unwrap_or_else(|| panic!("{} holds slot {slot}", home.display()));
    assert!(
        info.complete(),
        "slot {slot} is whole in {}",
        home.display()
    );
    let reserved: u64 = list.iter().map(|(_, i)| i.spec.len()).sum();
    assert_eq!(
        store.usage().reserved,
        reserved,
        "the store's accounting matches its slots"
    );
}
