//! Inode numbers: a module of their own, so that attributes (`attr`) and the inode table
//! (`inode`) both use them without depending on each other.

/// A FUSE inode number. `InodeNo::ROOT` (1) is the mount's root directory.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct InodeNo(pub u64);

impl InodeNo {
    pub const ROOT: InodeNo = InodeNo(1);
}

impl std::fmt::Display for InodeNo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
