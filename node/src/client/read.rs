//! Reading an object back, verified: every shard against its slot root, parity standing in for
//! holders that are down. `atlas get`, the gateway and the tests all read through
//! [`ObjectReader`]; [`read_object`] is the whole read in one call.

use super::holders::{find_deal, object_holders};
use super::lanes::NetShardSource;
use super::{manifest_of, ClientError, Result};
use crate::ledger::Settlement;
use crate::net::NetHandle;
use atlas_protocol::erasure::{decode_range_with, DecodeError, DecodeStats};
use atlas_protocol::escrow::{Deal, Provider};
use atlas_protocol::manifest::VerifiedManifest;
use atlas_storage::slot_dir::{self, SlotDirError};
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;

/// How a read went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadReport {
    pub stats: DecodeStats,
    /// Slots whose holders could not serve (their stripes came from parity).
    pub failed: Vec<usize>,
}

/// Where the bytes go.
pub enum Output {
    /// The whole object into this file, written beside it and renamed into place only once its
    /// BLAKE3 matches the manifest's, so a failed read leaves nothing behind.
    File(PathBuf),
    /// These bytes of the object, stripe by stripe as they are verified.
    Range(Range<u64>, Box<dyn Write + Send>),
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(p) => write!(f, "File({})", p.display()),
            Self::Range(r, _) => write!(f, "Range({r:?})"),
        }
    }
}

/// A verified reader of one object: its manifest and a lane to each holder, kept open between
/// reads (the gateway pools them).
#[derive(Debug)]
pub struct ObjectReader {
    manifest: VerifiedManifest,
    source: NetShardSource,
}

impl ObjectReader {
    /// A reader from `holders` (one per slot, `None` where there is none).
    pub fn new(
        net: &NetHandle,
        manifest: VerifiedManifest,
        holders: Vec<Option<Provider>>,
    ) -> Result<Self> {
        let source = NetShardSource::new(
            tokio::runtime::Handle::current(),
            net.clone(),
            manifest.clone(),
            holders,
        )?;
        Ok(Self { manifest, source })
    }

    /// A reader of the object `deal` stores, from the best holder of each slot across every
    /// live deal of the object (shards are verified against the manifest, so any will do).
    pub async fn of_deal(ledger: &dyn Settlement, net: &NetHandle, deal: &Deal) -> Result<Self> {
        let manifest = manifest_of(deal)?;
        let holders = object_holders(ledger, &deal.terms.object).await?;
        Self::new(net, manifest, holders)
    }

    /// A reader of the object an object or deal id (or a unique prefix of one) names.
    pub async fn find(ledger: &dyn Settlement, net: &NetHandle, id: &str) -> Result<Self> {
        let (_, deal) = find_deal(ledger, id).await?;
        Self::of_deal(ledger, net, &deal).await
    }

    pub fn manifest(&self) -> &VerifiedManifest {
        &self.manifest
    }

    /// Reads into `out` on this (blocking) thread; `progress` gets the bytes written so far.
    pub fn read(&mut self, out: Output, progress: &mut dyn FnMut(u64)) -> Result<ReadReport> {
        let layout = self.manifest.layout();
        let result = match out {
            Output::File(path) => {
                let file_hash = self.manifest.manifest().file_hash;
                slot_dir::decode_to_file(&layout, &file_hash, &mut self.source, &path, progress)
                    .map_err(|e| match e {
                        SlotDirError::Decode(d) => d.into(),
                        other => ClientError::SlotDir(other),
                    })
            }
            Output::Range(range, mut w) => return self.read_range(range, &mut w, progress),
        };
        self.report(result)
    }

    /// Writes file bytes `range` to `out` on this (blocking) thread, reading only the stripes
    /// it covers.
    pub fn read_range(
        &mut self,
        range: Range<u64>,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<ReadReport> {
        self.read_range_with(range, out, progress, &mut Vec::new())
    }

    /// [`Self::read_range`] with a stripe buffer kept by the caller between reads.
    pub fn read_range_with(
        &mut self,
        range: Range<u64>,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
        scratch: &mut Vec<u8>,
    ) -> Result<ReadReport> {
        let layout = self.manifest.layout();
        let result = decode_range_with(&layout, &mut self.source, range, out, progress, scratch)
            .and_then(|stats| {
                out.flush().map_err(DecodeError::Write)?;
                Ok(stats)
            })
            .map_err(ClientError::from);
        self.report(result)
    }

    /// A read's outcome with the slots that failed during it.
    fn report(&self, result: Result<DecodeStats>) -> Result<ReadReport> {
        let failed = self.source.failed_slots();
        match result {
            Ok(stats) => Ok(ReadReport { stats, failed }),
            Err(ClientError::Decode(DecodeError::NotEnoughShards {
                stripe,
                available,
                needed,
            })) => Err(ClientError::Unreadable {
                stripe,
                available,
                needed,
                failed,
            }),
            Err(e) => Err(e),
        }
    }
}

/// Reads the object `deal` stores from its best holders into `out`, verified, on a blocking
/// thread.
pub async fn read_object(
    ledger: &dyn Settlement,
    net: &NetHandle,
    deal: &Deal,
    out: Output,
    mut progress: impl FnMut(u64) + Send + 'static,
) -> Result<ReadReport> {
    let mut reader = ObjectReader::of_deal(ledger, net, deal).await?;
    tokio::task::spawn_blocking(move || reader.read(out, &mut progress)).await?
}
