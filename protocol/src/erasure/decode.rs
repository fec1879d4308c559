//! The range decoder and the slot rebuilder, over any [`ShardSource`].

use super::ShardSource;
use crate::layout::Layout;
use reed_solomon_erasure::galois_8::ReedSolomon;
use std::io::{self, Write};
use std::ops::Range;

/// Stripes the decoder hints ahead of the one it works on: enough to keep every holder's stream
/// busy while a stripe is decoded, within about 8 MiB of shards per slot.
fn lookahead(shard_size: u64) -> u64 {
    ((8 << 20) / shard_size.max(1)).clamp(2, 16)
}

/// Hints upcoming reads to the source: for each stripe ahead, the slots the caller expects to use
/// (the ones that served the latest stripe).
struct Ahead {
    next: u64,
    end: u64,
    window: u64,
    plan: Vec<usize>,
}

impl Ahead {
    fn new(stripes: Range<u64>, shard_size: u64, plan: Vec<usize>) -> Self {
        Self {
            next: stripes.start,
            end: stripes.end,
            window: lookahead(shard_size),
            plan,
        }
    }

    /// Hints every stripe up to `stripe + window` not hinted yet.
    fn advance(
        &mut self,
        source: &mut dyn ShardSource,
        stripe: u64,
        wanted: impl Fn(u64, usize) -> bool,
    ) {
        let until = stripe.saturating_add(self.window).min(self.end);
        while self.next < until {
            for &j in &self.plan {
                if wanted(self.next, j) {
                    source.prefetch(self.next, j);
                }
            }
            self.next += 1;
        }
    }

    /// The slots that served `stripe`: from now on hint those, including for the stripes already
    /// hinted with the old plan.
    fn replan(&mut self, source: &mut dyn ShardSource, stripe: u64, served: Vec<usize>) {
        if served == self.plan {
            return;
        }
        for t in stripe + 1..self.next {
            for &j in served.iter().filter(|j| !self.plan.contains(j)) {
                source.prefetch(t, j);
            }
        }
        self.plan = served;
    }
}

/// Why decoding failed.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("stripe {stripe}: only {available} of the {needed} shards needed could be read and verified")]
    NotEnoughShards {
        stripe: u64,
        available: usize,
        needed: usize,
    },
    #[error("stripe {stripe}: data shard {slot} rebuilt from parity does not match its slot root; the object's slots are not one consistent code")]
    Inconsistent { stripe: u64, slot: usize },
    #[error("reading shards: {0}")]
    Source(#[source] io::Error),
    #[error("writing output: {0}")]
    Write(#[source] io::Error),
    #[error("reed-solomon: {0}")]
    Codec(String),
}

/// Counts of what a decode did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    pub bytes_written: u64,
    pub stripes: u64,
    /// Stripes that needed Reed-Solomon reconstruction.
    pub reconstructed_stripes: u64,
    pub shards_read: u64,
}

/// Writes file bytes `range` (clipped to the file) to `out`, reading only the stripes it covers.
pub fn decode_range(
    layout: &Layout,
    source: &mut dyn ShardSource,
    range: Range<u64>,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<DecodeStats, DecodeError> {
    decode_range_with(layout, source, range, out, progress, &mut Vec::new())
}

/// [`decode_range`] with a stripe buffer the caller keeps between reads (a server decoding many
/// small ranges then allocates no stripe per read). Whatever `scratch` holds is overwritten
/// before it is read: every shard written out was read or rebuilt into it by this call.
pub fn decode_range_with(
    layout: &Layout,
    source: &mut dyn ShardSource,
    range: Range<u64>,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
    scratch: &mut Vec<u8>,
) -> Result<DecodeStats, DecodeError> {
    let rs = ReedSolomon::new(layout.data_shards(), layout.parity_shards())
        .map_err(|e| DecodeError::Codec(format!("{e:?}")))?;
    let (k, n) = (layout.data_shards(), layout.total_shards());
    let c = layout.shard_size() as usize;
    let range = range.start.min(layout.size())..range.end.min(layout.size());
    if scratch.len() != n * c {
        scratch.clear();
        scratch.resize(n * c, 0);
    }
    let buf = &mut scratch[..];
    let mut present = vec![false; n];
    let mut stats = DecodeStats::default();

    let covers = |stripe: u64, j: usize| {
        let r = layout.shard_file_range(stripe, j);
        r.start < range.end && range.start < r.end
    };
    let stripes = layout.stripes_for(range.clone());
    let mut ahead = Ahead::new(stripes.clone(), c as u64, (0..k).collect());
    for stripe in stripes {
        // Data shards the range needs, plus whatever stood in for missing ones last time.
        ahead.advance(source, stripe, |s, j| j >= k || covers(s, j));
        present.fill(false);
        let wanted: Vec<usize> = (0..k).filter(|&j| covers(stripe, j)).collect();
        let mut available = 0;
        for &j in &wanted {
            let ok = source
                .read_verified(stripe, j, &mut buf[j * c..(j + 1) * c])
                .map_err(DecodeError::Source)?;
            stats.shards_read += 1;
            present[j] = ok;
            available += ok as usize;
        }
        if available < wanted.len() {
            // Top up to k verified shards: other data shards first, then parity.
            stats.shards_read += top_up(
                source,
                stripe,
                (0..n).filter(|j| !wanted.contains(j)),
                k,
                c,
                buf,
                &mut present,
                &mut available,
            )?;
            let mut shards: Vec<(&mut [u8], bool)> =
                buf.chunks_mut(c).zip(present.iter().copied()).collect();
            rs.reconstruct_data(&mut shards)
                .map_err(|e| DecodeError::Codec(format!("{e:?}")))?;
            stats.reconstructed_stripes += 1;
            ahead.replan(source, stripe, (0..n).filter(|&j| present[j]).collect());
            // Every byte leaves verified: rebuilt shards are checked like read ones.
            for &j in wanted.iter().filter(|&&j| !present[j]) {
                if !source
                    .check_rebuilt(stripe, j, &buf[j * c..(j + 1) * c])
                    .map_err(DecodeError::Source)?
                {
                    return Err(DecodeError::Inconsistent { stripe, slot: j });
                }
            }
        }
        for &j in &wanted {
            let r = layout.shard_file_range(stripe, j);
            let from = range.start.max(r.start);
            let to = range.end.min(r.end);
            let lo = (from - r.start) as usize + j * c;
            let hi = (to - r.start) as usize + j * c;
            out.write_all(&buf[lo..hi]).map_err(DecodeError::Write)?;
            stats.bytes_written += to - from;
        }
        stats.stripes += 1;
        progress(stats.bytes_written);
    }
    Ok(stats)
}

/// Rebuilds every shard of slot `slot` (data or parity), stripe by stripe, from any `k` other
/// verified shards of each stripe: what a repairer does for a slot whose holder is gone. `out`
/// receives each rebuilt shard in stripe order.
pub fn rebuild_slot(
    layout: &Layout,
    source: &mut dyn ShardSource,
    slot: usize,
    out: &mut dyn FnMut(u64, &[u8]) -> io::Result<()>,
) -> Result<(), DecodeError> {
    let rs = ReedSolomon::new(layout.data_shards(), layout.parity_shards())
        .map_err(|e| DecodeError::Codec(format!("{e:?}")))?;
    let (k, n) = (layout.data_shards(), layout.total_shards());
    let c = layout.shard_size() as usize;
    let mut shards = vec![0u8; n * c];
    let mut present = vec![false; n];
    // Data shards first: with all of them present only the missing one needs computing.
    let others: Vec<usize> = (0..n).filter(|&j| j != slot).collect();
    let stripes = 0..layout.stripes();
    let mut ahead = Ahead::new(
        stripes.clone(),
        c as u64,
        others.iter().copied().take(k).collect(),
    );
    for stripe in stripes {
        ahead.advance(source, stripe, |_, _| true);
        present.fill(false);
        let mut available = 0;
        top_up(
            source,
            stripe,
            others.iter().copied(),
            k,
            c,
            &mut shards,
            &mut present,
            &mut available,
        )?;
        ahead.replan(source, stripe, (0..n).filter(|&j| present[j]).collect());
        let mut pieces: Vec<(&mut [u8], bool)> =
            shards.chunks_mut(c).zip(present.iter().copied()).collect();
        // A data slot needs only the data shards computed; a parity slot needs them all.
        if slot < k {
            rs.reconstruct_data(&mut pieces)
        } else {
            rs.reconstruct(&mut pieces)
        }
        .map_err(|e| DecodeError::Codec(format!("{e:?}")))?;
        out(stripe, &shards[slot * c..(slot + 1) * c]).map_err(DecodeError::Write)?;
    }
    Ok(())
}

/// Reads shards of `stripe` from `candidates`, in order, until `available` reaches `k`; fails if
/// the candidates run out first. Returns how many reads it made.
#[allow(clippy::too_many_arguments)]
fn top_up(
    source: &mut dyn ShardSource,
    stripe: u64,
    candidates: impl Iterator<Item = usize>,
    k: usize,
    c: usize,
    buf: &mut [u8],
    present: &mut [bool],
    available: &mut usize,
) -> Result<u64, DecodeError> {
    let mut reads = 0;
    for j in candidates {
        if *available == k {
            break;
        }
        let ok = source
            .read_verified(stripe, j, &mut buf[j * c..(j + 1) * c])
            .map_err(DecodeError::Source)?;
        reads += 1;
        present[j] = ok;
        *available += ok as usize;
    }
    if *available < k {
        return Err(DecodeError::NotEnoughShards {
            stripe,
            available: *available,
            needed: k,
        });
    }
    Ok(reads)
}
