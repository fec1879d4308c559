//! Encoding a file into an encoded-object directory with a signed manifest: what `atlas encode`
//! and `atlas pin` share.

use super::{ClientError, Result};
use atlas_protocol::layout::{Layout, ENCODING_RS_GF8_V1};
use atlas_protocol::manifest::{Manifest, VerifiedManifest, MANIFEST_VERSION};
use atlas_protocol::Keypair;
use atlas_storage::slot_dir::SlotDirWriter;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// What to encode, and how.
#[derive(Debug, Clone)]
pub struct EncodeRequest<'a> {
    pub file: &'a Path,
    /// A new or empty directory.
    pub out: &'a Path,
    pub data_shards: u16,
    pub parity_shards: u16,
    pub shard_size: u64,
    /// Defaults to the file's name.
    pub name: Option<String>,
    /// Defaults to a guess from the extension.
    pub media_type: Option<String>,
    pub threads: usize,
}

/// Media type from a file name's extension.
pub fn guess_media_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "mov" => "video/quicktime",
        "ts" => "video/mp2t",
        "ogv" => "video/ogg",
        "avi" => "video/x-msvideo",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

/// Encodes `req.file` into `req.out` and signs its manifest with `key`. On failure the directory
/// is left without slot files or manifest.
pub fn encode_file(
    key: &Keypair,
    req: &EncodeRequest,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifiedManifest> {
    let cannot = |what: &str, e: std::io::Error| {
        ClientError::Encode(format!("cannot {what} {}: {e}", req.file.display()))
    };
    // Asked of the path before opening it: opening a FIFO would wait for a writer forever.
    let regular = |m: std::fs::Metadata| m.is_file();
    if !std::fs::metadata(req.file)
        .map(regular)
        .map_err(|e| cannot("open", e))?
    {
        return Err(ClientError::Encode(format!(
            "{} is not a regular file",
            req.file.display()
        )));
    }
    let file = File::open(req.file).map_err(|e| cannot("open", e))?;
    let meta = file.metadata().map_err(|e| cannot("read", e))?;
    if !meta.is_file() {
        return Err(ClientError::Encode(format!(
            "{} is not a regular file",
            req.file.display()
        )));
    }
    let layout = Layout::new(
        req.data_shards as usize,
        req.parity_shards as usize,
        req.shard_size,
        meta.len(),
    )
    .map_err(|e| ClientError::Encode(format!("bad encoding parameters: {e}")))?;
    let writer = SlotDirWriter::create(req.out, layout.total_shards())?;
    let total = layout.size();
    progress(0, total);
    let encoded = writer.encode(
        BufReader::with_capacity(1 << 16, file),
        layout,
        req.threads,
        &mut |done| progress(done, total),
    )?;
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        encoding: ENCODING_RS_GF8_V1.into(),
        name: req.name.clone().unwrap_or_else(|| {
            req.file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        media_type: req
            .media_type
            .clone()
            .unwrap_or_else(|| guess_media_type(req.file).to_string()),
        size: layout.size(),
        file_hash: *encoded.file_hash.as_bytes(),
        data_shards: req.data_shards,
        parity_shards: req.parity_shards,
        shard_size: layout.shard_size(),
        stripes: layout.stripes(),
        slot_roots: encoded.slot_roots.iter().map(|h| *h.as_bytes()).collect(),
        creator: key.public(),
        created_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let signed = match manifest.sign(key) {
        Ok(s) => s,
        Err(e) => {
            writer.discard();
            return Err(ClientError::Encode(format!("signing the manifest: {e}")));
        }
    };
    if let Err(e) = writer.finish(&layout, &signed) {
        writer.discard();
        return Err(e.into());
    }
    Ok(signed)
}
