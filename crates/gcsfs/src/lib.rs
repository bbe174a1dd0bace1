//! gcsfs: a FUSE filesystem for Google Cloud Storage buckets, with a write-back cache.
//!
//! Layers, bottom up: [`store`] (the only door to Cloud Storage), [`fs`] (POSIX operations, no
//! FUSE types), [`fuse`] (the fuser adapter), [`mount`] and [`cli`] (the binary's plumbing).

pub mod cli;
pub mod daemon;
pub mod fs;
pub mod fuse;
pub mod logging;
pub mod metrics;
pub mod mount;
pub mod run;
pub mod store;
