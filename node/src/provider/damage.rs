//! The provider's record of damaged slots: one JSON line per slot the scrubber quarantined, in
//! `damaged.jsonl` beside the slot store, so `atlas provider status` can say what was found
//! and when, whether or not the provider is running.

use serde::{Deserialize, Serialize};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

const FILE: &str = "damaged.jsonl";

/// The most of the record read back: its newest entries, enough for any status page.
const READ_TAIL: u64 = 256 * 1024;

/// One quarantined slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Damage {
    /// When it was found, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub object: String,
    pub slot: u16,
    /// What was wrong, for people.
    pub why: String,
}

/// Where the record of a store in `store_dir` lives.
pub fn path(store_dir: &Path) -> PathBuf {
    store_dir.join(FILE)
}

/// Appends `d` to the record and syncs it.
pub fn record(store_dir: &Path, d: &Damage) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path(store_dir))?;
    // A line a crash cut short is ended first, so it does not swallow this one.
    let mut line = Vec::new();
    let len = f.metadata()?.len();
    if len > 0 {
        let mut last = [0u8];
        f.seek(SeekFrom::Start(len - 1))?;
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.push(b'\n');
        }
    }
    line.extend(serde_json::to_vec(d).map_err(std::io::Error::other)?);
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_data()
}

/// The newest entries of the record, oldest first (none if there is no record). Lines that do
/// not parse (a line cut short by a crash) are skipped.
pub fn read(store_dir: &Path) -> std::io::Result<Vec<Damage>> {
    let mut f = match std::fs::File::open(path(store_dir)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let from = len.saturating_sub(READ_TAIL);
    f.seek(SeekFrom::Start(from))?;
    let mut text = String::new();
    f.take(READ_TAIL).read_to_string(&mut text)?;
    let mut lines = text.lines();
    if from > 0 {
        lines.next(); // most likely cut by where the tail starts
    }
    Ok(lines.filter_map(|l| serde_json::from_str(l).ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(read(dir.path()).expect("read").is_empty());
        let d = Damage {
            at_ms: 1,
            object: "ab".into(),
            slot: 3,
            why: "shard 0 does not verify".into(),
        };
        record(dir.path(), &d).expect("record");
        std::fs::OpenOptions::new()
            .append(true)
            .open(path(dir.path()))
            .and_then(|mut f| f.write_all(b"{\"at_ms\":2,\"obj"))
            .expect("torn write");
        let later = Damage {
            at_ms: 3,
            ..d.clone()
        };
        record(dir.path(), &later).expect("record after a torn line");
        assert_eq!(read(dir.path()).expect("read"), vec![d, later]);
    }
}
