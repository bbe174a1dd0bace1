//! The store conformance suite on `GcsStore` against fake-gcs-server.
//!
//! The emulator lacks some of GCS's semantics; the cases that need them are skipped here, each
//! naming its gap, and run on `MemStore` (`conformance_mem.rs`) with the same assertions.

mod common;

use common::emulator::maybe_gcs_store;

conformance_tests!(
    maybe_gcs_store(),
    gaps = [
        Gap::MetagenerationMatchOnUpload,
        Gap::DeletePrecondition,
        Gap::CopyPrecondition,
        Gap::PatchPrecondition,
        Gap::MetagenerationOnPatch,
        Gap::PrefixPagination,
        Gap::PatchNullRemoves,
        Gap::StatusQueryFinalizes,
        Gap::UploadBlockSize,
        Gap::UploadOffsetIgnored,
        Gap::UploadChecksumForgotten,
        Gap::FinalizedSessionForgotten,
        Gap::CancelKeepsSession,
    ]
);
