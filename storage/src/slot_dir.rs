//! The encoded-object directory that `atlas encode` writes and `decode` / `verify` read:
//!
//! ```text
//! DIR/manifest.atlas   the signed manifest (written last: a directory without it is incomplete)
//! DIR/slot-000.data    slot 0's bytes
//! DIR/slot-000.obao    slot 0's outboard (the same format a provider keeps)
//! ...
//! ```
//!
//! Nothing read from the directory is trusted: the manifest's signature is checked, each slot's
//! outboard is checked against the manifest's slot root, and each shard against its outboard CV before
//! it is used, so a deleted, truncated or corrupted file only ever makes shards unavailable.

use crate::outboard_file::{read_verified_level, write_upper_levels};
use atlas_protocol::erasure::{
    self, DecodeError, DecodeStats, EncodeError, Encoded, ShardSource, SlotOutput,
};
use atlas_protocol::manifest::{ManifestError, SignedManifest, VerifiedManifest};
use atlas_protocol::tree::{shard_level, subtree_cv, Cv, CvStack, TreeShape};
use atlas_protocol::Layout;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// File name of the manifest inside an encoded directory.
pub const MANIFEST_FILE: &str = "manifest.atlas";

/// Path of slot `j`'s bytes.
pub fn data_path(dir: &Path, slot: usize) -> PathBuf {
    dir.join(format!("slot-{slot:03}.data"))
}

/// Path of slot `j`'s outboard.
pub fn outboard_path(dir: &Path, slot: usize) -> PathBuf {
    dir.join(format!("slot-{slot:03}.obao"))
}

/// Why reading or writing an encoded directory failed.
#[derive(Debug, thiserror::Error)]
pub enum SlotDirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} already holds files; encode into a new or empty directory")]
    NotEmpty(PathBuf),
    #[error("{0} has no {MANIFEST_FILE}: not an encoded object, or its encoding did not finish")]
    NoManifest(PathBuf),
    #[error("{path}: {source}")]
    Manifest {
        path: PathBuf,
        #[source]
        source: ManifestError,
    },
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("decoded bytes do not match the manifest's file hash; nothing was written")]
    HashMismatch,
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("the manifest describes {stripes} stripes per slot, more than the {MAX_OPEN_STRIPES} this reader checks")]
    TooManyStripes { stripes: u64 },
}

/// Most stripes per slot an encoded directory may have to be opened: the shard CVs of a slot
/// are held in memory (32 bytes a stripe, so at most 128 MiB), and a manifest from elsewhere
/// must not size that allocation beyond it. At the largest shard size that is 16 TiB a slot.
pub const MAX_OPEN_STRIPES: u64 = 1 << 22;

/// Refuses anything at `path` but a regular file, asked before opening it (a FIFO would block
/// the open, a device would read forever).
fn regular_file(path: &Path) -> Result<(), SlotDirError> {
    match fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(SlotDirError::NotAFile {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SlotDirError + '_ {
    move |source| SlotDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A writer for a fresh encoded directory.
#[derive(Debug)]
pub struct SlotDirWriter {
    dir: PathBuf,
    slots: usize,
}

impl SlotDirWriter {
    /// Creates `dir` (or takes an empty one) for `slots` slot files.
    pub fn create(dir: &Path, slots: usize) -> Result<Self, SlotDirError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        if fs::read_dir(dir).map_err(io_err(dir))?.next().is_some() {
            return Err(SlotDirError::NotEmpty(dir.to_path_buf()));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            slots,
        })
    }

    /// One output per slot, for [`erasure::encode`].
    pub fn outputs(&self) -> Result<Vec<SlotOutput>, SlotDirError> {
        (0..self.slots)
            .map(|j| {
                let open = |p: PathBuf| -> Result<Box<dyn Write + Send>, SlotDirError> {
                    let f = File::create(&p).map_err(io_err(&p))?;
                    Ok(Box::new(BufWriter::with_capacity(1 << 16, f)))
                };
                Ok(SlotOutput {
                    data: open(data_path(&self.dir, j))?,
                    groups: open(outboard_path(&self.dir, j))?,
                })
            })
            .collect()
    }

    /// Encodes `input` into this directory and signs nothing: the caller signs the manifest it builds
    /// from the result and hands it to [`SlotDirWriter::finish`].
    pub fn encode(
        &self,
        input: impl Read + Send,
        layout: Layout,
        threads: usize,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Encoded, SlotDirError> {
        let result = erasure::encode(input, layout, self.outputs()?, threads, progress);
        match result {
            Ok(encoded) => Ok(encoded),
            Err(e) => {
                self.discard();
                Err(e.into())
            }
        }
    }

    /// Completes the outboards, makes every file durable, then writes the manifest last.
    pub fn finish(&self, layout: &Layout, manifest: &VerifiedManifest) -> Result<(), SlotDirError> {
        let shape = TreeShape::new(layout.slot_len()).map_err(|e| SlotDirError::Io {
            path: self.dir.clone(),
            source: io::Error::other(e),
        })?;
        // Slots are finished in parallel: the fsyncs overlap on the device.
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..self.slots)
                .map(|j| scope.spawn(move || self.finish_slot(j, &shape)))
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().expect("finishing a slot does not panic"))
        })?;
        let path = self.dir.join(MANIFEST_FILE);
        let tmp = self.dir.join(format!("{MANIFEST_FILE}.tmp"));
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(&manifest.signed().to_file_bytes())
            .and_then(|_| f.sync_all())
            .map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))
    }

    fn finish_slot(&self, j: usize, shape: &TreeShape) -> Result<(), SlotDirError> {
        let ob = outboard_path(&self.dir, j);
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&ob)
            .map_err(io_err(&ob))?;
        write_upper_levels(&f, shape).map_err(io_err(&ob))?;
        f.sync_all().map_err(io_err(&ob))?;
        let data = data_path(&self.dir, j);
        File::open(&data)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&data))
    }

    /// Removes what this writer created (after a failure).
    pub fn discard(&self) {
        for j in 0..self.slots {
            let _ = fs::remove_file(data_path(&self.dir, j));
            let _ = fs::remove_file(outboard_path(&self.dir, j));
        }
    }
}

/// The health of one slot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotHealth {
    Ok,
    Missing,
    WrongLength {
        got: u64,
        want: u64,
    },
    /// These stripes' shards fail verification.
    BadShards(Vec<u64>),
    /// The bytes do not hash to the slot root and the outboard cannot say where.
    Corrupt,
}

impl SlotHealth {
    pub fn is_ok(&self) -> bool {
        matches!(self, SlotHealth::Ok)
    }

    pub fn describe(&self) -> String {
        match self {
            SlotHealth::Ok => "ok".into(),
            SlotHealth::Missing => "missing".into(),
            SlotHealth::WrongLength { got, want } => {
                format!("truncated or padded: {got} bytes, expected {want}")
            }
            SlotHealth::BadShards(stripes) => {
                let shown: Vec<String> = stripes.iter().take(8).map(u64::to_string).collect();
                let more = if stripes.len() > 8 { ", ..." } else { "" };
                format!(
                    "corrupted: {} shard(s) fail verification (stripes {}{more})",
                    stripes.len(),
                    shown.join(", ")
                )
            }
            SlotHealth::Corrupt => "corrupted: bytes do not match the slot root".into(),
        }
    }
}

/// How a slot's shards are checked once its file is open.
#[derive(Debug)]
enum SlotCheck {
    /// The slot is one shard: it must hash to the root.
    WholeRoot(blake3::Hash),
    /// One verified CV per shard.
    ShardCvs(Vec<Cv>),
}

#[derive(Debug)]
enum SlotState {
    Unopened,
    Unusable(SlotHealth),
    Open { file: File, check: SlotCheck },
}

/// An encoded directory opened for reading, with its manifest verified.
#[derive(Debug)]
pub struct SlotDir {
    dir: PathBuf,
    manifest: VerifiedManifest,
    layout: Layout,
    slots: Vec<SlotState>,
    /// Shards that failed verification while reading, by slot.
    bad: Vec<Vec<u64>>,
}

impl SlotDir {
    /// Opens `dir` and verifies its manifest.
    pub fn open(dir: &Path) -> Result<Self, SlotDirError> {
        let meta = fs::metadata(dir).map_err(io_err(dir))?;
        if !meta.is_dir() {
            return Err(SlotDirError::Io {
                path: dir.to_path_buf(),
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        let path = dir.join(MANIFEST_FILE);
        regular_file(&path)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SlotDirError::NoManifest(dir.to_path_buf()))
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let manifest = SignedManifest::from_file_bytes(&bytes)
            .and_then(|s| s.verify())
            .map_err(|source| SlotDirError::Manifest {
                path: path.clone(),
                source,
            })?;
        let layout = manifest.layout();
        if layout.stripes() > MAX_OPEN_STRIPES {
            return Err(SlotDirError::TooManyStripes {
                stripes: layout.stripes(),
            });
        }
        let n = layout.total_shards();
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            layout,
            slots: (0..n).map(|_| SlotState::Unopened).collect(),
            bad: vec![Vec::new(); n],
        })
    }

    pub fn manifest(&self) -> &VerifiedManifest {
        &self.manifest
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Opens slot `j`'s file and loads the CVs its shards are checked against.
    fn open_slot(&self, slot: usize) -> SlotState {
        let path = data_path(&self.dir, slot);
        if regular_file(&path).is_err() {
            return SlotState::Unusable(SlotHealth::Missing);
        }
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(_) => return SlotState::Unusable(SlotHealth::Missing),
        };
        let want = self.layout.slot_len();
        match file.metadata() {
            Ok(m) if m.len() == want => {}
            Ok(m) => return SlotState::Unusable(SlotHealth::WrongLength { got: m.len(), want }),
            Err(_) => return SlotState::Unusable(SlotHealth::Missing),
        }
        let root = self.manifest.slot_root(slot);
        let c = self.layout.shard_size();
        let shape = TreeShape::new(want).expect("a verified layout has a valid slot length");
        let level = shard_level(c);
        if level == shape.height() {
            return SlotState::Open {
                file,
                check: SlotCheck::WholeRoot(root),
            };
        }
        let ob_path = outboard_path(&self.dir, slot);
        let from_outboard = regular_file(&ob_path)
            .ok()
            .and_then(|()| File::open(&ob_path).ok())
            .and_then(|ob| read_verified_level(&ob, &shape, level, &root));
        let cvs = match from_outboard {
            Some(cvs) => cvs,
            None => {
                // No usable outboard: hash the slot itself. If that matches the root, its shard CVs
                // are right; if not, nobody can say which shards are bad.
                let mut cvs = Vec::with_capacity(self.layout.stripes() as usize);
                let mut stack = CvStack::new();
                let mut buf = vec![0u8; c as usize];
                for stripe in 0..self.layout.stripes() {
                    if file.read_exact_at(&mut buf, stripe * c).is_err() {
                        return SlotState::Unusable(SlotHealth::Corrupt);
                    }
                    let cv = subtree_cv(stripe * c, &buf);
                    stack.push(cv);
                    cvs.push(cv);
                }
                if stack.finish() != Some(root) {
                    return SlotState::Unusable(SlotHealth::Corrupt);
                }
                cvs
            }
        };
        SlotState::Open {
            file,
            check: SlotCheck::ShardCvs(cvs),
        }
    }

    fn read_shard(&mut self, stripe: u64, slot: usize, buf: &mut [u8]) -> io::Result<bool> {
        if matches!(self.slots[slot], SlotState::Unopened) {
            self.slots[slot] = self.open_slot(slot);
        }
        let SlotState::Open { file, check } = &self.slots[slot] else {
            return Ok(false);
        };
        let c = self.layout.shard_size();
        if file.read_exact_at(buf, stripe * c).is_err() {
            self.bad[slot].push(stripe);
            return Ok(false);
        }
        let ok = match check {
            SlotCheck::WholeRoot(root) => blake3::hash(buf) == *root,
            SlotCheck::ShardCvs(cvs) => subtree_cv(stripe * c, buf) == cvs[stripe as usize],
        };
        if !ok {
            self.bad[slot].push(stripe);
        }
        Ok(ok)
    }

    /// Reads every shard of slot `j` and reports its health.
    pub fn check_slot(&mut self, slot: usize, progress: &mut dyn FnMut(u64)) -> SlotHealth {
        if matches!(self.slots[slot], SlotState::Unopened) {
            self.slots[slot] = self.open_slot(slot);
        }
        if let SlotState::Unusable(health) = &self.slots[slot] {
            return health.clone();
        }
        let c = self.layout.shard_size();
        let mut buf = vec![0u8; c as usize];
        let mut bad = Vec::new();
        for stripe in 0..self.layout.stripes() {
            if !matches!(self.read_shard(stripe, slot, &mut buf), Ok(true)) {
                bad.push(stripe);
            }
            progress(c);
        }
        if bad.is_empty() {
            SlotHealth::Ok
        } else {
            SlotHealth::BadShards(bad)
        }
    }

    /// Health of each slot as seen by reads so far (unopened slots are reported `Ok`).
    pub fn seen_health(&self) -> Vec<SlotHealth> {
        self.slots
            .iter()
            .zip(&self.bad)
            .map(|(state, bad)| match state {
                SlotState::Unusable(h) => h.clone(),
                _ if !bad.is_empty() => SlotHealth::BadShards(bad.clone()),
                _ => SlotHealth::Ok,
            })
            .collect()
    }

    /// Decodes the whole file to `out`, verifying every shard and the file hash (see
    /// [`decode_to_file`]).
    pub fn decode_to(
        &mut self,
        out: &Path,
        progress: &mut dyn FnMut(u64),
    ) -> Result<DecodeStats, SlotDirError> {
        let layout = self.layout;
        let file_hash = self.manifest.manifest().file_hash;
        decode_to_file(&layout, &file_hash, self, out, progress)
    }
}

/// Decodes a whole object from `source` into `out`. The bytes go to a hidden temporary file beside
/// `out` that is renamed into place only once the whole file's BLAKE3 matches `file_hash`; on any
/// failure nothing is left behind.
pub fn decode_to_file(
    layout: &Layout,
    file_hash: &[u8; 32],
    source: &mut dyn ShardSource,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<DecodeStats, SlotDirError> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let tmp = parent.join(format!(".{name}.atlas-partial"));
    // A file left by an interrupted decode goes first (a symlink there is removed, not followed);
    // then the temporary file is created new, never through a link someone planted.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&tmp)(e)),
    }
    let result = (|| {
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let mut w = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: blake3::Hasher::new(),
        };
        let stats = erasure::decode_range(layout, source, 0..layout.size(), &mut w, progress)?;
        if w.hasher.finalize().as_bytes() != file_hash {
            return Err(SlotDirError::HashMismatch);
        }
        let file = w
            .inner
            .into_inner()
            .map_err(|e| io_err(&tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, out).map_err(io_err(out))?;
        Ok(stats)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

impl ShardSource for SlotDir {
    fn read_verified(&mut self, stripe: u64, slot: usize, buf: &mut [u8]) -> io::Result<bool> {
        self.read_shard(stripe, slot, buf)
    }

    fn check_rebuilt(&mut self, stripe: u64, slot: usize, bytes: &[u8]) -> io::Result<bool> {
        if matches!(self.slots[slot], SlotState::Unopened) {
            self.slots[slot] = self.open_slot(slot);
        }
        let c = self.layout.shard_size();
        Ok(match &self.slots[slot] {
            SlotState::Open {
                check: SlotCheck::ShardCvs(cvs),
                ..
            } => subtree_cv(stripe * c, bytes) == cvs[stripe as usize],
            SlotState::Open {
                check: SlotCheck::WholeRoot(root),
                ..
            } => blake3::hash(bytes) == *root,
            // No trusted CVs for this slot (its file and outboard are gone): the whole-file hash
            // check at the end of `decode_to` still stands between these bytes and the output.
            _ => true,
        })
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
