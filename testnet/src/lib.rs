//! # atlas-testnet
//!
//! A local Atlas network on loopback: one ledger, N providers and a gateway, each its own process
//! with its own home under one directory. This crate knows the layout (names, homes, ports), starts
//! and stops the processes, and fills in the templates (`templates/`); `atlas testnet` drives it.
//!
//! ```text
//! DIR/testnet.json       the plan: providers, ports, chain settings (kept across up/down)
//! DIR/testnet.env        `source` it to point the atlas CLI at this network
//! DIR/prometheus.yml     scrape config for every node's /metrics
//! DIR/ledger/            ledger home: key, chain database, log, pid
//! DIR/provider-NN/       provider homes: key, slots, log, pid
//! DIR/gateway/           gateway home
//! DIR/creator/           a funded creator account for the CLI
//! ```
//!
//! Ports are fixed by the plan, so `up` after `down` brings every node back at the same address
//! with the same key and data.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The scrape config template.
pub const PROMETHEUS_TEMPLATE: &str = include_str!("../templates/prometheus.yml");
/// The shell environment template.
pub const ENV_TEMPLATE: &str = include_str!("../templates/testnet.env");

const PLAN_FILE: &str = "testnet.json";
const PID_FILE: &str = "pid";
/// Each process's stdout and stderr.
pub const LOG_FILE: &str = "node.log";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// What a testnet is made of; saved in `DIR/testnet.json` by the first `up`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub providers: usize,
    /// The ledger's port; the others follow it (see [`Plan::members`]).
    pub base_port: u16,
    /// Ledger block time, as the CLI takes it (e.g. `500ms`).
    pub block_time: String,
    pub epoch_blocks: u64,
    /// Each provider's capacity, as the CLI takes it (e.g. `4GiB`).
    pub capacity: String,
}

/// Which service a member runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ledger,
    Provider(usize),
    Gateway,
}

/// One process of the testnet.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub role: Role,
    pub home: PathBuf,
    /// libp2p TCP (and QUIC) port; the gateway has none.
    pub p2p_port: Option<u16>,
    /// HTTP port for /metrics (and the gateway's pages).
    pub http_port: u16,
}

impl Member {
    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.http_port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.home.join(LOG_FILE)
    }

    /// The atlas command line that runs this member (after the binary).
    pub fn args(&self, plan: &Plan) -> Vec<String> {
        let mut args = vec!["--home".to_string(), self.home.display().to_string()];
        let listen = |port: u16| {
            vec![
                "--listen".to_string(),
                format!("/ip4/127.0.0.1/tcp/{port}"),
                "--listen".to_string(),
                format!("/ip4/127.0.0.1/udp/{port}/quic-v1"),
            ]
        };
        let metrics = [
            "--metrics".to_string(),
            format!("127.0.0.1:{}", self.http_port),
        ];
        match self.role {
            Role::Ledger => {
                args.extend(["ledger", "run", "--faucet"].map(String::from));
                args.extend(["--block-time".into(), plan.block_time.clone()]);
                args.extend(["--epoch-blocks".into(), plan.epoch_blocks.to_string()]);
                args.extend(listen(self.p2p_port.expect("the ledger listens")));
                args.extend(metrics);
            }
            Role::Provider(i) => {
                args.extend(["provider", "run"].map(String::from));
                args.extend(["--capacity".into(), plan.capacity.clone()]);
                // Distinct prices, so the cheapest-first choice of holders is predictable.
                args.extend(["--price".into(), (1000 + i).to_string()]);
                args.extend(listen(self.p2p_port.expect("providers listen")));
                args.extend(metrics);
            }
            Role::Gateway => {
                args.extend(["gateway", "run", "--listen"].map(String::from));
                args.push(format!("127.0.0.1:{}", self.http_port));
            }
        }
        args
    }
}

/// A testnet directory.
#[derive(Debug, Clone)]
pub struct Testnet {
    pub dir: PathBuf,
    pub plan: Plan,
}

impl Testnet {
    /// The testnet saved in `dir`, if any.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(PLAN_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        };
        let plan = serde_json::from_str(&text).map_err(|e| {
            Error::Invalid(format!("{} is not a testnet plan: {e}", path.display()))
        })?;
        Ok(Some(Self {
            dir: dir.to_path_buf(),
            plan,
        }))
    }

    /// Saves the plan (atomically: a crash leaves the old one or the new one).
    pub fn save(&self) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(io(format!("creating {}", self.dir.display())))?;
        let text = serde_json::to_string_pretty(&self.plan).expect("plans serialize");
        write_atomic(&self.dir.join(PLAN_FILE), text.as_bytes())
    }

    pub fn creator_home(&self) -> PathBuf {
        self.dir.join("creator")
    }

    pub fn env_path(&self) -> PathBuf {
        self.dir.join("testnet.env")
    }

    /// Every member: the ledger, the providers, then the gateway.
    pub fn members(&self) -> Vec<Member> {
        let base = self.plan.base_port;
        let mut all = vec![Member {
            name: "ledger".into(),
            role: Role::Ledger,
            home: self.dir.join("ledger"),
            p2p_port: Some(base),
            http_port: base + 1,
        }];
        for i in 0..self.plan.providers {
            let port = base + 10 + 2 * i as u16;
            all.push(Member {
                name: format!("provider-{i:02}"),
                role: Role::Provider(i),
                home: self.dir.join(format!("provider-{i:02}")),
                p2p_port: Some(port),
                http_port: port + 1,
            });
        }
        all.push(Member {
            name: "gateway".into(),
            role: Role::Gateway,
            home: self.dir.join("gateway"),
            p2p_port: None,
            http_port: base + 2,
        });
        all
    }

    /// The highest port the plan uses.
    pub fn last_port(plan: &Plan) -> Option<u16> {
        u16::try_from(plan.base_port as usize + 11 + 2 * plan.providers.saturating_sub(1)).ok()
    }

    /// Writes `testnet.env` and `prometheus.yml` for the current plan.
    pub fn write_files(&self, ledger_addr: &str) -> Result<()> {
        let members = self.members();
        let target = |m: &Member| format!("'127.0.0.1:{}'", m.http_port);
        let gateway = members
            .iter()
            .find(|m| m.role == Role::Gateway)
            .expect("planned");
        let ledger = members
            .iter()
            .find(|m| m.role == Role::Ledger)
            .expect("planned");
        let providers: Vec<String> = members
            .iter()
            .filter(|m| matches!(m.role, Role::Provider(_)))
            .map(target)
            .collect();
        let prometheus = render(
            PROMETHEUS_TEMPLATE,
            &[
                ("ledger", &target(ledger)),
                ("gateway", &target(gateway)),
                ("providers", &providers.join(", ")),
            ],
        );
        write_atomic(&self.dir.join("prometheus.yml"), prometheus.as_bytes())?;
        let env = render(
            ENV_TEMPLATE,
            &[
                ("dir", &self.dir.display().to_string()),
                ("creator_home", &self.creator_home().display().to_string()),
                ("ledger", ledger_addr),
                (
                    "gateway",
                    &format!("http://127.0.0.1:{}", gateway.http_port),
                ),
            ],
        );
        write_atomic(&self.env_path(), env.as_bytes())
    }
}

/// Replaces every `{{key}}` in `template`.
pub fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (k, v) in values {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io(format!("writing {}", tmp.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(format!("writing {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io(format!("renaming to {}", path.display())))
}

/// True if nothing listens on TCP `port` of 127.0.0.1 and it can be bound.
pub fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Waits until something accepts TCP connections on `port`, up to `timeout`; false if not. Also
/// gives up early when `alive` says the process meant to listen is gone.
pub fn wait_for_port(port: u16, timeout: Duration, alive: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        if !alive() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Starts `exe args` for `member` in its own process group (so it outlives the command that
/// started it and a Ctrl-C there), with stdout and stderr appended to its log. Returns its pid.
pub fn spawn(exe: &Path, member: &Member, args: &[String], env: &[(&str, &str)]) -> Result<u32> {
    fs::create_dir_all(&member.home).map_err(io(format!("creating {}", member.home.display())))?;
    let log_path = member.log_path();
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(io(format!("opening {}", log_path.display())))?;
    let err = log
        .try_clone()
        .map_err(io(format!("opening {}", log_path.display())))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .process_group(0)
        .env("ATLAS_LOG", "info,libp2p=warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().map_err(io(format!(
        "starting {} for {}",
        exe.display(),
        member.name
    )))?;
    let pid = child.id();
    write_atomic(&member.home.join(PID_FILE), pid.to_string().as_bytes())?;
    Ok(pid)
}

/// The pid of `member` if it is running (its pid file names a live atlas process).
pub fn running_pid(member: &Member) -> Option<u32> {
    let pid: u32 = fs::read_to_string(member.home.join(PID_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    alive(pid).then_some(pid)
}

/// True if `pid` is a live (not zombie) atlas process.
pub fn alive(pid: u32) -> bool {
    // A reused pid belongs to some other program: check what runs there.
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    // An empty command line is a process between fork and exec (just started): still ours.
    let exe = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    if !exe.is_empty() && !String::from_utf8_lossy(exe).contains("atlas") {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z') | Some('X') | None
        ),
        Err(_) => false,
    }
}

/// Resident memory of `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// How a process was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It shut down on SIGTERM.
    Clean,
    /// It ignored SIGTERM for `grace` and was killed.
    Killed,
    /// It was not running.
    NotRunning,
}

/// Asks `member` to shut down (SIGTERM) and waits up to `grace`, then kills it.
pub fn stop(member: &Member, grace: Duration) -> Stopped {
    let Some(pid) = running_pid(member) else {
        let _ = fs::remove_file(member.home.join(PID_FILE));
        return Stopped::NotRunning;
    };
    signal(pid, libc::SIGTERM);
    let start = Instant::now();
    let outcome = loop {
        if !alive(pid) {
            break Stopped::Clean;
        }
        if start.elapsed() > grace {
            signal(pid, libc::SIGKILL);
            break Stopped::Killed;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = fs::remove_file(member.home.join(PID_FILE));
    outcome
}

/// Kills `member` at once with SIGKILL and waits until it is gone, as a crash would end it.
pub fn kill(member: &Member) -> Stopped {
    let Some(pid) = running_pid(member) else {
        let _ = fs::remove_file(member.home.join(PID_FILE));
        return Stopped::NotRunning;
    };
    signal(pid, libc::SIGKILL);
    // The kernel ends a killed process promptly; its parent (not us) reaps it, so wait until it
    // is no longer a live process rather than for an exit status.
    while alive(pid) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = fs::remove_file(member.home.join(PID_FILE));
    Stopped::Killed
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours; callers check with
    // `alive` that the pid is still an atlas process.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(providers: usize) -> Plan {
        Plan {
            providers,
            base_port: 7700,
            block_time: "500ms".into(),
            epoch_blocks: 10,
            capacity: "4GiB".into(),
        }
    }

    #[test]
    fn members_have_distinct_ports_and_homes() {
        let t = Testnet {
            dir: "/x".into(),
            plan: plan(50),
        };
        let members = t.members();
        assert_eq!(members.len(), 52);
        let mut ports: Vec<u16> = members
            .iter()
            .flat_map(|m| m.p2p_port.into_iter().chain([m.http_port]))
            .collect();
        let n = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), n, "no port is used twice");
        assert_eq!(ports.last().copied(), Testnet::last_port(&t.plan));
        let homes: std::collections::BTreeSet<_> = members.iter().map(|m| &m.home).collect();
        assert_eq!(homes.len(), members.len());
    }

    #[test]
    fn the_plan_survives_a_save_and_templates_fill_in() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(Testnet::load(dir.path()).expect("loads").is_none());
        let t = Testnet {
            dir: dir.path().into(),
            plan: plan(3),
        };
        t.save().expect("saves");
        let back = Testnet::load(dir.path()).expect("loads").expect("saved");
        assert_eq!(back.plan, t.plan);
        t.write_files("/ip4/127.0.0.1/tcp/7700/p2p/x")
            .expect("writes");
        let env = fs::read_to_string(t.env_path()).expect("env");
        assert!(env.contains("ATLAS_LEDGER='/ip4/127.0.0.1/tcp/7700/p2p/x'"));
        assert!(!env.contains("{{"));
        let prom = fs::read_to_string(dir.path().join("prometheus.yml")).expect("prometheus");
        assert!(prom.contains("'127.0.0.1:7711', '127.0.0.1:7713', '127.0.0.1:7715'"));
        assert!(!prom.contains("{{"));
    }
}
