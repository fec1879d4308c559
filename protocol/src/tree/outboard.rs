//! The outboard: every node of a slot's tree from the group level up to the root's children.

use super::*;

/// A whole outboard in memory: levels `GROUP_LOG..height`, bottom up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outboard {
    shape: TreeShape,
    levels: Vec<Vec<Cv>>,
}

impl Outboard {
    /// Builds the upper levels from the group CVs of a slot.
    pub fn from_groups(shape: TreeShape, groups: Vec<Cv>) -> Result<Self, TreeError> {
        if groups.len() as u64 != shape.groups() {
            return Err(TreeError::BadOutboardLength {
                got: groups.len() as u64 * 32,
                want: shape.groups() * 32,
            });
        }
        let mut levels = vec![groups];
        while (levels.len() as u32 + GROUP_LOG) < shape.height() {
            let next = next_level(levels.last().expect("levels start non-empty"));
            levels.push(next);
        }
        Ok(Self { shape, levels })
    }

    /// Hashes a whole slot into its outboard.
    pub fn from_slot(slot: &[u8]) -> Result<Self, TreeError> {
        let shape = TreeShape::new(slot.len() as u64)?;
        let mut groups = Vec::with_capacity(shape.groups() as usize);
        group_cvs(0, slot, &mut groups);
        Self::from_groups(shape, groups)
    }

    /// Parses the serialized form (see [`Outboard::to_bytes`]).
    pub fn from_bytes(shape: TreeShape, bytes: &[u8]) -> Result<Self, TreeError> {
        if bytes.len() as u64 != shape.outboard_len() {
            return Err(TreeError::BadOutboardLength {
                got: bytes.len() as u64,
                want: shape.outboard_len(),
            });
        }
        let mut cvs = bytes.chunks_exact(32).map(|c| {
            let mut cv = [0u8; 32];
            cv.copy_from_slice(c);
            cv
        });
        let levels = (GROUP_LOG..shape.height())
            .map(|l| cvs.by_ref().take(shape.width(l) as usize).collect())
            .collect();
        Ok(Self { shape, levels })
    }

    /// Level after level, 32 bytes a node.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.levels.iter().flatten().flatten().copied().collect()
    }

    pub fn shape(&self) -> TreeShape {
        self.shape
    }

    /// The slot root these CVs lead to.
    pub fn root(&self) -> blake3::Hash {
        let top = self.levels.last().expect("outboard has at least one level");
        root_of_top(&[top[0], top[1]])
    }

    /// The CV of node `(level, index)`, `level >= GROUP_LOG`.
    pub fn node(&self, level: u32, index: u64) -> Result<Cv, TreeError> {
        level
            .checked_sub(GROUP_LOG)
            .and_then(|l| self.levels.get(l as usize))
            .and_then(|lvl| lvl.get(index as usize))
            .copied()
            .ok_or(TreeError::OutOfRange { level, index })
    }

    /// Sibling CVs from `(level, index)` to the root, `level >= GROUP_LOG`.
    pub fn siblings(&self, level: u32, index: u64) -> Result<Vec<Cv>, TreeError> {
        self.shape
            .sibling_nodes(level, index)?
            .into_iter()
            .map(|(l, i)| self.node(l, i))
            .collect()
    }
}
