//! Outboard files: the slot tree's CVs from the group level up, level after level
//! (see `atlas_protocol::tree`).

use atlas_protocol::tree::{next_level, Cv, CvStack, TreeShape, GROUP_LOG};
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Computes outboard levels `GROUP_LOG + 1 .. height` from the group level already in `file`,
/// one level at a time, with memory bounded by one read block.
pub fn write_upper_levels(file: &File, shape: &TreeShape) -> std::io::Result<()> {
    const BLOCK: u64 = 4096; // CVs per read: an even number, so pairs never straddle blocks
    for level in GROUP_LOG..shape.height() - 1 {
        let width = shape.width(level);
        let from = shape
            .outboard_offset(level, 0)
            .expect("level is inside the outboard");
        let to = shape
            .outboard_offset(level + 1, 0)
            .expect("next level is inside the outboard");
        let mut buf = Vec::new();
        let mut written = 0u64;
        let mut start = 0u64;
        while start < width {
            let count = BLOCK.min(width - start);
            buf.resize((count * 32) as usize, 0);
            file.read_exact_at(&mut buf, from + start * 32)?;
            let cvs: Vec<Cv> = buf
                .chunks_exact(32)
                .map(|c| c.try_into().expect("chunks_exact(32)"))
                .collect();
            let next: Vec<u8> = next_level(&cvs).into_iter().flatten().collect();
            file.write_all_at(&next, to + written)?;
            written += next.len() as u64;
            start += count;
        }
    }
    Ok(())
}

/// Reads the `width` CVs of `level` from an outboard file and returns them if they lead to `root`.
/// `None` means the outboard is short, unreadable or does not match.
pub fn read_verified_level(
    file: &File,
    shape: &TreeShape,
    level: u32,
    root: &blake3::Hash,
) -> Option<Vec<Cv>> {
    let width = shape.width(level);
    if width < 2 {
        return None;
    }
    let at = shape.outboard_offset(level, 0).ok()?;
    let mut buf = vec![0u8; (width * 32) as usize];
    file.read_exact_at(&mut buf, at).ok()?;
    let cvs: Vec<Cv> = buf
        .chunks_exact(32)
        .map(|c| c.try_into().expect("chunks_exact(32)"))
        .collect();
    let mut stack = CvStack::new();
    for cv in &cvs {
        stack.push(*cv);
    }
    (stack.finish()? == *root).then_some(cvs)
}
