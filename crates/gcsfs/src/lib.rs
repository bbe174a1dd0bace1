pub mod fs;
pub mod fuse;
pub mod mount;
pub mod store;
