//! `atlas-bench`: the numbers behind Atlas's performance targets, with their references measured in
//! the same run. Run it through `scripts/bench.sh`.

use atlas_protocol::challenge::Challenge;
use atlas_protocol::erasure::{encode, SlotOutput};
use atlas_protocol::tree::{shard_level, Outboard, VerifiedShard};
use atlas_protocol::{DealId, Layout, ObjectId};
use atlas_storage::{RocksSlotStore, SlotKey, SlotSpec, SlotStore};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

struct Opts {
    dir: PathBuf,
    atlas: PathBuf,
    size: u64,
    rss_size: u64,
    codec_size: u64,
    tmpfs: PathBuf,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn arg_size(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            let (num, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
            let n: u64 = num.parse().unwrap_or(0);
            n * match unit {
                "GiB" => GIB,
                "MiB" => MIB,
                _ => 1,
            }
        })
        .unwrap_or(default)
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "atlas-bench [--size 1GiB] [--rss-size 4GiB] [--codec-size 256MiB] [--network-only | --testnet-only | --ledger-only | --scrub-only | --put-siege-only]\n\
             --network-only runs only the network and gateway sections, --testnet-only only the\n\
             50-provider testnet, --ledger-only only the ledger at 100,000 deals, --scrub-only the\n\
             scrubber's cost, --put-siege-only a provider under 200 stalled uploads\n\
             env: ATLAS_BIN (the atlas binary), ATLAS_BENCH_DIR (scratch on the disk to measure), \
             ATLAS_BENCH_TMPFS (default /dev/shm)"
        );
        return Ok(());
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/tmp".into());
    let opts = Opts {
        dir: std::env::var_os("ATLAS_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".cache/atlas/bench")),
        atlas: std::env::var_os("ATLAS_BIN")
            .map(PathBuf::from)
            .ok_or("set ATLAS_BIN to the atlas binary (scripts/bench.sh does)")?,
        size: arg_size(&args, "--size", GIB),
        rss_size: arg_size(&args, "--rss-size", 4 * GIB),
        codec_size: arg_size(&args, "--codec-size", 256 * MIB),
        tmpfs: std::env::var_os("ATLAS_BENCH_TMPFS")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/dev/shm".into()),
    };
    fs::create_dir_all(&opts.dir).map_err(|e| format!("{}: {e}", opts.dir.display()))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "Atlas benchmark: input {} MiB, scratch {}, tmpfs {}, {cores} cores",
        opts.size / MIB,
        opts.dir.display(),
        opts.tmpfs.display()
    );
    println!(
        "MB/s are 10^6 bytes of input per second; each figure is the median of {RUNS} runs.\n"
    );

    let input = opts.dir.join(format!("input-{}.bin", opts.size));
    make_input(&input, opts.size).map_err(|e| format!("making input: {e}"))?;

    let bench_home = opts.dir.join("home");
    if !bench_home.join("key").exists() {
        atlas(&opts, &bench_home, &["key", "gen"])?;
    }

    if args.iter().any(|a| a == "--network-only") {
        return network(&opts, &input);
    }
    if args.iter().any(|a| a == "--testnet-only") {
        return testnet(&opts);
    }
    if args.iter().any(|a| a == "--scrub-only") {
        return scrub_cpu(&opts);
    }
    if args.iter().any(|a| a == "--ledger-only") {
        return ledger(&opts);
    }
    if args.iter().any(|a| a == "--put-siege-only") {
        return put_siege_section(&opts);
    }

    // Peak memory of encoding a large (sparse, so quick to read) file.
    let big = opts.dir.join("sparse-big.bin");
    File::create(&big)
        .and_then(|f| f.set_len(opts.rss_size))
        .map_err(|e| format!("making sparse input: {e}"))?;
    let enc_big = opts.dir.join("enc-big");
    let _ = fs::remove_dir_all(&enc_big);
    // Measured first, while this process is small: the kernel counts a child's pre-exec image
    // (a copy of this process) in its peak.
    let launcher = self_rss_kib();
    let rss = peak_rss_kib(
        Command::new(&opts.atlas)
            .args([
                "encode",
                &big.to_string_lossy(),
                "--out",
                &enc_big.to_string_lossy(),
                "-q",
            ])
            .env("ATLAS_HOME", &bench_home)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    )?;
    let _ = fs::remove_dir_all(&enc_big);
    let _ = fs::remove_file(&big);
    let peak_rss = format!(
        "{:<46} {:>9} {:>22} {:>9}",
        format!(
            "peak RSS, atlas encode of a {} GiB file",
            opts.rss_size / GIB
        ),
        format!("{:.1} MiB", rss as f64 / 1024.0),
        format!("(launcher {:.1} MiB)", launcher as f64 / 1024.0),
        "< 64 MiB"
    );

    // References.
    let blake = throughput(opts.size, || {}, || hash_file(&input).map(|_| ()))?;
    let disk_out = opts.dir.join("write-ref.bin");
    let write_disk = throughput(
        opts.size,
        || drop(fs::remove_file(&disk_out)),
        || seq_write(&disk_out, opts.size * 3 / 2),
    )?;
    let _ = fs::remove_file(&disk_out);
    let tmpfs_ok = opts.tmpfs.is_dir();
    let shm_out = opts.tmpfs.join("atlas-bench-write-ref.bin");
    let write_shm = if tmpfs_ok {
        let r = throughput(
            opts.size,
            || drop(fs::remove_file(&shm_out)),
            || seq_write(&shm_out, opts.size * 3 / 2),
        )?;
        let _ = fs::remove_file(&shm_out);
        Some(r)
    } else {
        None
    };
    println!("{:<58} {:>9}", "reference", "MB/s");
    println!(
        "{:<58} {:>9.0}",
        "  BLAKE3 of the input file, one core (read + hash)", blake
    );
    println!(
        "{:<58} {:>9.0}",
        "  sequential write of 1.5x the input to disk, fsync (per input byte)", write_disk
    );
    if let Some(w) = write_shm {
        println!(
            "{:<58} {:>9.0}",
            "  sequential write of 1.5x the input to tmpfs (per input byte)", w
        );
    }

    // Codec only: encoder from memory to discarding sinks.
    println!(
        "\n{:<40} {:>9} {:>11}",
        format!(
            "encode, codec only ({} MiB in memory)",
            opts.codec_size / MIB
        ),
        "1 core",
        format!("{cores} cores")
    );
    let data = read_prefix(&input, opts.codec_size).map_err(|e| format!("reading input: {e}"))?;
    for (k, m) in [(4, 2), (10, 4), (16, 8)] {
        for c in [256 * 1024, MIB] {
            let one = codec(&data, k, m, c, 1)?;
            let all = codec(&data, k, m, c, cores)?;
            println!(
                "{:<40} {:>9.0} {:>11.0}",
                format!("  {k}+{m} @ {} KiB shards", c / 1024),
                one,
                all
            );
        }
    }
    drop(data);

    // The real binary, end to end.
    println!(
        "\n{:<46} {:>9} {:>22} {:>9}",
        "atlas (whole process), 4+2 @ 1 MiB", "MB/s", "vs reference", "target"
    );
    let enc_disk = opts.dir.join("enc");
    let _ = fs::remove_dir_all(&enc_disk);
    let input_s = input.to_string_lossy().into_owned();
    let enc_disk_s = enc_disk.to_string_lossy().into_owned();
    let disk_speed = throughput(
        opts.size,
        || drop(fs::remove_dir_all(&enc_disk)),
        || {
            atlas(
                &opts,
                &bench_home,
                &["encode", &input_s, "--out", &enc_disk_s, "-q"],
            )
        },
    )?;
    println!(
        "{:<46} {:>9.0} {:>15.0}% write {:>9}",
        "  encode, output on disk",
        disk_speed,
        100.0 * disk_speed / write_disk,
        ">= 70%"
    );
    if tmpfs_ok {
        let enc_shm = opts.tmpfs.join("atlas-bench-enc");
        let _ = fs::remove_dir_all(&enc_shm);
        let enc_shm_s = enc_shm.to_string_lossy().into_owned();
        let shm_speed = throughput(
            opts.size,
            || drop(fs::remove_dir_all(&enc_shm)),
            || {
                atlas(
                    &opts,
                    &bench_home,
                    &["encode", &input_s, "--out", &enc_shm_s, "-q"],
                )
            },
        )?;
        let _ = fs::remove_dir_all(&enc_shm);
        println!(
            "{:<46} {:>9.0} {:>14.0}% BLAKE3 {:>9}",
            "  encode, output on tmpfs",
            shm_speed,
            100.0 * shm_speed / blake,
            ">= 50%"
        );
    }
    let intact_out = opts.dir.join("decoded-intact.bin");
    let _ = fs::remove_file(&intact_out);
    let intact_s = intact_out.to_string_lossy().into_owned();
    let intact = throughput(
        opts.size,
        || drop(fs::remove_file(&intact_out)),
        || {
            atlas(
                &opts,
                &bench_home,
                &["decode", &enc_disk_s, "--out", &intact_s, "-q"],
            )
        },
    )?;
    let _ = fs::remove_file(&intact_out);
    println!(
        "{:<46} {:>9.0} {:>14.0}% encode {:>9}",
        "  decode, all slots present",
        intact,
        100.0 * intact / disk_speed,
        ""
    );
    for j in [0, 1] {
        fs::remove_file(enc_disk.join(format!("slot-{j:03}.data")))
            .map_err(|e| format!("removing slot {j}: {e}"))?;
    }
    let out = opts.dir.join("decoded.bin");
    let _ = fs::remove_file(&out);
    let out_s = out.to_string_lossy().into_owned();
    let dec_speed = throughput(
        opts.size,
        || drop(fs::remove_file(&out)),
        || {
            atlas(
                &opts,
                &bench_home,
                &["decode", &enc_disk_s, "--out", &out_s, "-q"],
            )
        },
    )?;
    let _ = fs::remove_file(&out);
    println!(
        "{:<46} {:>9.0} {:>14.0}% encode {:>9}",
        "  decode, 2 data slots missing (m = 2)",
        dec_speed,
        100.0 * dec_speed / disk_speed,
        ">= 50%"
    );
    let _ = fs::remove_dir_all(&enc_disk);

    println!("\n{peak_rss}");
    proofs(&opts, &input)?;
    prover_cpu(&opts)?;
    scrub_cpu(&opts)?;
    network(&opts, &input)?;
    put_siege_section(&opts)?;
    testnet(&opts)?;
    ledger(&opts)?;
    Ok(())
}

fn atlas(opts: &Opts, home: &Path, args: &[&str]) -> Result<(), String> {
    run_atlas(
        opts,
        Command::new(&opts.atlas).env("ATLAS_HOME", home),
        args,
    )
    .map(drop)
}

/// Runs `cmd` (the atlas binary, environment set) with `args`; its stdout, or its stderr as the error.
fn run_atlas(opts: &Opts, cmd: &mut Command, args: &[&str]) -> Result<String, String> {
    let out = cmd
        .args(args)
        .output()
        .map_err(|e| format!("running {}: {e}", opts.atlas.display()))?;
    if !out.status.success() {
        return Err(format!(
            "atlas {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs per figure; the median is reported.
const RUNS: usize = 3;

/// Provider processes in the network section: six holders and three spares.
const SERVICES: usize = 9;

/// Input MB/s: the median of [`RUNS`] timed runs, each after `sync` so that no earlier step's dirty
/// pages are flushed on this step's time. `prepare` runs untimed before each run.
fn throughput(
    bytes: u64,
    mut prepare: impl FnMut(),
    mut f: impl FnMut() -> Result<(), String>,
) -> Result<f64, String> {
    let mut speeds = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        prepare();
        sync_disks();
        let start = Instant::now();
        f()?;
        speeds.push(bytes as f64 / start.elapsed().as_secs_f64() / 1e6);
    }
    speeds.sort_by(|a, b| a.total_cmp(b));
    Ok(speeds[RUNS / 2])
}

fn sync_disks() {
    // `sync` flushes every filesystem; it has no failure to report.
    let _ = Command::new("sync").status();
}

fn make_input(path: &Path, size: u64) -> io::Result<()> {
    if fs::metadata(path).map(|m| m.len()).ok() == Some(size) {
        return Ok(());
    }
    let mut f = io::BufWriter::new(File::create(path)?);
    let mut xof = blake3::Hasher::new().update(b"atlas-bench").finalize_xof();
    let mut buf = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB) as usize;
        xof.fill(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()
}

fn read_prefix(path: &Path, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len as usize);
    File::open(path)?.take(len).read_to_end(&mut buf)?;
    Ok(buf)
}

fn hash_file(path: &Path) -> Result<blake3::Hash, String> {
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; MIB as usize];
    loop {
        let n = f.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(h.finalize());
        }
        h.update(&buf[..n]);
    }
}

fn seq_write(path: &Path, bytes: u64) -> Result<(), String> {
    let mut f = File::create(path).map_err(|e| e.to_string())?;
    let buf = vec![0x5au8; MIB as usize];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MIB) as usize;
        f.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    f.sync_all().map_err(|e| e.to_string())
}

fn codec(data: &[u8], k: usize, m: usize, c: u64, threads: usize) -> Result<f64, String> {
    let layout = Layout::new(k, m, c, data.len() as u64).map_err(|e| e.to_string())?;
    throughput(
        data.len() as u64,
        || {},
        || {
            let outputs = (0..k + m)
                .map(|_| SlotOutput {
                    data: Box::new(io::sink()),
                    groups: Box::new(io::sink()),
                })
                .collect();
            encode(data, layout, outputs, threads, &mut |_| {})
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    )
}

/// Runs the command and returns its peak resident set in KiB, as the kernel accounted it.
fn peak_rss_kib(cmd: &mut Command) -> Result<i64, String> {
    let child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value of this plain C struct.
    #[allow(unsafe_code)]
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unwaited child; `status` and `usage` are valid for writes. The
    // `Child` handle is never waited on afterwards, so the pid is reaped exactly once.
    #[allow(unsafe_code)]
    let got = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    std::mem::forget(child);
    if got != pid {
        return Err(format!("wait4: {}", io::Error::last_os_error()));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        return Err(format!("measured command failed with status {status}"));
    }
    Ok(usage.ru_maxrss)
}

/// This process's resident set, in KiB.
fn self_rss_kib() -> i64 {
    proc_self_field("status", "VmRSS:").map_or(0, |v| v as i64)
}

/// The number after `name` in `/proc/self/<file>`.
fn proc_self_field(file: &str, name: &str) -> Option<u64> {
    fs::read_to_string(format!("/proc/self/{file}"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn proofs(opts: &Opts, input: &Path) -> Result<(), String> {
    let slot_len = GIB.min(opts.size / MIB * MIB).max(MIB);
    let c = MIB;
    let stripes = slot_len / c;
    let bytes = read_prefix(input, stripes * c).map_err(|e| e.to_string())?;
    let outboard = Outboard::from_slot(&bytes).map_err(|e| e.to_string())?;
    let root = outboard.root();
    let dir = opts.dir.join("store");
    let _ = fs::remove_dir_all(&dir);
    let store = RocksSlotStore::open(&dir, 4 * GIB).map_err(|e| e.to_string())?;
    let key = SlotKey::new(ObjectId([1; 32]), 0);
    let spec = SlotSpec {
        root: *root.as_bytes(),
        shard_size: c,
        stripes,
    };
    store.create_slot(key, spec).map_err(|e| e.to_string())?;
    let level = shard_level(c);
    sync_disks();
    let put_start = Instant::now();
    for s in 0..stripes {
        let siblings = if level == outboard.shape().height() {
            Vec::new()
        } else {
            outboard.siblings(level, s).map_err(|e| e.to_string())?
        };
        let shard = bytes[(s * c) as usize..((s + 1) * c) as usize].to_vec();
        let v = VerifiedShard::verify(&root, stripes, s, shard, &siblings)
            .map_err(|e| e.to_string())?;
        store.put_shard(key, &v).map_err(|e| e.to_string())?;
    }
    let put_speed = (stripes * c) as f64 / put_start.elapsed().as_secs_f64() / 1e6;
    drop(bytes);
    let shape = outboard.shape();
    let rounds = 200u64;
    let mut build = Vec::new();
    let mut verify = Vec::new();
    let mut size = 0;
    for epoch in 0..rounds {
        let ch = Challenge::derive(&[7; 32], &DealId([2; 32]), 0, epoch, shape.chunks(), 16);
        let t = Instant::now();
        let proof = store.prove(key, &ch).map_err(|e| e.to_string())?;
        build.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        proof
            .verify(&ch, &shape, &root)
            .map_err(|e| e.to_string())?;
        verify.push(t.elapsed().as_secs_f64());
        size = proof.wire_len();
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (b, v) = (median(&mut build), median(&mut verify));
    println!(
        "\n{:<46} {:>9}",
        format!("storage proof, 16 samples of a {} MiB slot", slot_len / MIB),
        "median"
    );
    println!(
        "{:<46} {:>9}",
        "  store it: verify + put 1 MiB shards, fsync each",
        format!("{put_speed:.0} MB/s")
    );
    println!(
        "{:<46} {:>9}",
        "  build (RocksDB store, page cache warm)",
        format!("{:.0} us", b * 1e6)
    );
    println!(
        "{:<46} {:>9} {:>22} {:>9}",
        "  verify",
        format!("{:.0} us", v * 1e6),
        "",
        "< 1 ms"
    );
    println!(
        "{:<46} {:>9} {:>22} {:>9}",
        "  size on the wire",
        format!("{:.1} KiB", size as f64 / 1024.0),
        "",
        "<= 32 KiB"
    );
    drop(store);
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

/// A child process that is killed when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `atlas ARGS` with `home` and returns it with the first TCP address it prints after
/// `listening on ` (a provider prints only once it is registered).
fn spawn_service(
    opts: &Opts,
    home: &Path,
    args: &[&str],
    ledger: Option<&str>,
) -> Result<(Child, String), String> {
    use std::io::BufRead;
    fs::create_dir_all(home).map_err(|e| e.to_string())?;
    let log = File::create(home.join("service.log")).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&opts.atlas);
    cmd.args(args)
        .env("ATLAS_HOME", home)
        .env("ATLAS_LOG", "info,libp2p=warn")
        .stdout(std::process::Stdio::piped())
        .stderr(log);
    if let Some(l) = ledger {
        cmd.env("ATLAS_LEDGER", l);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting atlas {}: {e}", args.join(" ")))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let child = Child(child);
    let mut lines = io::BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(addr) = line.strip_prefix("listening on ") {
            if addr.contains("/tcp/") {
                // Keep the pipe open and drained so later output never meets a closed pipe.
                std::thread::spawn(move || lines.for_each(drop));
                return Ok((child, addr.to_string()));
            }
        }
    }
    Err(format!("atlas {} exited before listening", args.join(" ")))
}

/// Raw loopback TCP: one connection, 1 MiB writes, the receiver counting bytes.
fn loopback_tcp(bytes: u64) -> Result<f64, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let reader = std::thread::spawn(move || -> io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; MIB as usize];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    });
    let start = Instant::now();
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let buf = vec![0x5au8; MIB as usize];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MIB) as usize;
        s.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    drop(s);
    let got = reader
        .join()
        .map_err(|_| "reader panicked")?
        .map_err(|e| e.to_string())?;
    if got != bytes {
        return Err(format!("loopback received {got} of {bytes} bytes"));
    }
    Ok(bytes as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// A ledger and six provider processes on loopback; `atlas pin` and `atlas get` against them.
fn network(opts: &Opts, input: &Path) -> Result<(), String> {
    let root = opts.dir.join("net");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let tcp = loopback_tcp(opts.size)?;
    let (_ledger, ledger_addr) = spawn_service(
        opts,
        &root.join("ledger"),
        // 5-second epochs: long enough for a spare to rebuild a 256 MiB slot within the claim
        // deadline (3 epochs) on this machine, short enough to watch a repair in one run.
        &[
            "ledger",
            "run",
            "--faucet",
            "--block-time",
            "200ms",
            "--epoch-blocks",
            "25",
        ],
        None,
    )?;
    let mut providers = Vec::new();
    // Six holders and three spares (the dearest) that repair what the dead leave behind.
    for i in 0..SERVICES {
        let home = root.join(format!("p{i}"));
        let price = (1000 + i).to_string();
        let (child, _) = spawn_service(
            opts,
            &home,
            &["provider", "run", "--capacity", "8GiB", "--price", &price],
            Some(&ledger_addr),
        )?;
        providers.push(Some(child));
    }
    let creator = root.join("creator");
    atlas(opts, &creator, &["key", "gen"])?;
    let with_ledger = |args: &[&str]| -> Result<String, String> {
        let mut cmd = Command::new(&opts.atlas);
        cmd.env("ATLAS_HOME", &creator)
            .env("ATLAS_LEDGER", &ledger_addr);
        run_atlas(opts, &mut cmd, args).map(|out| out.trim().to_string())
    };
    with_ledger(&["wallet", "faucet", "1000000000"])?;
    let input_s = input.to_string_lossy().into_owned();
    sync_disks();
    let start = Instant::now();
    let id = with_ledger(&["pin", &input_s, "--epochs", "50", "-q"])?;
    let pin_speed = opts.size as f64 / start.elapsed().as_secs_f64() / 1e6;
    let out = root.join("got.bin");
    let out_s = out.to_string_lossy().into_owned();
    let get_all = throughput(
        opts.size,
        || drop(fs::remove_file(&out)),
        || with_ledger(&["get", &id, "-o", &out_s, "-q"]).map(|_| ()),
    )?;
    // The gateway over the same object: sequential read and first byte at random offsets.
    let (gateway_proc, gateway) = spawn_gateway(opts, &root.join("gateway"), &ledger_addr)?;
    let path = format!("/v1/objects/{id}");
    let gw_all = gateway_figures(gateway, &path, opts.size)?;
    let gateway_pid = gateway_proc.0.id();
    let siege = gateway_siege(gateway, &path, opts.size, gateway_pid)?;
    let readers: Vec<(usize, ReaderFigures)> = [16, 64, 500]
        .into_iter()
        .map(|n| {
            Ok((
                n,
                concurrent_readers(gateway, &path, opts.size, gateway_pid, n)?,
            ))
        })
        .collect::<Result<_, String>>()?;
    // One holder down (data slot 0's, the cheapest): stripes are rebuilt from parity on the fly.
    drop(providers[0].take());
    let gw_one_down = gateway_figures(gateway, &path, opts.size)?;
    // A spare repairs slot 0 alone.
    let single = wait_for_repair(&root, &with_ledger, &id, &[(0, 1)])?;
    // Two holders down: data slots 0 (its new holder) and 1, so every stripe must be rebuilt
    // from parity.
    let new_holder = (6..SERVICES)
        .find(|i| {
            fs::read_to_string(root.join(format!("p{i}/service.log")))
                .is_ok_and(|l| l.contains("claimed a freed slot"))
        })
        .ok_or("no spare logged the repair of slot 0")?;
    drop(providers[new_holder].take());
    drop(providers[1].take());
    let get_degraded = throughput(
        opts.size,
        || drop(fs::remove_file(&out)),
        || with_ledger(&["get", &id, "-o", &out_s, "-q"]).map(|_| ()),
    )?;
    if hash_file(&out)? != hash_file(input)? {
        return Err("the degraded read returned different bytes".into());
    }
    // The two spares left repair both at once.
    let double = wait_for_repair(&root, &with_ledger, &id, &[(0, 2), (1, 1)])?;
    drop(providers);
    println!(
        "\n{:<46} {:>9} {:>22} {:>9}",
        "network: ledger + 9 provider processes (6 hold)", "MB/s", "vs reference", "target"
    );
    println!("{:<46} {:>9.0}", "  raw loopback TCP, one connection", tcp);
    println!(
        "{:<46} {:>9.0} {:>14.0}% of TCP {:>9}",
        "  atlas pin (encode + upload + accept), 4+2",
        pin_speed,
        100.0 * pin_speed / tcp,
        ">= 300"
    );
    println!("{:<46} {:>9.0}", "  atlas get, all holders up", get_all);
    println!(
        "{:<46} {:>9.0} {:>22} {:>9}",
        "  atlas get, 2 of 6 holders down", get_degraded, "", ">= 200"
    );
    let slot_mib = opts.size / 4 / MIB;
    println!(
        "{:<46} {:>9.0} {:>22} {:>9}",
        format!("  repair: a {slot_mib} MiB slot from 4 holders"),
        single.slowest,
        "",
        ">= 150"
    );
    println!(
        "{:<46} {:>9.0} {:>22} {:>9}",
        format!("  repair: two {slot_mib} MiB slots at once, each"),
        double.slowest,
        format!("both: {:.0} MB/s", double.aggregate),
        ""
    );
    println!(
        "{:<46} {:>9} {:>22} {:>9}",
        "  repair: holder killed -> new holder proven",
        format!("{} epochs", single.epochs),
        "(max_misses = 3)",
        "<= 5"
    );
    println!(
        "\n{:<46} {:>9} {:>22} {:>9}",
        "gateway: HTTP over the same 4+2 object", "", "", "target"
    );
    for (label, g) in [("all holders up", &gw_all), ("1 holder down", &gw_one_down)] {
        println!(
            "{:<46} {:>9.0} {:>22} {:>9}",
            format!("  sequential GET, {label} (MB/s)"),
            g.sequential,
            "",
            ">= 300"
        );
        println!(
            "{:<46} {:>9.1} {:>22} {:>9}",
            format!("  first byte at a random offset, {label} (ms)"),
            g.first_byte_ms,
            format!("p90 {:.1} ms", g.first_byte_p90_ms),
            "< 50"
        );
    }
    println!(
        "{:<46} {:>9.1} {:>22} {:>9}",
        "  under siege: first byte of a range (ms)",
        siege.first_byte_ms,
        format!("{} of 20 got 503", siege.busy),
        "< 100"
    );
    println!(
        "{:<46} {:>8.1}M {:>22} {:>9}",
        "  under siege: gateway RSS",
        siege.rss_mib,
        format!("idle {:.0}M, {:.0} held", siege.rss_before_mib, siege.held),
        "< 200M"
    );
    for (n, r) in &readers {
        println!(
            "{:<46} {:>9.0} {:>22} {:>9}",
            format!("  {n} readers of random 1 MiB ranges (MB/s)"),
            r.mb_s,
            format!("p99 {:.0} ms, {} busy", r.p99_ms, r.busy),
            ""
        );
        println!(
            "{:<46} {:>8.1}M {:>22} {:>9}",
            format!("  {n} readers: gateway peak RSS"),
            r.peak_rss_mib,
            "",
            "< 200M"
        );
    }
    let _ = fs::remove_dir_all(&root);
    Ok(())
}

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// One figure of the gateway's metrics (`atlas_gateway_NAME`; for `connections`, this request's
/// own connection included).
fn gateway_metric(addr: std::net::SocketAddr, name: &str) -> Result<f64, String> {
    let prefix = format!("atlas_gateway_{name} ");
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str())?.trim().parse().ok())
        .unwrap_or(0.0))
}

struct Siege {
    first_byte_ms: f64,
    /// Of the 20 normal requests, those answered 503.
    busy: usize,
    rss_mib: f64,
    rss_before_mib: f64,
    /// Hostile connections still held when the RSS was read.
    held: f64,
}

/// 500 clients that ask for the whole object and never read, and 500 that send half a request
/// head; meanwhile a normal client's first byte of 1 MiB ranges (median of 20), and the
/// gateway's resident memory with all of them connected.
fn gateway_siege(
    addr: std::net::SocketAddr,
    path: &str,
    size: u64,
    pid: u32,
) -> Result<Siege, String> {
    let rss_before_mib = rss_mib(pid);
    let mut hostile = Vec::new();
    for i in 0..1000 {
        let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
        let head = if i % 2 == 0 {
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")
        } else {
            format!("GET {path} HTTP/1.1\r\nHost: ")
        };
        s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
        hostile.push(s);
    }
    // Measure once the gateway has taken every one of them: it holds them, or it has already
    // dropped some of the clients that sit on decoded bytes (it does so once its buffer is short).
    let dropped = |addr| -> Result<f64, String> {
        Ok(gateway_metric(addr, "dropped_idle_total")? + gateway_metric(addr, "shed_total")?)
    };
    let dropped_before = dropped(addr)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut held;
    loop {
        held = gateway_metric(addr, "connections")? - 1.0;
        if held + dropped(addr)? - dropped_before >= 1000.0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the gateway took {held} of the 1000 hostile connections"
            ));
        }
    }
    let mut firsts = Vec::new();
    let mut busy = 0;
    let mut rng = 0x9e3779b97f4a7c15u64;
    for _ in 0..20 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let offset = rng % size.saturating_sub(MIB).max(1);
        match http_get(addr, path, Some((offset, offset + MIB - 1))) {
            Ok((first, _)) => firsts.push(first.as_secs_f64() * 1e3),
            Err(e) if e.contains("503") => busy += 1,
            Err(e) => return Err(e),
        }
    }
    let rss = rss_mib(pid);
    drop(hostile);
    firsts.sort_by(f64::total_cmp);
    Ok(Siege {
        first_byte_ms: firsts.get(firsts.len() / 2).copied().unwrap_or(f64::NAN),
        busy,
        rss_mib: rss,
        rss_before_mib,
        held,
    })
}

struct ReaderFigures {
    mb_s: f64,
    p99_ms: f64,
    peak_rss_mib: f64,
    /// Requests answered 503 (the gateway over a limit).
    busy: usize,
}

/// `n` readers at once, each reading random 1 MiB ranges on fresh connections (about 1 GiB in
/// all, at least 4 each): throughput, the 99th percentile of a whole range's time, and the
/// gateway's peak resident memory meanwhile.
fn concurrent_readers(
    addr: std::net::SocketAddr,
    path: &str,
    size: u64,
    pid: u32,
    n: usize,
) -> Result<ReaderFigures, String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let each = (1024 / n).max(4);
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let monitor = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0.0f64;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_mib(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    let start = Instant::now();
    let workers: Vec<_> = (0..n)
        .map(|i| {
            let path = path.to_string();
            std::thread::spawn(move || {
                let mut rng = 0x2545f4914f6cdd1du64 ^ (i as u64 + 1).wrapping_mul(0x9e37);
                let mut times = Vec::new();
                let (mut bytes, mut busy) = (0u64, 0usize);
                for _ in 0..each {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let offset = rng % size.saturating_sub(MIB).max(1);
                    let t = Instant::now();
                    match http_get(addr, &path, Some((offset, offset + MIB - 1))) {
                        Ok((_, got)) => {
                            bytes += got;
                            times.push(t.elapsed().as_secs_f64() * 1e3);
                        }
                        Err(e) if e.contains("503") => busy += 1,
                        Err(e) => return Err(e),
                    }
                }
                Ok((times, bytes, busy))
            })
        })
        .collect();
    let mut times = Vec::new();
    let (mut bytes, mut busy) = (0u64, 0usize);
    for w in workers {
        let (t, b, k) = w.join().map_err(|_| "a reader panicked")??;
        times.extend(t);
        bytes += b;
        busy += k;
    }
    let secs = start.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    let peak = monitor.join().map_err(|_| "the monitor panicked")?;
    times.sort_by(f64::total_cmp);
    let p99 = times
        .get((times.len() * 99 / 100).min(times.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0);
    Ok(ReaderFigures {
        mb_s: bytes as f64 / secs / 1e6,
        p99_ms: p99,
        peak_rss_mib: peak,
        busy,
    })
}

/// `atlas testnet up --providers 50`, left idle, then the resident memory of every process.
fn testnet(opts: &Opts) -> Result<(), String> {
    const PROVIDERS: usize = 50;
    let dir = opts.dir.join("testnet");
    let _ = fs::remove_dir_all(&dir);
    let dir_s = dir.to_string_lossy().into_owned();
    let run = |args: &[&str]| run_atlas(opts, &mut Command::new(&opts.atlas), args);
    let start = Instant::now();
    let up = run(&[
        "testnet",
        "up",
        "--dir",
        &dir_s,
        "--providers",
        "50",
        "--base-port",
        "27700",
        "-q",
    ]);
    let up_time = start.elapsed();
    let result = up.and_then(|_| {
        // Idle: registered, polling the ledger, nothing stored.
        std::thread::sleep(Duration::from_secs(20));
        run(&["testnet", "status", "--dir", &dir_s, "--json"])
    });
    let down = run(&["testnet", "down", "--dir", &dir_s, "-q"]);
    let status: serde_json::Value =
        serde_json::from_str(&result?).map_err(|e| format!("status JSON: {e}"))?;
    down?;
    let procs = status["processes"]
        .as_array()
        .ok_or("status lists no processes")?;
    let mut providers: Vec<f64> = procs
        .iter()
        .filter(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("provider-"))
        })
        .filter_map(|p| p["rss_kib"].as_f64())
        .map(|k| k / 1024.0)
        .collect();
    let running = status["running"].as_u64().unwrap_or(0);
    if providers.len() != PROVIDERS {
        return Err(format!(
            "only {} of {PROVIDERS} providers were running",
            providers.len()
        ));
    }
    providers.sort_by(f64::total_cmp);
    let rss_of = |name: &str| {
        procs
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["rss_kib"].as_f64())
            .map_or(0.0, |k| k / 1024.0)
    };
    println!(
        "\n{:<46} {:>9} {:>22} {:>9}",
        "testnet: up --providers 50, idle 20 s", "", "", "target"
    );
    println!("{:<46} {:>9}", "  processes running", running);
    println!(
        "{:<46} {:>8.1}s",
        "  time for `up` (all registered)",
        up_time.as_secs_f64()
    );
    println!(
        "{:<46} {:>8.1}M {:>22} {:>9}",
        "  provider RSS, median",
        providers[providers.len() / 2],
        format!("max {:.1}M", providers[providers.len() - 1]),
        "< 40M"
    );
    println!("{:<46} {:>8.1}M", "  ledger RSS", rss_of("ledger"));
    println!("{:<46} {:>8.1}M", "  gateway RSS", rss_of("gateway"));
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

/// Starts `atlas gateway run` on a free loopback port; returns it and its address.
fn spawn_gateway(
    opts: &Opts,
    home: &Path,
    ledger: &str,
) -> Result<(Child, std::net::SocketAddr), String> {
    use std::io::BufRead;
    fs::create_dir_all(home).map_err(|e| e.to_string())?;
    let log = File::create(home.join("service.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new(&opts.atlas)
        .args(["gateway", "run", "--listen", "127.0.0.1:0"])
        .env("ATLAS_HOME", home)
        .env("ATLAS_LEDGER", ledger)
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting the gateway: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let child = Child(child);
    let mut lines = io::BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(url) = line.strip_prefix("gateway on http://") {
            let addr = url
                .trim_end_matches('/')
                .parse()
                .map_err(|e| format!("gateway address {url}: {e}"))?;
            std::thread::spawn(move || lines.for_each(drop));
            return Ok((child, addr));
        }
    }
    Err("the gateway exited before listening".into())
}

struct GatewayFigures {
    sequential: f64,
    first_byte_ms: f64,
    first_byte_p90_ms: f64,
}

/// Sequential MB/s of whole-object GETs (median of RUNS) and time to the first body byte of
/// 1 MiB range requests at 25 random offsets (median and 90th percentile), each on a new connection.
fn gateway_figures(
    addr: std::net::SocketAddr,
    path: &str,
    size: u64,
) -> Result<GatewayFigures, String> {
    let mut speeds = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let (_, got) = http_get(addr, path, None)?;
        if got != size {
            return Err(format!("the gateway sent {got} of {size} bytes"));
        }
        speeds.push(size as f64 / start.elapsed().as_secs_f64() / 1e6);
    }
    let mut rng = 0x2545f4914f6cdd1du64;
    let mut firsts = Vec::new();
    for _ in 0..25 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let offset = rng % size.saturating_sub(MIB).max(1);
        let (first, got) = http_get(addr, path, Some((offset, offset + MIB - 1)))?;
        if got != MIB.min(size - offset) {
            return Err(format!("a range read returned {got} bytes"));
        }
        firsts.push(first.as_secs_f64() * 1e3);
    }
    firsts.sort_by(f64::total_cmp);
    speeds.sort_by(f64::total_cmp);
    Ok(GatewayFigures {
        sequential: speeds[speeds.len() / 2],
        first_byte_ms: firsts[firsts.len() / 2],
        first_byte_p90_ms: firsts[firsts.len() * 9 / 10],
    })
}

/// One HTTP/1.1 GET on a fresh connection: time from sending the request to the first body byte,
/// and the body length received.
fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    range: Option<(u64, u64)>,
) -> Result<(Duration, u64), String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    let range = range.map_or(String::new(), |(a, b)| format!("Range: bytes={a}-{b}\r\n"));
    let start = Instant::now();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{range}Connection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; MIB as usize];
    let mut head = Vec::new();
    let (first, mut body) = loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the gateway closed the connection before the body".into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let status = String::from_utf8_lossy(&head[..head.len().min(12)]).to_string();
            if !status.contains(" 200") && !status.contains(" 206") {
                return Err(format!("gateway answered {status}"));
            }
            let body = (head.len() - end - 4) as u64;
            if body > 0 {
                break (start.elapsed(), body);
            }
            // Headers alone: the first body byte is the next read.
            let n = s.read(&mut buf).map_err(|e| e.to_string())?;
            break (start.elapsed(), n as u64);
        }
    };
    loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        body += n as u64;
    }
    Ok((first, body))
}

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a plain C struct into valid, zeroed memory.
    #[allow(unsafe_code)]
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// What one epoch of proving costs a provider holding 1,000 slots: derive each challenge, build
/// the proof from the RocksDB store, sign the transaction.
fn prover_cpu(opts: &Opts) -> Result<(), String> {
    use atlas_protocol::escrow::{Tx, TxBody};
    const SLOTS: u64 = 1000;
    let c = 256 * 1024;
    let stripes = 4; // 1 MiB slots
    let dir = opts.dir.join("prover");
    let _ = fs::remove_dir_all(&dir);
    let store = RocksSlotStore::open(&dir, SLOTS * c * stripes).map_err(|e| e.to_string())?;
    let key = atlas_protocol::Keypair::from_secret([9; 32]);
    let mut slots = Vec::new();
    for i in 0..SLOTS {
        let mut bytes = vec![0u8; (c * stripes) as usize];
        blake3::Hasher::new()
            .update(&i.to_le_bytes())
            .finalize_xof()
            .fill(&mut bytes);
        let outboard = Outboard::from_slot(&bytes).map_err(|e| e.to_string())?;
        let root = outboard.root();
        let k = SlotKey::new(ObjectId(*blake3::hash(&i.to_le_bytes()).as_bytes()), 0);
        let spec = SlotSpec {
            root: *root.as_bytes(),
            shard_size: c,
            stripes,
        };
        store.create_slot(k, spec).map_err(|e| e.to_string())?;
        for s in 0..stripes {
            let shard = bytes[(s * c) as usize..((s + 1) * c) as usize].to_vec();
            let siblings = outboard
                .siblings(shard_level(c), s)
                .map_err(|e| e.to_string())?;
            let v = VerifiedShard::verify(&root, stripes, s, shard, &siblings)
                .map_err(|e| e.to_string())?;
            store.put_shard(k, &v).map_err(|e| e.to_string())?;
        }
        slots.push((k, spec, DealId(*blake3::hash(&[i as u8, 7]).as_bytes())));
    }
    let start_cpu = cpu_seconds();
    let start = Instant::now();
    let mut bytes_on_wire = 0;
    for (i, (k, spec, deal)) in slots.iter().enumerate() {
        let shape = spec.shape().map_err(|e| e.to_string())?;
        let ch = Challenge::derive(&[3; 32], deal, 0, 1, shape.chunks(), 16);
        let proof = store.prove(*k, &ch).map_err(|e| e.to_string())?;
        let signed = Tx {
            chain: [0; 32],
            signer: key.public(),
            nonce: i as u64,
            body: TxBody::SubmitProof {
                deal: *deal,
                slot: 0,
                epoch: 1,
                proof,
            },
        }
        .sign(&key)
        .map_err(|e| e.to_string())?;
        bytes_on_wire += signed.bytes.len();
    }
    let cpu = cpu_seconds() - start_cpu;
    let wall = start.elapsed().as_secs_f64();
    drop(store);
    let _ = fs::remove_dir_all(&dir);
    let epoch = 10.0; // the default chain: 1 s blocks, 10 blocks an epoch
    println!(
        "\n{:<46} {:>9} {:>22} {:>9}",
        "prover: 1,000 slots of 1 MiB, one epoch", "", "", "target"
    );
    println!(
        "{:<46} {:>9} {:>22} {:>9}",
        "  CPU to derive, prove and sign all",
        format!("{cpu:.2} s"),
        format!("{:.1}% of a core/epoch", 100.0 * cpu / epoch),
        "< 10%"
    );
    println!(
        "{:<46} {:>9}",
        "  wall time, one thread",
        format!("{wall:.2} s")
    );
    println!(
        "{:<46} {:>9}",
        "  transactions to send",
        format!("{:.1} MiB", bytes_on_wire as f64 / MIB as f64)
    );
    Ok(())
}

/// What scrubbing costs: every shard of 1 GiB of slots read from the RocksDB store with its
/// sibling CVs and verified against the slot root, as the provider's scrubber does (the files
/// are in the page cache, so this is CPU, not disk); and what a scrub at full speed on the other
/// core does to the latency of proving 100 slots.
fn scrub_cpu(opts: &Opts) -> Result<(), String> {
    const SLOTS: u64 = 16;
    let c: u64 = 1 << 20;
    let stripes = 64; // 64 MiB slots, 1 GiB in all
    let dir = opts.dir.join("scrub");
    let _ = fs::remove_dir_all(&dir);
    let store = RocksSlotStore::open(&dir, SLOTS * c * stripes).map_err(|e| e.to_string())?;
    let mut slots = Vec::new();
    for i in 0..SLOTS {
        let mut bytes = vec![0u8; (c * stripes) as usize];
        blake3::Hasher::new()
            .update(&i.to_le_bytes())
            .finalize_xof()
            .fill(&mut bytes);
        let outboard = Outboard::from_slot(&bytes).map_err(|e| e.to_string())?;
        let spec = SlotSpec {
            root: *outboard.root().as_bytes(),
            shard_size: c,
            stripes,
        };
        let k = SlotKey::new(ObjectId(*blake3::hash(&i.to_le_bytes()).as_bytes()), 0);
        let scratch = dir.join("import.tmp");
        fs::write(&scratch, &bytes).map_err(|e| e.to_string())?;
        store
            .import_slot(k, spec, &scratch)
            .map_err(|e| e.to_string())?;
        slots.push((k, spec));
    }
    let scrub = |store: &RocksSlotStore| -> Result<u64, String> {
        let mut bytes = 0;
        for (k, spec) in &slots {
            for s in 0..spec.stripes {
                let shard = store.read(*k, s * c, c).map_err(|e| e.to_string())?;
                let siblings = store.shard_siblings(*k, s).map_err(|e| e.to_string())?;
                bytes += shard.len() as u64;
                VerifiedShard::verify(&spec.root(), spec.stripes, s, shard, &siblings)
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(bytes)
    };
    scrub(&store)?; // warm the page cache
    let mut cpu_per_gib = Vec::new();
    for _ in 0..RUNS {
        let start = cpu_seconds();
        let bytes = scrub(&store)?;
        cpu_per_gib.push((cpu_seconds() - start) / (bytes as f64 / GIB as f64));
    }
    // The reference: BLAKE3 over 1 GiB already in memory, one thread.
    let block = vec![7u8; (64 * MIB) as usize];
    let mut hash_per_gib = Vec::new();
    for _ in 0..RUNS {
        let start = cpu_seconds();
        for _ in 0..16 {
            std::hint::black_box(blake3::hash(&block));
        }
        hash_per_gib.push(cpu_seconds() - start);
    }
    // Proof latency: 100 proofs alone, then with a full-speed scrub running beside them.
    let prove_100 = |store: &RocksSlotStore| -> Result<f64, String> {
        let start = Instant::now();
        for i in 0..100u64 {
            let (k, spec) = slots[(i % SLOTS) as usize];
            let shape = spec.shape().map_err(|e| e.to_string())?;
            let deal = DealId(*blake3::hash(&i.to_le_bytes()).as_bytes());
            let ch = Challenge::derive(&[5; 32], &deal, 0, i, shape.chunks(), 16);
            store.prove(k, &ch).map_err(|e| e.to_string())?;
        }
        Ok(start.elapsed().as_secs_f64() * 1000.0 / 100.0)
    };
    let mut alone = Vec::new();
    for _ in 0..RUNS {
        alone.push(prove_100(&store)?);
    }
    let busy = std::sync::atomic::AtomicBool::new(true);
    let mut beside = Vec::new();
    std::thread::scope(|t| -> Result<(), String> {
        let scrubber = t.spawn(|| {
            while busy.load(std::sync::atomic::Ordering::Relaxed) {
                if scrub(&store).is_err() {
                    break;
                }
            }
        });
        for _ in 0..RUNS {
            beside.push(prove_100(&store)?);
        }
        busy.store(false, std::sync::atomic::Ordering::Relaxed);
        let _ = scrubber.join();
        Ok(())
    })?;
    drop(store);
    let _ = fs::remove_dir_all(&dir);
    println!(
        "\n{:<46} {:>9} {:>22} {:>9}",
        "scrubber: 16 slots of 64 MiB (1 GiB)", "", "reference", "target"
    );
    println!(
        "{:<46} {:>9} {:>22} {:>9}",
        "  CPU to read and verify 1 GiB",
        format!("{:.2} s", median(&mut cpu_per_gib)),
        format!("BLAKE3 1 GiB {:.2} s", median(&mut hash_per_gib)),
        "< 0.3 s"
    );
    println!(
        "{:<46} {:>9} {:>22}",
        "  one proof, alone / beside a full-speed scrub",
        format!("{:.2} ms", median(&mut alone)),
        format!("{:.2} ms", median(&mut beside))
    );
    Ok(())
}

/// What a round of repairs took.
struct Repair {
    /// Epochs from the kill to every repaired slot's first proof by its new holder.
    epochs: u64,
    /// The slowest rebuild, claim to acceptance, in MB/s of slot bytes.
    slowest: f64,
    /// All slot bytes over the time from the first claim to the last acceptance.
    aggregate: f64,
}

/// Waits until each `(slot, repairs)` is active again with that many repairs and proven, then
/// reads the providers' logs for when each slot was last claimed and accepted.
fn wait_for_repair(
    root: &Path,
    with_ledger: &dyn Fn(&[&str]) -> Result<String, String>,
    id: &str,
    slots: &[(usize, u64)],
) -> Result<Repair, String> {
    let status = || -> Result<serde_json::Value, String> {
        let text = with_ledger(&["status", id, "--json"])?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    };
    let killed_at = status()?["epoch"].as_u64().ok_or("no epoch in status")?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let (proven_at, slot_len) = loop {
        let s = status()?;
        let all = s["slots"].as_array().ok_or("no slots in status")?;
        let proven: Vec<u64> = slots
            .iter()
            .filter_map(|&(j, repairs)| {
                let x = &all[j];
                (x["repairs"].as_u64() == Some(repairs) && x["state"] == "active")
                    .then(|| x["proven_epoch"].as_u64())
                    .flatten()
            })
            .collect();
        if proven.len() == slots.len() {
            let len = s["slot_len"].as_u64().ok_or("no slot_len in status")?;
            break (proven.into_iter().max().unwrap_or(0), len);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "slots {slots:?} were not repaired within 5 minutes"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // Every provider logs when it claimed a slot and when its rebuilt slot was accepted.
    let mut events: Vec<(f64, bool, usize)> = Vec::new();
    for i in 0..SERVICES {
        let log = fs::read_to_string(root.join(format!("p{i}/service.log"))).unwrap_or_default();
        for line in log.lines() {
            let claim = line.contains("claimed a freed slot");
            if !claim && !line.contains("repaired slot accepted") {
                continue;
            }
            let slot = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("slot="))
                .and_then(|v| v.parse().ok());
            if let (Some(t), Some(slot)) = (log_seconds(line), slot) {
                events.push((t, claim, slot));
            }
        }
    }
    let last = |slot: usize, claim: bool| {
        events
            .iter()
            .filter(|e| e.2 == slot && e.1 == claim)
            .map(|e| e.0)
            .fold(f64::NAN, f64::max)
    };
    let mut slowest = f64::INFINITY;
    let (mut first, mut end) = (f64::INFINITY, 0f64);
    for &(j, _) in slots {
        let (a, b) = (last(j, true), last(j, false));
        if a.is_nan() || b.is_nan() {
            return Err(format!("no provider logged the repair of slot {j}"));
        }
        slowest = slowest.min(slot_len as f64 / (b - a).max(1e-3) / 1e6);
        first = first.min(a);
        end = end.max(b);
    }
    Ok(Repair {
        epochs: proven_at.saturating_sub(killed_at),
        slowest,
        aggregate: slots.len() as f64 * slot_len as f64 / (end - first).max(1e-3) / 1e6,
    })
}

/// Seconds since midnight of a log line's UTC timestamp.
fn log_seconds(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?;
    let t = ts.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The median of `v` (sorted in place).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Bytes this process has caused to be written to storage so far (`/proc/self/io`).
fn write_bytes() -> u64 {
    proc_self_field("io", "write_bytes:").unwrap_or(0)
}

/// Feeds signed transactions to a real `Ledger` as its service loop would (queued, made durable,
/// cut into blocks), with the nonces of every key kept here.
struct LedgerDriver {
    ledger: atlas_node::ledger::Ledger,
    rt: tokio::runtime::Runtime,
    chain: [u8; 32],
    nonces: std::collections::HashMap<atlas_protocol::PublicKey, u64>,
    queued: usize,
    request: u64,
}

impl LedgerDriver {
    fn send(
        &mut self,
        key: &atlas_protocol::Keypair,
        body: atlas_protocol::escrow::TxBody,
    ) -> Result<(), String> {
        use atlas_protocol::wire::{LedgerRequest, LedgerResponse};
        let nonce = self.nonces.entry(key.public()).or_insert(0);
        let kind = body.kind();
        let signed = atlas_protocol::escrow::Tx {
            chain: self.chain,
            signer: key.public(),
            nonce: *nonce,
            body,
        }
        .sign(key)
        .map_err(|e| e.to_string())?;
        *nonce += 1;
        self.request += 1;
        match self
            .ledger
            .handle(self.request, LedgerRequest::Enqueue(signed))
            .map_err(|e| e.to_string())?
        {
            None => {}
            Some(LedgerResponse::Refused(r)) => return Err(format!("{kind} refused: {r}")),
            Some(other) => return Err(format!("{kind}: {other:?}")),
        }
        self.queued += 1;
        if self.queued >= 10_000 {
            self.cut()?;
        }
        Ok(())
    }

    /// Makes the queue durable and cuts a block; returns its wall time and bytes written.
    fn cut(&mut self) -> Result<(f64, u64), String> {
        let written = write_bytes();
        let start = Instant::now();
        let ledger = &mut self.ledger;
        self.rt.block_on(async {
            ledger.sync_mempool().await.map_err(|e| format!("{e:#}"))?;
            ledger.cut_block().await.map_err(|e| format!("{e:#}"))?;
            // As the service does: the block that opens an epoch follows at once.
            while ledger.settlement_pending() {
                ledger.cut_block().await.map_err(|e| format!("{e:#}"))?;
            }
            Ok::<_, String>(())
        })?;
        self.queued = 0;
        Ok((start.elapsed().as_secs_f64(), write_bytes() - written))
    }
}

/// The ledger at scale: 1,000 providers and 100,000 live deals (600,000 slots) built through the
/// real ledger code, then the cost of a block of 1,000 transactions, of the block that settles an
/// epoch, what each writes, and the ledger's memory.
fn ledger(opts: &Opts) -> Result<(), String> {
    use atlas_protocol::escrow::{Escrow, TxBody};
    use atlas_protocol::layout::ENCODING_RS_GF8_V1;
    use atlas_protocol::manifest::{Manifest, MANIFEST_VERSION};
    use atlas_protocol::Keypair;
    const PROVIDERS: usize = 1_000;
    const DEALS: usize = 100_000;
    const CREATORS: usize = 1_000;
    const EPOCH_BLOCKS: u64 = 200;
    println!("\nLedger at scale ({PROVIDERS} providers, {DEALS} live deals of 6 slots)");
    let dir = opts.dir.join("ledger-bench");
    let _ = fs::remove_dir_all(&dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut registry = prometheus_client::registry::Registry::default();
    let key = |tag: u8, i: usize| {
        let mut secret = [tag; 32];
        secret[..8].copy_from_slice(&(i as u64).to_be_bytes());
        Keypair::from_secret(secret)
    };
    let ledger = atlas_node::ledger::Ledger::open(
        &dir,
        key(1, 0),
        atlas_node::ledger::ChainConfig {
            block_time: Duration::from_millis(500),
            epoch_blocks: EPOCH_BLOCKS,
            faucet: true,
        },
        &mut registry,
    )
    .map_err(|e| format!("{e:#}"))?;
    let chain = ledger.chain_id();
    let mut d = LedgerDriver {
        ledger,
        rt,
        chain,
        nonces: Default::default(),
        queued: 0,
        request: 0,
    };
    let build = Instant::now();
    let providers: Vec<Keypair> = (0..PROVIDERS).map(|i| key(2, i)).collect();
    for p in &providers {
        d.send(p, TxBody::Faucet { amount: 10_000_000 })?;
        d.send(
            p,
            TxBody::RegisterProvider {
                peer_id: p.public().peer_id_bytes(),
                addrs: vec!["/ip4/127.0.0.1/tcp/1".into()],
                capacity: 1 << 40,
                price: 1000,
                collateral: 1_000_000,
            },
        )?;
    }
    let creators: Vec<Keypair> = (0..CREATORS).map(|i| key(3, i)).collect();
    for c in &creators {
        d.send(
            c,
            TxBody::Faucet {
                amount: 100_000_000,
            },
        )?;
    }
    d.cut()?;
    let layout = Layout::new(4, 2, 64 * 1024, 200_000).map_err(|e| e.to_string())?;
    for i in 0..DEALS {
        let creator = &creators[i % CREATORS];
        let manifest = Manifest {
            version: MANIFEST_VERSION,
            encoding: ENCODING_RS_GF8_V1.into(),
            name: format!("video-{i}.mp4"),
            media_type: "video/mp4".into(),
            size: layout.size(),
            file_hash: *blake3::hash(&(i as u64).to_be_bytes()).as_bytes(),
            data_shards: 4,
            parity_shards: 2,
            shard_size: 64 * 1024,
            stripes: layout.stripes(),
            slot_roots: (0..6u8)
                .map(|j| *blake3::hash(&[&(i as u64).to_be_bytes()[..], &[j]].concat()).as_bytes())
                .collect(),
            creator: creator.public(),
            created_at: 0,
        }
        .sign(creator)
        .map_err(|e| e.to_string())?;
        let holders: Vec<&Keypair> = (0..6)
            .map(|j| &providers[(i * 6 + j) % PROVIDERS])
            .collect();
        let nonce = d.nonces.get(&creator.public()).copied().unwrap_or(0);
        d.send(
            creator,
            TxBody::OpenDeal {
                manifest: manifest.signed().clone(),
                providers: holders.iter().map(|k| k.public()).collect(),
                epochs: 1_000,
                max_price: 1000,
            },
        )?;
        let deal = Escrow::deal_id(&creator.public(), nonce);
        for (j, h) in holders.iter().enumerate() {
            d.send(
                h,
                TxBody::AcceptSlot {
                    deal,
                    slot: j as u16,
                },
            )?;
        }
    }
    d.cut()?;
    let built = build.elapsed().as_secs_f64();
    println!(
        "{:<46} {:>8.0}s",
        "  building it (through the ledger)", built
    );

    // Blocks of 1,000 transfers, away from an epoch boundary.
    let mut times = Vec::new();
    let mut written = Vec::new();
    for round in 0..5 {
        for i in 0..1_000 {
            let from = &creators[(round * 1_000 + i) % CREATORS];
            d.send(
                from,
                TxBody::Transfer {
                    to: providers[i % PROVIDERS].public(),
                    amount: 1,
                },
            )?;
        }
        let (t, w) = d.cut()?;
        times.push(t);
        written.push(w as f64);
    }
    let (empty_t, empty_w) = d.cut()?;
    // Empty blocks up to the one whose cut settles the epoch (every slot of every deal).
    let mut boundary = (0.0, 0);
    for _ in 0..EPOCH_BLOCKS {
        let next = d.ledger.height().map_or(0, |h| h + 1);
        let settles = (next + 1).is_multiple_of(EPOCH_BLOCKS);
        let cut = d.cut()?;
        if settles {
            boundary = cut;
            break;
        }
    }
    let rss = self_rss_kib() as f64 / 1024.0;
    println!(
        "{:<46} {:>8.0}ms {:>10}",
        "  block of 1,000 transfers, median of 5",
        median(&mut times) * 1e3,
        "< 100 ms"
    );
    println!(
        "{:<46} {:>8.1}M {:>10}",
        "  written per block of 1,000, median",
        median(&mut written) / MIB as f64,
        "~ txs"
    );
    println!(
        "{:<46} {:>8.0}ms {:>8.1}M",
        "  empty block: time, written",
        empty_t * 1e3,
        empty_w as f64 / MIB as f64
    );
    println!(
        "{:<46} {:>8.0}ms {:>10}",
        "  block that settles an epoch (600,000 slots)",
        boundary.0 * 1e3,
        "< 1 s"
    );
    println!(
        "{:<46} {:>8.1}M",
        "  written by the epoch block",
        boundary.1 as f64 / MIB as f64
    );
    println!(
        "{:<46} {:>8.0}M {:>10}",
        "  ledger RSS (this process)", rss, "< 1 GiB"
    );
    drop(d);
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

/// A provider under 200 stalled `Put` streams from one hostile peer (each announcing a 4 MiB
/// shard for a slot really assigned to it, sending 1 MiB and going silent): its peak RSS, and an
/// honest `atlas pin` to it (and five others) while the streams stay open.
fn put_siege_section(opts: &Opts) -> Result<(), String> {
    const STALLED: usize = 200;
    let root = opts.dir.join("put-siege");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let (_ledger, ledger_addr) = spawn_service(
        opts,
        &root.join("ledger"),
        &[
            "ledger",
            "run",
            "--faucet",
            "--block-time",
            "200ms",
            "--epoch-blocks",
            "25",
        ],
        None,
    )?;
    let mut providers = Vec::new();
    for i in 0..6 {
        let price = (1000 + i).to_string();
        providers.push(spawn_service(
            opts,
            &root.join(format!("p{i}")),
            &["provider", "run", "--capacity", "2GiB", "--price", &price],
            Some(&ledger_addr),
        )?);
    }
    let (victim, victim_addr) = &providers[0];
    let victim_pid = victim.0.id();
    let victim_peer = victim_addr
        .rsplit("/p2p/")
        .next()
        .ok_or("the provider's address has no /p2p/")?
        .to_string();
    // The reference: the same kind of pin with nobody attacking.
    let creator = root.join("creator");
    atlas(opts, &creator, &["key", "gen"])?;
    let pin = |file: &Path| -> Result<f64, String> {
        let mut cmd = Command::new(&opts.atlas);
        cmd.env("ATLAS_HOME", &creator)
            .env("ATLAS_LEDGER", &ledger_addr)
            .env("ATLAS_LOG", "info,libp2p=warn");
        let start = Instant::now();
        run_atlas(
            opts,
            &mut cmd,
            &["pin", &file.to_string_lossy(), "--epochs", "50", "-q"],
        )?;
        Ok(start.elapsed().as_secs_f64())
    };
    let mut cmd = Command::new(&opts.atlas);
    cmd.env("ATLAS_HOME", &creator)
        .env("ATLAS_LEDGER", &ledger_addr);
    run_atlas(opts, &mut cmd, &["wallet", "faucet", "1000000000"])?;
    let reference = root.join("reference.bin");
    make_input(&reference, 64 * MIB).map_err(|e| e.to_string())?;
    let reference_secs = pin(&reference)?;
    let idle = rss_mib(victim_pid);
    // Peak RSS over the whole siege, sampled until told to stop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0f64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_mib(victim_pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let stalled = runtime
        .block_on(atlas_tests::stall::stall(
            &ledger_addr,
            &victim_peer,
            6,
            &root,
            STALLED,
        ))
        .map_err(|e| format!("the stalled uploads: {e:#}"))?;
    let under_siege = rss_mib(victim_pid);
    // An honest creator pins another object (one MiB longer, so not the same) while the
    // attacker's streams stay open.
    let video = root.join("honest.bin");
    make_input(&video, 65 * MIB).map_err(|e| e.to_string())?;
    let pinned = pin(&video);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().map_err(|_| "the RSS sampler panicked")?;
    let open = stalled.streams.len();
    drop(stalled.streams);
    drop(stalled.attacker);
    drop(runtime);
    drop(providers);
    // Logs are kept when the honest pin failed.
    if pinned.is_ok() {
        let _ = fs::remove_dir_all(&root);
    }
    println!(
        "\n{:<46} {:>9} {:>22} {:>9}",
        format!("provider under {STALLED} stalled Put streams"),
        "",
        "",
        "target"
    );
    println!(
        "{:<46} {:>8.1}M {:>22} {:>9}",
        "  provider peak RSS",
        peak,
        format!("idle before: {idle:.1}M"),
        "< 100M"
    );
    println!(
        "{:<46} {:>8.1}M {:>22}",
        "  provider RSS with the streams open",
        under_siege,
        format!("{} taken, {} refused", stalled.taken, stalled.refused)
    );
    println!(
        "{:<46} {:>9} {:>22} {:>9}",
        "  honest 65 MiB pin meanwhile (s)",
        match &pinned {
            Ok(secs) => format!("{secs:.1}"),
            Err(_) => "FAILED".into(),
        },
        format!("unattacked: {reference_secs:.1} s"),
        "completes"
    );
    println!(
        "{:<46} {:>9}",
        "  attacker's streams open during the pin", open
    );
    pinned.map(|_| ())
}
