//! The store conformance suite on [`MemStore`].

mod common;

use std::sync::Arc;

use gcsfs::store::{MemStore, ObjectStore};

async fn mem_store() -> Arc<dyn ObjectStore> {
    Arc::new(MemStore::new())
}

conformance_tests!(mem_store());
