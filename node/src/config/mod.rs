//! Configuration: the node home (`$ATLAS_HOME`), `atlas.toml`, the defaults every entry point
//! shares ([`defaults`]), and the units flags are written in ([`units`]).
//!
//! A setting comes from, in order: the command line, its environment variable, `atlas.toml`,
//! the built-in default. The file is `--config FILE` (or `$ATLAS_CONFIG`), else `atlas.toml` in
//! the home when there is one. Each of its keys is a flag of one command (see [`KEYS`]); the
//! file's value becomes that flag's default, so `--help` shows what will be used.

pub mod defaults;
pub mod home;
pub mod units;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The config file's name in the home.
pub const CONFIG_FILE: &str = "atlas.toml";

/// The example file, every key at its default.
pub const EXAMPLE: &str = include_str!("../../atlas.example.toml");

/// Every key `atlas.toml` may hold: `section.key`, the command it configures, and that
/// command's flag (its clap id). A command of `[]` means every command with that flag.
pub const KEYS: &[(&str, &[&str], &str)] = &[
    ("network.ledger", &[], "ledger"),
    ("ledger.listen", &["ledger", "run"], "listen"),
    ("ledger.block_time", &["ledger", "run"], "block_time"),
    ("ledger.epoch_blocks", &["ledger", "run"], "epoch_blocks"),
    ("ledger.faucet", &["ledger", "run"], "faucet"),
    ("ledger.metrics", &["ledger", "run"], "metrics"),
    ("provider.listen", &["provider", "run"], "listen"),
    ("provider.capacity", &["provider", "run"], "capacity"),
    ("provider.price", &["provider", "run"], "price"),
    ("provider.collateral", &["provider", "run"], "collateral"),
    (
        "provider.gc_grace_epochs",
        &["provider", "run"],
        "gc_grace_epochs",
    ),
    ("provider.poll", &["provider", "run"], "poll"),
    ("provider.scrub_pass", &["provider", "run"], "scrub_pass"),
    ("provider.metrics", &["provider", "run"], "metrics"),
    ("pin.data_shards", &["pin"], "data_shards"),
    ("pin.parity_shards", &["pin"], "parity_shards"),
    ("pin.for", &["pin"], "duration"),
    ("pin.max_price", &["pin"], "max_price"),
    ("gateway.listen", &["gateway", "run"], "listen"),
    ("gateway.creators", &["gateway", "run"], "creators"),
    ("testnet.providers", &["testnet", "up"], "providers"),
    ("testnet.base_port", &["testnet", "up"], "base_port"),
    ("testnet.block_time", &["testnet", "up"], "block_time"),
    ("testnet.epoch_blocks", &["testnet", "up"], "epoch_blocks"),
    ("testnet.capacity", &["testnet", "up"], "capacity"),
];

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{path}: unknown setting `{key}` (the settings are listed in atlas.example.toml)")]
    Unknown { path: PathBuf, key: String },
    #[error("{path}: `{key}` must be a string, a number, true/false, or a list of those")]
    BadValue { path: PathBuf, key: String },
    #[error("neither ATLAS_HOME nor HOME is set; set ATLAS_HOME to a directory for Atlas's key and data")]
    NoHome,
}

/// The config file the command line names (`--config FILE`, `$ATLAS_CONFIG`), else the home's
/// `atlas.toml` if it exists. `Err` only when no home can be found at all.
pub fn locate(args: &[OsString]) -> Result<Option<PathBuf>, ConfigError> {
    let flag = |name: &str| -> Option<PathBuf> {
        let eq = format!("{name}=");
        let mut it = args.iter().skip(1);
        while let Some(a) = it.next() {
            let a = a.to_string_lossy();
            if a == "--" {
                break;
            }
            if a == name {
                return it.next().map(PathBuf::from);
            }
            if let Some(v) = a.strip_prefix(&eq) {
                return Some(PathBuf::from(v));
            }
        }
        None
    };
    if let Some(p) = flag("--config") {
        return Ok(Some(p));
    }
    if let Some(p) = std::env::var_os("ATLAS_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(Some(PathBuf::from(p)));
    }
    let home = match flag("--home") {
        Some(h) => h,
        None => match home::Home::resolve(None) {
            Ok(h) => h.root().to_path_buf(),
            Err(_) => return Err(ConfigError::NoHome),
        },
    };
    let path = home.join(CONFIG_FILE);
    Ok(path.exists().then_some(path))
}

/// Reads a config file into `(key, values)` pairs, each key one of [`KEYS`].
pub fn read(path: &Path) -> Result<Vec<(&'static str, Vec<String>)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses config text (see [`read`]).
pub fn parse(path: &Path, text: &str) -> Result<Vec<(&'static str, Vec<String>)>, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: e.message().to_string(),
        })?;
    let mut out = Vec::new();
    for (section, body) in &table {
        let Some(body) = body.as_table() else {
            return Err(ConfigError::Unknown {
                path: path.to_path_buf(),
                key: section.clone(),
            });
        };
        for (name, value) in body {
            let key = format!("{section}.{name}");
            let Some((known, _, _)) = KEYS.iter().find(|(k, _, _)| *k == key) else {
                return Err(ConfigError::Unknown {
                    path: path.to_path_buf(),
                    key,
                });
            };
            let bad = || ConfigError::BadValue {
                path: path.to_path_buf(),
                key: key.clone(),
            };
            let scalar = |v: &toml::Value| -> Option<String> {
                match v {
                    toml::Value::String(s) => Some(s.clone()),
                    toml::Value::Integer(i) => Some(i.to_string()),
                    toml::Value::Boolean(b) => Some(b.to_string()),
                    _ => None,
                }
            };
            let values = match value {
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| scalar(v).ok_or_else(bad))
                    .collect::<Result<Vec<_>, _>>()?,
                v => vec![scalar(v).ok_or_else(bad)?],
            };
            out.push((*known, values));
        }
    }
    Ok(out)
}

/// Makes each setting the default of its flag in `cmd`.
pub fn apply(mut cmd: clap::Command, settings: &[(&str, Vec<String>)]) -> clap::Command {
    for (key, values) in settings {
        let Some((_, path, id)) = KEYS.iter().find(|(k, _, _)| k == key) else {
            continue;
        };
        cmd = set_default(cmd, path, id, values);
    }
    cmd
}

fn set_default(cmd: clap::Command, path: &[&str], id: &str, values: &[String]) -> clap::Command {
    let set = |cmd: clap::Command| {
        if cmd.get_arguments().any(|a| a.get_id() == id) {
            cmd.mut_arg(id, |a| a.default_values(values.to_vec()))
        } else {
            cmd
        }
    };
    match path.split_first() {
        // Every command with the flag, at any depth.
        None => {
            let names: Vec<String> = cmd
                .get_subcommands()
                .map(|s| s.get_name().to_string())
                .collect();
            names.into_iter().fold(set(cmd), |cmd, name| {
                cmd.mut_subcommand(name, |sub| set_default(sub, &[], id, values))
            })
        }
        Some((first, [])) => cmd.mut_subcommand(*first, set),
        Some((first, rest)) => cmd.mut_subcommand(*first, |sub| set_default(sub, rest, id, values)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, FromArgMatches as _};

    fn find<'a>(cmd: &'a clap::Command, path: &[&str]) -> &'a clap::Command {
        path.iter().fold(cmd, |c, name| {
            c.find_subcommand(name)
                .unwrap_or_else(|| panic!("no command {name}"))
        })
    }

    fn default_of(cmd: &clap::Command, path: &[&str], id: &str) -> Vec<String> {
        find(cmd, path)
            .get_arguments()
            .find(|a| a.get_id() == id)
            .unwrap_or_else(|| panic!("{path:?} has no flag {id}"))
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn every_setting_names_a_flag_and_the_example_lists_each_at_its_default() {
        let cli = crate::cli::Cli::command();
        for (key, path, id) in KEYS {
            let cmd = find(&cli, path);
            assert!(
                path.is_empty() || cmd.get_arguments().any(|a| a.get_id() == *id),
                "{key}: {path:?} has no flag {id}"
            );
            let (section, name) = key.split_once('.').expect("section.key");
            let listed = EXAMPLE
                .split("\n[")
                .find(|s| s.starts_with(&format!("{section}]")))
                .is_some_and(|body| {
                    body.lines().any(|l| {
                        let l = l.trim_start_matches(['#', ' ']);
                        l.starts_with(&format!("{name} = "))
                    })
                });
            assert!(listed, "atlas.example.toml does not list {key}");
        }
        let settings = parse(Path::new("atlas.example.toml"), EXAMPLE).expect("the example parses");
        let builtin = [
            ("testnet.base_port", defaults::TESTNET_BASE_PORT.to_string()),
            ("testnet.block_time", defaults::BLOCK_TIME.to_string()),
            ("testnet.epoch_blocks", defaults::EPOCH_BLOCKS.to_string()),
            ("testnet.capacity", defaults::CAPACITY.to_string()),
        ];
        for (key, values) in &settings {
            let (_, path, id) = KEYS.iter().find(|(k, _, _)| k == key).expect("known");
            let want = match builtin.iter().find(|(k, _)| k == key) {
                // Flags whose default depends on the testnet already on disk.
                Some((_, v)) => vec![v.clone()],
                None => default_of(&cli, path, id),
            };
            assert_eq!(
                values, &want,
                "{key} in the example is not the built-in default"
            );
        }
    }

    #[test]
    fn the_file_sets_defaults_that_flags_and_the_environment_override() {
        let file = "[provider]\nprice = 7\ncapacity = \"1GiB\"\n[network]\nledger = \"/ip4/127.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN\"\n";
        let settings = parse(Path::new("t.toml"), file).expect("parses");
        let price = |args: &[&str]| {
            let cmd = apply(crate::cli::Cli::command(), &settings);
            let m = cmd.try_get_matches_from(args).expect("parses");
            crate::cli::Cli::from_arg_matches(&m).expect("the settings are valid values");
            let run = m
                .subcommand_matches("provider")
                .and_then(|p| p.subcommand_matches("run"))
                .expect("provider run");
            *run.get_one::<u128>("price").expect("a price")
        };
        assert_eq!(price(&["atlas", "provider", "run"]), 7);
        assert_eq!(price(&["atlas", "provider", "run", "--price", "9"]), 9);
        assert_eq!(
            default_of(
                &apply(crate::cli::Cli::command(), &settings),
                &["pin"],
                "ledger"
            ),
            vec![
                "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
                    .to_string()
            ],
            "a top-level setting reaches every command with the flag"
        );
    }

    #[test]
    fn the_environment_overrides_the_file_and_a_flag_overrides_both() {
        let file_addr =
            "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        let env_addr =
            "/ip4/127.0.0.1/tcp/2/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        let flag_addr =
            "/ip4/127.0.0.1/tcp/3/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        let settings = parse(
            Path::new("t.toml"),
            &format!("[network]\nledger = \"{file_addr}\"\n"),
        )
        .expect("parses");
        let ledger = |args: &[&str]| {
            let m = apply(crate::cli::Cli::command(), &settings)
                .try_get_matches_from(args)
                .expect("parses");
            m.subcommand_matches("status")
                .and_then(|s| s.get_one::<libp2p::Multiaddr>("ledger").cloned())
                .expect("a ledger address")
                .to_string()
        };
        // The only test that touches ATLAS_LEDGER.
        std::env::remove_var("ATLAS_LEDGER");
        assert_eq!(ledger(&["atlas", "status", "ab"]), file_addr);
        std::env::set_var("ATLAS_LEDGER", env_addr);
        assert_eq!(ledger(&["atlas", "status", "ab"]), env_addr);
        assert_eq!(
            ledger(&["atlas", "status", "ab", "--ledger", flag_addr]),
            flag_addr
        );
        std::env::remove_var("ATLAS_LEDGER");
    }

    #[test]
    fn an_unknown_or_malformed_setting_is_refused_with_its_name() {
        let err = parse(Path::new("a.toml"), "[provider]\nprize = 7\n").expect_err("unknown key");
        assert!(err.to_string().contains("provider.prize"), "{err}");
        let err =
            parse(Path::new("a.toml"), "[provider]\nprice = { x = 1 }\n").expect_err("a table");
        assert!(err.to_string().contains("provider.price"), "{err}");
        let err = parse(Path::new("a.toml"), "[provider\n").expect_err("not toml");
        assert!(err.to_string().starts_with("a.toml:"), "{err}");
    }
}
