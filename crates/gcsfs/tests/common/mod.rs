//! Test helpers shared by the integration tests of `gcsfs`.
//!
//! Each test binary includes this module with `mod common;` and uses what it needs, so items
//! unused by one binary are expected.
#![allow(dead_code)]

pub mod conformance;
pub mod emulator;
pub mod mount;
pub mod required;
