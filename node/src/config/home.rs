//! `ATLAS_HOME`: a node's key, config and data (default `~/.atlas`).

/// Why the home could not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("neither ATLAS_HOME nor HOME is set; set ATLAS_HOME to a directory for Atlas's key and data")]
    NoHome,
    #[error("{0} already holds a key; keep it, or pass --force to replace it (the old identity and its funds are lost)")]
    KeyExists(PathBuf),
    #[error("no key at {0}; create one with `atlas key gen` (or set ATLAS_HOME)")]
    NoKey(PathBuf),
    #[error("{0} does not hold a valid key")]
    BadKey(PathBuf),
    #[error("the OS gave no randomness for a key: {0}")]
    Randomness(String),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

type Result<T, E = HomeError> = std::result::Result<T, E>;

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> HomeError + 'a {
    move |source| HomeError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}
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
    getrandom::fill(&mut secret).map_err(|e| HomeError::Randomness(e.to_string()))?;
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
                    let home = std::env::var_os("HOME").ok_or(HomeError::NoHome)?;
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
            return Err(HomeError::KeyExists(path));
        }
        fs::create_dir_all(&self.root).map_err(io("creating", &self.root))?;
        let key = ephemeral_key()?;
        let tmp = self.root.join(format!("{KEY_FILE}.tmp"));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("writing", &tmp))?;
        writeln!(f, "{}", key.secret_hex())
            .and_then(|_| f.sync_all())
            .map_err(io("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("writing", &path))?;
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HomeError::NoKey(path))
            }
            Err(e) => return Err(io("reading", &path)(e)),
        };
        Keypair::from_hex(&text).map_err(|_| HomeError::BadKey(path))
    }
}
