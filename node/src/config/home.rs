//! `ATLAS_HOME`: a node's key, config and data (default `~/.atlas`).

use anyhow::{bail, Context, Result};
use atlas_protocol::Keypair;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// File name of the node key inside the home.
pub const KEY_FILE: &str = "key";

/// A throwaway key, for commands that only read (the network needs some identity).
pub fn ephemeral_key() -> Result<Keypair> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| anyhow::anyhow!("the OS gave no randomness for a key: {e}"))?;
    Ok(Keypair::from_secret(secret))
}

/// The node's home directory.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// `--home` if given, else `$ATLAS_HOME`, else `~/.atlas`.
    pub fn resolve(flag: Option<PathBuf>) -> Result<Self> {
        let root = match flag {
            Some(p) => p,
            None => match std::env::var_os("ATLAS_HOME") {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => {
                    let home = std::env::var_os("HOME")
                        .context("neither ATLAS_HOME nor HOME is set; set ATLAS_HOME to a directory for Atlas's key and data")?;
                    PathBuf::from(home).join(".atlas")
                }
            },
        };
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn key_path(&self) -> PathBuf {
        self.root.join(KEY_FILE)
    }

    /// Creates a new key; refuses to replace an existing one unless `force`.
    pub fn generate_key(&self, force: bool) -> Result<Keypair> {
        let path = self.key_path();
        if path.exists() && !force {
            bail!(
                "{} already holds a key; keep it, or pass --force to replace it (the old identity and its funds are lost)",
                path.display()
            );
        }
        fs::create_dir_all(&self.root)
            .with_context(|| format!("creating {}", self.root.display()))?;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| anyhow::anyhow!("the OS gave no randomness for a key: {e}"))?;
        let key = Keypair::from_secret(secret);
        let tmp = self.root.join(format!("{KEY_FILE}.tmp"));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        writeln!(f, "{}", key.secret_hex())
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(key)
    }

    /// Loads the key, creating one on first use (for services, which own their home).
    pub fn load_or_generate_key(&self) -> Result<Keypair> {
        if self.key_path().exists() {
            self.load_key()
        } else {
            let key = self.generate_key(false)?;
            eprintln!("created a new key in {}", self.key_path().display());
            Ok(key)
        }
    }

    /// Loads the key, with a hint to create one if there is none.
    pub fn load_key(&self) -> Result<Keypair> {
        let path = self.key_path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no key at {}; create one with `atlas key gen` (or set ATLAS_HOME)",
                path.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Keypair::from_hex(&text)
            .with_context(|| format!("{} does not hold a valid key", path.display()))
    }
}
