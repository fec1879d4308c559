//! A soak run: a testnet of real processes under pins, gets, gateway readers and slow clients,
//! with providers and the ledger killed (SIGKILL) and restarted at random, a provider whose
//! disk is small enough to fill, and slot files corrupted behind their holders' backs. At the
//! end, with every fault stopped and the network given time to repair, it checks what users
//! care about: every pinned video reads back identical, every token is accounted for, every slot
//! the ledger assigns is whole on its holder's disk, and no process grew past its limit. It
//! prints a summary table and exits non-zero if a check failed.
//!
//! `atlas-soak --atlas PATH [--minutes N] [--dir DIR] [--seed N]` (`scripts/soak.sh` builds and
//! runs it).

use atlas_storage::ledger_store::LedgerStore;
use atlas_storage::{RocksSlotStore, SlotStore as _};
use atlas_testnet::{Member, Role, Testnet};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PROVIDERS: usize = 12;
/// The chain's pace: 10 s epochs, so a provider killed for longer than `max_misses` (3) epochs
/// is repaired, and one back within a few seconds is not. Shorter epochs on two cores with a
/// dozen processes, readers and pins make honest but starved provers miss proofs.
const BLOCK_TIME: &str = "500ms";
/// The most objects pinned at once; past it, the operations are reads. Proofs per epoch grow
/// with what is stored, and this is a test of faults, not of the ledger's throughput.
const MAX_PINNED: usize = 120;
/// How long a long outage lasts: past `max_misses` epochs, so its slots are freed and repaired.
const LONG_OUTAGE: u64 = 40;
/// The provider whose slots live on a small file system of their own, which fills.
const SMALL_DISK: usize = PROVIDERS - 1;
/// Its size: just above the free-space floor a provider keeps for its database.
const SMALL_DISK_MIB: u64 = 320;
/// Stalled clients and half-sent request heads held open against the gateway.
const SLOW_CLIENTS: usize = 100;
/// The most any process may hold resident, MiB (the gateway's and providers' design limits).
const RSS_LIMIT_GATEWAY: f64 = 300.0;
const RSS_LIMIT_PROVIDER: f64 = 300.0;
const RSS_LIMIT_LEDGER: f64 = 300.0;

struct Opts {
    atlas: PathBuf,
    minutes: f64,
    dir: PathBuf,
    seed: u64,
}

fn main() {
    let opts = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("atlas-soak: {e}");
            eprintln!("usage: atlas-soak --atlas PATH [--minutes N] [--dir DIR] [--seed N]");
            std::process::exit(2);
        }
    };
    match run(&opts) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("atlas-soak: {e}");
            std::process::exit(1);
        }
    }
}

fn parse() -> Result<Opts, String> {
    let mut args = std::env::args().skip(1);
    let mut opts = Opts {
        atlas: PathBuf::new(),
        minutes: 30.0,
        dir: std::env::temp_dir().join("atlas-soak"),
        seed: std::process::id() as u64,
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--atlas" => opts.atlas = value()?.into(),
            "--minutes" => {
                opts.minutes = value()?.parse().map_err(|e| format!("--minutes: {e}"))?
            }
            "--dir" => opts.dir = value()?.into(),
            "--seed" => opts.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if opts.atlas.as_os_str().is_empty() {
        return Err("--atlas is required".into());
    }
    if !(opts.minutes > 0.0 && opts.minutes <= 24.0 * 60.0) {
        return Err("--minutes must be more than 0 and at most a day".into());
    }
    Ok(opts)
}

/// A small xorshift generator: the run is repeatable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Counts of what happened, shown in the summary.
#[derive(Default)]
struct Tally {
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl Tally {
    fn add(&self, what: &'static str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(what)
            .or_default() += 1;
    }
    fn get(&self, what: &str) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(what)
            .copied()
            .unwrap_or(0)
    }
}

struct Pinned {
    id: String,
    file: PathBuf,
    len: u64,
}

struct Soak<'a> {
    opts: &'a Opts,
    net: Testnet,
    members: Vec<Member>,
    creator: PathBuf,
    ledger: String,
    tally: Arc<Tally>,
    pinned: Arc<Mutex<Vec<Pinned>>>,
    stop: Arc<AtomicBool>,
}

impl Soak<'_> {
    fn atlas(&self, args: &[&str]) -> Output {
        Command::new(&self.opts.atlas)
            .args(args)
            .env("ATLAS_HOME", &self.creator)
            .env("ATLAS_LEDGER", &self.ledger)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.opts.atlas.display()))
    }

    /// `atlas testnet ARGS`, tried again (up to three times, a few seconds apart) if it fails:
    /// a failure is reported and counted, and only a lasting one ends the run.
    fn testnet(&self, args: &[&str]) -> Result<String, String> {
        let mut last = String::new();
        for attempt in 0..3 {
            match self.testnet_once(args) {
                Ok(out) => return Ok(out),
                Err(e) => {
                    println!("  attempt {} failed: {e}", attempt + 1);
                    self.tally.add("testnet commands failed");
                    last = e;
                    std::thread::sleep(Duration::from_secs(3));
                }
            }
        }
        Err(last)
    }

    fn testnet_once(&self, args: &[&str]) -> Result<String, String> {
        let dir = self.net.dir.display().to_string();
        let mut all = vec!["testnet"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--dir", &dir, "-q"]);
        let out = Command::new(&self.opts.atlas)
            .args(&all)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "atlas {}: {}",
                all.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn gateway_port(&self) -> u16 {
        self.members.last().expect("planned").http_port
    }
}

fn run(opts: &Opts) -> Result<bool, String> {
    let started = Instant::now();
    let _ = std::fs::remove_dir_all(&opts.dir);
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    let dir = opts.dir.join("testnet");
    let base = free_base_port().ok_or("no free port range on loopback")?;

    // The small disk: a file system of its own under the provider's slots, if this machine
    // lets us mount one.
    let small = dir.join(format!("provider-{SMALL_DISK:02}")).join("slots");
    std::fs::create_dir_all(&small).map_err(|e| e.to_string())?;
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={SMALL_DISK_MIB}m"),
            "tmpfs",
        ])
        .arg(&small)
        .output()
        .is_ok_and(|o| o.status.success());
    let _unmount = Unmount(mounted.then(|| small.clone()));

    let mut soak = Soak {
        opts,
        net: Testnet {
            dir: dir.clone(),
            plan: atlas_testnet::Plan {
                providers: PROVIDERS,
                base_port: base,
                block_time: BLOCK_TIME.into(),
                epoch_blocks: 20,
                capacity: "2GiB".into(),
            },
        },
        members: Vec::new(),
        creator: dir.join("creator"),
        ledger: String::new(),
        tally: Arc::new(Tally::default()),
        pinned: Arc::new(Mutex::new(Vec::new())),
        stop: Arc::new(AtomicBool::new(false)),
    };
    soak.members = soak.net.members();
    let dir_s = dir.display().to_string();
    let up = Command::new(&opts.atlas)
        .args(["testnet", "up", "--dir", &dir_s, "-q"])
        .args(["--providers", &PROVIDERS.to_string()])
        .args(["--base-port", &base.to_string()])
        .args([
            "--block-time",
            BLOCK_TIME,
            "--epoch-blocks",
            "20",
            "--capacity",
            "2GiB",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !up.status.success() {
        return Err(format!(
            "testnet up: {}",
            String::from_utf8_lossy(&up.stderr).trim()
        ));
    }
    let _down = Down(opts.atlas.clone(), dir_s.clone());
    let env = std::fs::read_to_string(dir.join("testnet.env")).map_err(|e| e.to_string())?;
    soak.ledger = env
        .lines()
        .find_map(|l| l.strip_prefix("export ATLAS_LEDGER="))
        .ok_or("testnet.env names no ledger")?
        .trim_matches('\'')
        .to_string();
    println!(
        "soak: {} minutes on a testnet of {PROVIDERS} providers in {}{}",
        opts.minutes,
        dir.display(),
        if mounted {
            format!(" (provider-{SMALL_DISK:02} on a {SMALL_DISK_MIB} MiB disk)")
        } else {
            " (no small disk: this machine cannot mount one)".into()
        }
    );

    let peaks = Arc::new(Mutex::new(BTreeMap::<String, f64>::new()));
    let soak = &soak;
    let mut rng = Rng(opts.seed | 1);
    let deadline = started + Duration::from_secs_f64(opts.minutes * 60.0);
    let outcome = std::thread::scope(|s| {
        s.spawn(|| sample_rss(soak, &peaks));
        s.spawn(|| slow_clients(soak));
        for r in 0..2u64 {
            s.spawn(move || readers(soak, opts.seed.wrapping_add(r)));
        }
        let faults = chaos(soak, &mut rng, deadline);
        soak.stop.store(true, Ordering::Relaxed);
        faults
    });
    outcome?;
    let checks = settle_and_check(soak)?;
    let peaks = peaks.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(summary(soak, started.elapsed(), &peaks, &checks))
}

/// The fault loop: pins, kills, restarts and corruptions until `deadline`.
fn chaos(soak: &Soak, rng: &mut Rng, deadline: Instant) -> Result<(), String> {
    let mut down: Vec<(String, Instant)> = Vec::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        // Bring back what was killed once its time is up (some providers stay down for more
        // than an epoch, so their slots are missed and repaired).
        let now = Instant::now();
        let back: Vec<String> = down
            .iter()
            .filter(|(_, at)| *at <= now)
            .map(|(m, _)| m.clone())
            .collect();
        if !back.is_empty() {
            let names: Vec<&str> = back.iter().map(String::as_str).collect();
            soak.testnet(&[&["up"][..], &names].concat())?;
            soak.tally.add("restarts");
            down.retain(|(m, _)| !back.contains(m));
        }
        match rng.below(10) {
            0..=3 if soak.pinned.lock().unwrap_or_else(|p| p.into_inner()).len() < MAX_PINNED => {
                pin(soak, rng)
            }
            4 => {
                let p = format!("provider-{:02}", rng.below(PROVIDERS as u64));
                // At most one provider down at a time, so every object stays readable.
                if down.is_empty() {
                    soak.testnet(&["kill", &p])?;
                    soak.tally.add("provider kills");
                    let secs = if rng.below(3) == 0 {
                        LONG_OUTAGE
                    } else {
                        1 + rng.below(4)
                    };
                    down.push((p, Instant::now() + Duration::from_secs(secs)));
                }
            }
            5 if rng.below(2) == 0 => {
                soak.testnet(&["kill", "ledger"])?;
                soak.tally.add("ledger kills");
                soak.testnet(&["up", "ledger"])?;
            }
            6 => {
                if corrupt(soak, rng) {
                    soak.tally.add("slot files corrupted");
                }
            }
            _ => get(soak, rng),
        }
        if n.is_multiple_of(20) {
            let left = deadline.saturating_duration_since(Instant::now());
            println!(
                "  {:>4.0} min left: {} pinned, {} provider kills, {} ledger kills",
                left.as_secs_f64() / 60.0,
                soak.tally.get("pins"),
                soak.tally.get("provider kills"),
                soak.tally.get("ledger kills")
            );
        }
        std::thread::sleep(Duration::from_millis(500 + rng.below(1500)));
    }
    if !down.is_empty() {
        soak.testnet(&["up"])?;
        soak.tally.add("restarts");
    }
    Ok(())
}

fn pin(soak: &Soak, rng: &mut Rng) {
    let n = soak.tally.get("pin attempts");
    soak.tally.add("pin attempts");
    let len = (1 + rng.below(24)) << 20;
    let file = soak.opts.dir.join(format!("video-{n:04}.bin"));
    let mut x = rng.next() | 1;
    let bytes: Vec<u8> = (0..len / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    if std::fs::write(&file, &bytes).is_err() {
        return;
    }
    let out = soak.atlas(&[
        "pin",
        &file.display().to_string(),
        "-q",
        "--epochs",
        "100000",
    ]);
    if out.status.success() {
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        soak.tally.add("pins");
        soak.pinned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pinned { id, file, len });
    } else {
        soak.tally.add("pins refused");
        let why = String::from_utf8_lossy(&out.stderr);
        println!("  pin refused: {}", why.lines().last().unwrap_or("").trim());
        let _ = std::fs::remove_file(&file);
    }
}

fn get(soak: &Soak, rng: &mut Rng) {
    let pick = {
        let p = soak.pinned.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_empty() {
            return;
        }
        let i = rng.below(p.len() as u64) as usize;
        (p[i].id.clone(), p[i].file.clone())
    };
    if reads_back(soak, &pick.0, &pick.1) {
        soak.tally.add("gets");
    } else {
        soak.tally.add("gets failed");
    }
}

fn reads_back(soak: &Soak, id: &str, file: &Path) -> bool {
    let out = soak.opts.dir.join("read-back.bin");
    let got = soak.atlas(&["get", id, "-o", &out.display().to_string(), "--force", "-q"]);
    got.status.success() && std::fs::read(&out).ok() == std::fs::read(file).ok()
}

/// Overwrites 4 KiB in the middle of one slot file of a random provider, as bit rot or a stray
/// write would.
fn corrupt(soak: &Soak, rng: &mut Rng) -> bool {
    let p = rng.below(SMALL_DISK as u64);
    let slots = soak
        .net
        .dir
        .join(format!("provider-{p:02}"))
        .join("slots")
        .join("slots");
    let Ok(entries) = std::fs::read_dir(&slots) else {
        return false;
    };
    let files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "data"))
        .collect();
    if files.is_empty() {
        return false;
    }
    let f = &files[rng.below(files.len() as u64) as usize];
    use std::os::unix::fs::FileExt as _;
    let Ok(file) = std::fs::OpenOptions::new().write(true).open(f) else {
        return false;
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let garbage: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    file.write_all_at(&garbage, len / 2).is_ok()
}

/// Readers through the gateway: random ranges of pinned objects, each checked byte for byte.
fn readers(soak: &Soak, seed: u64) {
    let mut rng = Rng(seed | 1);
    while !soak.stop.load(Ordering::Relaxed) {
        let pick = {
            let p = soak.pinned.lock().unwrap_or_else(|p| p.into_inner());
            (!p.is_empty()).then(|| {
                let i = rng.below(p.len() as u64) as usize;
                (p[i].id.clone(), p[i].file.clone(), p[i].len)
            })
        };
        let Some((id, file, len)) = pick else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        let from = rng.below(len);
        let to = (from + (1 << 20)).min(len) - 1;
        let ok = range(soak.gateway_port(), &id, from, to).is_some_and(|body| {
            std::fs::read(&file)
                .is_ok_and(|all| all.get(from as usize..=to as usize) == Some(&body[..]))
        });
        soak.tally.add(if ok {
            "range reads"
        } else {
            "range reads failed"
        });
    }
}

fn range(port: u16, id: &str, from: u64, to: u64) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET /v1/objects/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes={from}-{to}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    raw.starts_with(b"HTTP/1.1 206")
        .then(|| raw[end + 4..].to_vec())
}

/// Clients that never read what they asked for, and request heads never finished: the gateway
/// must hold them within its limits and shed them, never grow.
fn slow_clients(soak: &Soak) {
    let port = soak.gateway_port();
    let mut held: Vec<TcpStream> = Vec::new();
    while !soak.stop.load(Ordering::Relaxed) {
        let id = soak
            .pinned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .map(|p| p.id.clone());
        while held.len() < SLOW_CLIENTS {
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                break;
            };
            let head = match (&id, held.len() % 2) {
                (Some(id), 0) => format!("GET /v1/objects/{id} HTTP/1.1\r\nHost: x\r\n\r\n"),
                _ => "GET /v1/objects/".to_string(),
            };
            if s.write_all(head.as_bytes()).is_err() {
                break;
            }
            soak.tally.add("slow clients");
            held.push(s);
        }
        // The gateway sheds stalled connections; those it closed are replaced next time.
        std::thread::sleep(Duration::from_secs(2));
        held.retain(|s| !is_closed(s));
    }
}

/// True once the gateway has closed `s` (looked at without blocking).
fn is_closed(s: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    match s.peek(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Resident memory of every process, sampled each second; keeps the peaks.
fn sample_rss(soak: &Soak, peaks: &Mutex<BTreeMap<String, f64>>) {
    while !soak.stop.load(Ordering::Relaxed) {
        for m in &soak.members {
            if let Some(kib) = atlas_testnet::running_pid(m).and_then(atlas_testnet::rss_kib) {
                let mib = kib as f64 / 1024.0;
                let mut p = peaks.lock().unwrap_or_else(|p| p.into_inner());
                let e = p.entry(m.name.clone()).or_default();
                *e = e.max(mib);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One line of the final checks.
struct Check {
    what: String,
    ok: bool,
}

/// Waits for every deal to be whole again, then checks reads, tokens and disks.
fn settle_and_check(soak: &Soak) -> Result<Vec<Check>, String> {
    let mut checks = Vec::new();
    soak.testnet(&["up"])?;
    let pinned: Vec<(String, PathBuf)> = soak
        .pinned
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|p| (p.id.clone(), p.file.clone()))
        .collect();
    println!(
        "settling: waiting for every slot of {} objects to be held",
        pinned.len()
    );
    let settle = Instant::now() + Duration::from_secs(300);
    let mut unsettled = pinned.len();
    while Instant::now() < settle {
        unsettled = pinned
            .iter()
            .filter(|(id, _)| !all_active(soak, id))
            .count();
        if unsettled == 0 {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    checks.push(Check {
        what: format!("every slot of every object held and proving ({unsettled} not)"),
        ok: unsettled == 0,
    });
    let bad: Vec<&String> = pinned
        .iter()
        .filter(|(id, file)| !reads_back(soak, id, file))
        .map(|(id, _)| id)
        .collect();
    checks.push(Check {
        what: format!(
            "every pinned video reads back identical ({} of {})",
            pinned.len() - bad.len(),
            pinned.len()
        ),
        ok: bad.is_empty(),
    });
    let repairs: u64 = pinned
        .iter()
        .filter_map(|(id, _)| status(soak, id))
        .map(|st| {
            st["slots"]
                .as_array()
                .map_or(0, |s| s.iter().filter_map(|s| s["repairs"].as_u64()).sum())
        })
        .sum();
    for _ in 0..repairs {
        soak.tally.add("repairs");
    }
    soak.testnet(&["down"])?;

    let chain = LedgerStore::open(&soak.net.dir.join("ledger").join("ledger"))
        .map_err(|e| format!("ledger store: {e}"))?;
    let escrow = chain
        .resume()
        .map_err(|e| format!("ledger store: {e}"))?
        .ok_or("the ledger has no chain")?
        .escrow;
    checks.push(Check {
        what: format!(
            "tokens conserved (supply {} = minted {})",
            escrow.total_supply(),
            escrow.minted()
        ),
        ok: escrow.total_supply() == escrow.minted(),
    });
    let mut missing = Vec::new();
    let mut ledger_used = 0u64;
    let mut active_bytes = 0u64;
    let mut disk_reserved = 0u64;
    for m in soak
        .members
        .iter()
        .filter(|m| matches!(m.role, Role::Provider(_)))
    {
        let key = atlas_node::config::home::Home::resolve(Some(m.home.clone()))
            .and_then(|h| h.load_key())
            .map_err(|e| format!("{}: {e}", m.name))?
            .public();
        let store = RocksSlotStore::open(&m.home.join("slots"), u64::MAX)
            .map_err(|e| format!("{}: {e}", m.name))?;
        let held = store.list().map_err(|e| e.to_string())?;
        disk_reserved += store.usage().reserved;
        ledger_used += escrow.provider(&key).map_or(0, |p| p.used);
        for (id, deal) in escrow.deals() {
            for (j, s) in deal.slots.iter().enumerate() {
                let active = matches!(s.status, atlas_protocol::escrow::SlotStatus::Active { .. });
                if deal.ended || !active || s.holder != Some(key) {
                    continue;
                }
                active_bytes += deal.terms.slot_len;
                let whole = held.iter().any(|(k, i)| {
                    k.object == deal.terms.object && k.slot as usize == j && i.complete()
                });
                if !whole {
                    missing.push(format!("{} slot {j} on {}", id.short(), m.name));
                }
            }
        }
    }
    checks.push(Check {
        what: format!(
            "every slot the ledger assigns is whole on its holder's disk ({} not: {})",
            missing.len(),
            missing.join(", ")
        ),
        ok: missing.is_empty(),
    });
    checks.push(Check {
        what: format!(
            "providers' disks hold every slot they prove ({} MiB proving, {} MiB reserved on disk; the ledger counts {} MiB assigned, pending claims included)",
            active_bytes >> 20,
            disk_reserved >> 20,
            ledger_used >> 20
        ),
        ok: disk_reserved >= active_bytes,
    });
    Ok(checks)
}

fn status(soak: &Soak, id: &str) -> Option<serde_json::Value> {
    let out = soak.atlas(&["status", id, "--json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())?
}

fn all_active(soak: &Soak, id: &str) -> bool {
    status(soak, id).is_some_and(|st| {
        st["slots"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["state"] == "active"))
    })
}

fn summary(soak: &Soak, took: Duration, peaks: &BTreeMap<String, f64>, checks: &[Check]) -> bool {
    let t = &soak.tally;
    println!();
    println!("soak summary ({:.1} minutes)", took.as_secs_f64() / 60.0);
    println!("{:<34} {:>10}", "operations", "count");
    for what in [
        "pins",
        "pins refused",
        "gets",
        "gets failed",
        "range reads",
        "range reads failed",
        "slow clients",
    ] {
        println!("  {what:<32} {:>10}", t.get(what));
    }
    println!("{:<34} {:>10}", "faults injected", "count");
    for what in [
        "provider kills",
        "ledger kills",
        "restarts",
        "slot files corrupted",
        "testnet commands failed",
    ] {
        println!("  {what:<32} {:>10}", t.get(what));
    }
    println!("  {:<32} {:>10}", "repairs (slot claims)", t.get("repairs"));
    println!("{:<34} {:>10} {:>10}", "peak RSS", "MiB", "limit");
    let mut all_ok = true;
    for (name, mib) in peaks {
        let limit = match name.as_str() {
            "gateway" => RSS_LIMIT_GATEWAY,
            "ledger" => RSS_LIMIT_LEDGER,
            _ => RSS_LIMIT_PROVIDER,
        };
        let ok = *mib <= limit;
        all_ok &= ok;
        println!(
            "  {name:<32} {mib:>10.0} {limit:>10.0}{}",
            if ok { "" } else { "  OVER" }
        );
    }
    println!("checks");
    for c in checks {
        all_ok &= c.ok;
        println!("  [{}] {}", if c.ok { "ok" } else { "FAILED" }, c.what);
    }
    all_ok
}

/// A base port with room for the ledger, the gateway and every provider.
fn free_base_port() -> Option<u16> {
    let seed = std::process::id() as u16;
    (0..200u16)
        .map(|i| 30_000 + (seed.wrapping_add(i * 97) % 300) * 100)
        .find(|&base| {
            (base..base + 10 + 2 * PROVIDERS as u16 + 2)
                .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        })
}

/// Stops the testnet when the run ends, however it ends.
struct Down(PathBuf, String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(&self.0)
            .args(["testnet", "down", "--dir", &self.1, "-q"])
            .output();
    }
}

/// Unmounts the small disk when the run ends.
struct Unmount(Option<PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        if let Some(p) = &self.0 {
            let _ = Command::new("umount").arg(p).output();
        }
    }
}
