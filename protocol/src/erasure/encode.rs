//! The streaming encoder: one pass over the file, memory bounded by a few stripes.

use crate::layout::Layout;
use crate::tree::{group_cvs, Cv, CvStack};
use reed_solomon_erasure::galois_8::ReedSolomon;
use std::io::{self, Read, Write};
use std::sync::mpsc;

/// Why encoding failed.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("reading the input: {0}")]
    Read(#[source] io::Error),
    #[error("writing slot {slot}: {source}")]
    Write {
        slot: usize,
        #[source]
        source: io::Error,
    },
    #[error(
        "input ended after {got} bytes, {want} were expected (did the file change while encoding?)"
    )]
    ShortInput { got: u64, want: u64 },
    #[error(
        "input is longer than the {want} bytes expected (did the file change while encoding?)"
    )]
    LongInput { want: u64 },
    #[error("expected {want} slot outputs, got {got}")]
    SlotCount { got: usize, want: usize },
    #[error("reed-solomon: {0}")]
    Codec(String),
}

/// Where one slot's bytes go.
pub struct SlotOutput {
    /// The slot's bytes, shard after shard.
    pub data: Box<dyn Write + Send>,
    /// The outboard group level: 32-byte CVs, one per 16 KiB, in order.
    pub groups: Box<dyn Write + Send>,
}

impl std::fmt::Debug for SlotOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlotOutput")
    }
}

/// What the encoder computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub layout: Layout,
    pub file_hash: blake3::Hash,
    pub slot_roots: Vec<blake3::Hash>,
}

/// Per-slot state while encoding.
struct SlotState {
    out: SlotOutput,
    stack: CvStack,
    cvs: Vec<Cv>,
    cv_bytes: Vec<u8>,
}

impl SlotState {
    fn take_shard(&mut self, slot: usize, offset: u64, shard: &[u8]) -> Result<(), EncodeError> {
        self.cvs.clear();
        group_cvs(offset, shard, &mut self.cvs);
        self.cv_bytes.clear();
        for cv in &self.cvs {
            self.stack.push(*cv);
            self.cv_bytes.extend_from_slice(cv);
        }
        let write = |source| EncodeError::Write { slot, source };
        self.out.data.write_all(shard).map_err(write)?;
        self.out.groups.write_all(&self.cv_bytes).map_err(write)
    }
}

/// Encodes `size` bytes from `input` into the slots of `layout`.
///
/// `threads` is the number of threads working (1 runs everything on the caller's thread). `progress`
/// is called with the number of input bytes consumed so far, after each stripe.
pub fn encode(
    input: impl Read + Send,
    layout: Layout,
    outputs: Vec<SlotOutput>,
    threads: usize,
    progress: &mut dyn FnMut(u64),
) -> Result<Encoded, EncodeError> {
    let n = layout.total_shards();
    if outputs.len() != n {
        return Err(EncodeError::SlotCount {
            got: outputs.len(),
            want: n,
        });
    }
    let rs = ReedSolomon::new(layout.data_shards(), layout.parity_shards())
        .map_err(|e| EncodeError::Codec(format!("{e:?}")))?;
    let mut slots: Vec<SlotState> = outputs
        .into_iter()
        .map(|out| SlotState {
            out,
            stack: CvStack::new(),
            cvs: Vec::new(),
            cv_bytes: Vec::new(),
        })
        .collect();
    let threads = threads.max(1);
    let c = layout.shard_size() as usize;
    let stripe_buf = n * c;

    let file_hash = if threads == 1 {
        let mut reader = StripeReader::new(input, layout);
        let mut buf = vec![0u8; stripe_buf];
        for stripe in 0..layout.stripes() {
            reader.fill(&mut buf[..layout.stripe_len() as usize])?;
            encode_stripe(&rs, &layout, stripe, &mut buf, &mut slots, 1)?;
            progress(reader.consumed());
        }
        reader.finish()?
    } else {
        // A reader thread fills stripe buffers (and hashes the file) while this thread and its helpers
        // encode, hash and write the previous stripe. Two buffers circulate: memory stays at 2 stripes.
        std::thread::scope(|scope| -> Result<blake3::Hash, EncodeError> {
            let (full_tx, full_rx) = mpsc::sync_channel::<Vec<u8>>(1);
            let (empty_tx, empty_rx) = mpsc::sync_channel::<Vec<u8>>(2);
            for _ in 0..2 {
                empty_tx
                    .send(vec![0u8; stripe_buf])
                    .expect("receiver is alive here");
            }
            let reader = scope.spawn(move || -> Result<(blake3::Hash, u64), EncodeError> {
                let mut reader = StripeReader::new(input, layout);
                for _ in 0..layout.stripes() {
                    let Ok(mut buf) = empty_rx.recv() else {
                        // The encoder stopped early; its error is the one to report.
                        return Ok((blake3::Hash::from_bytes([0; 32]), 0));
                    };
                    reader.fill(&mut buf[..layout.stripe_len() as usize])?;
                    if full_tx.send(buf).is_err() {
                        return Ok((blake3::Hash::from_bytes([0; 32]), 0));
                    }
                }
                let consumed = reader.consumed();
                Ok((reader.finish()?, consumed))
            });
            let mut work = || -> Result<(), EncodeError> {
                let mut done = 0u64;
                for stripe in 0..layout.stripes() {
                    let Ok(mut buf) = full_rx.recv() else {
                        return Ok(()); // the reader failed; join below reports why
                    };
                    encode_stripe(&rs, &layout, stripe, &mut buf, &mut slots, threads)?;
                    done = (done + layout.stripe_len()).min(layout.size());
                    progress(done);
                    let _ = empty_tx.send(buf);
                }
                Ok(())
            };
            let worked = work();
            // Unblock the reader wherever it waits, then collect its result.
            drop(full_rx);
            drop(empty_tx);
            let read = reader.join().expect("reader thread does not panic");
            let (hash, _) = read?;
            worked?;
            Ok(hash)
        })?
    };

    let slot_roots = slots
        .into_iter()
        .enumerate()
        .map(|(slot, mut s)| {
            let write = |source| EncodeError::Write { slot, source };
            s.out.data.flush().map_err(write)?;
            s.out.groups.flush().map_err(write)?;
            Ok(s.stack.finish().expect("every slot has at least 4 groups"))
        })
        .collect::<Result<_, EncodeError>>()?;
    Ok(Encoded {
        layout,
        file_hash,
        slot_roots,
    })
}

/// Parity for one stripe, then each slot's shard hashed and written; both spread over `threads`.
fn encode_stripe(
    rs: &ReedSolomon,
    layout: &Layout,
    stripe: u64,
    buf: &mut [u8],
    slots: &mut [SlotState],
    threads: usize,
) -> Result<(), EncodeError> {
    let c = layout.shard_size() as usize;
    let k = layout.data_shards();
    let (data, parity) = buf.split_at_mut(k * c);
    let data: Vec<&[u8]> = data.chunks(c).collect();
    let mut parity: Vec<&mut [u8]> = parity.chunks_mut(c).collect();
    if threads == 1 {
        rs.encode_sep(&data, &mut parity)
            .map_err(|e| EncodeError::Codec(format!("{e:?}")))?;
    } else {
        // Reed-Solomon works column by column: split every shard into the same `threads` byte ranges.
        let part = c.div_ceil(threads).next_multiple_of(64);
        type Column<'a> = (Vec<&'a [u8]>, Vec<&'a mut [u8]>);
        let mut columns: Vec<Column> = (0..c.div_ceil(part))
            .map(|_| (Vec::new(), Vec::new()))
            .collect();
        for d in &data {
            for (col, piece) in columns.iter_mut().zip(d.chunks(part)) {
                col.0.push(piece);
            }
        }
        for p in parity.iter_mut() {
            for (col, piece) in columns.iter_mut().zip(p.chunks_mut(part)) {
                col.1.push(piece);
            }
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = columns
                .into_iter()
                .map(|(d, mut p)| scope.spawn(move || rs.encode_sep(&d, &mut p)))
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().expect("encoder thread does not panic"))
        })
        .map_err(|e| EncodeError::Codec(format!("{e:?}")))?;
    }

    let offset = layout.shard_offset_in_slot(stripe);
    let shards: Vec<&[u8]> = buf.chunks(c).collect();
    if threads == 1 {
        for (slot, (state, shard)) in slots.iter_mut().zip(&shards).enumerate() {
            state.take_shard(slot, offset, shard)?;
        }
        return Ok(());
    }
    let per = slots.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = slots
            .chunks_mut(per)
            .zip(shards.chunks(per))
            .enumerate()
            .map(|(batch, (states, shards))| {
                scope.spawn(move || {
                    for (i, (state, shard)) in states.iter_mut().zip(shards).enumerate() {
                        state.take_shard(batch * per + i, offset, shard)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("slot thread does not panic"))
    })
}

/// Reads the input stripe by stripe, zero-padding the last one, hashing as it goes.
struct StripeReader<R> {
    input: R,
    layout: Layout,
    hasher: blake3::Hasher,
    consumed: u64,
}

impl<R: Read> StripeReader<R> {
    fn new(input: R, layout: Layout) -> Self {
        Self {
            input,
            layout,
            hasher: blake3::Hasher::new(),
            consumed: 0,
        }
    }

    fn consumed(&self) -> u64 {
        self.consumed
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EncodeError> {
        let want = (self.layout.size() - self.consumed).min(buf.len() as u64) as usize;
        let mut got = 0;
        while got < want {
            match self.input.read(&mut buf[got..want]) {
                Ok(0) => {
                    return Err(EncodeError::ShortInput {
                        got: self.consumed + got as u64,
                        want: self.layout.size(),
                    })
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(EncodeError::Read(e)),
            }
        }
        buf[want..].fill(0);
        self.hasher.update(&buf[..want]);
        self.consumed += want as u64;
        Ok(())
    }

    fn finish(mut self) -> Result<blake3::Hash, EncodeError> {
        let mut probe = [0u8; 1];
        loop {
            match self.input.read(&mut probe) {
                Ok(0) => return Ok(self.hasher.finalize()),
                Ok(_) => {
                    return Err(EncodeError::LongInput {
                        want: self.layout.size(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(EncodeError::Read(e)),
            }
        }
    }
}
