//! # keystone-engine
//!
//! The SQL engine: a DataFusion session whose catalog `keystone` exposes the
//! lake's Delta tables, always at their latest commit.
//!
//! ```text
//!  SessionContext (default catalog `keystone`, schema `public`)
//!    └─ keystone.public ── LakeSchema ── table("events") ─▶ latest Delta snapshot
//!                                                          (checked at each query)
//!                                          └─ LakeTable: Parquet scan of that
//!                                             version's files (built once per version)
//!  + JSON functions (json_get_str, json_get_float, …, datafusion-functions-json)
//!  + information_schema (SHOW TABLES, SHOW COLUMNS)
//! ```

mod bloom;
mod bounded;
mod catalog;
pub mod consent;
mod engine;
mod error;
pub mod export;
pub mod forget;
mod join_order;
mod lag;
pub mod maintain;
pub mod masking;
pub mod materialize;
pub mod output;
pub mod profiles;
pub mod resolve;
mod scan;
pub mod segments;
pub mod udf;

pub use catalog::{EVENTS_RESOLVED, LakeSchema};
pub use engine::{CATALOG, Engine, PUBLIC, SEGMENTS};
pub use error::{Error, Result};

/// Re-exported for callers that build on the session.
pub use datafusion;

/// Ingest `file` of `data/fixtures` into `lake` (one run, one commit), for tests.
#[cfg(test)]
pub(crate) async fn ingest_fixture(lake: &keystone_lake::Lake, file: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/fixtures")
        .join(file);
    keystone_ingest::ingest_files(
        lake,
        &[path],
        &keystone_ingest::IngestOptions::default(),
        &mut |_, _| {},
    )
    .await
    .expect("ingest");
}

/// A deterministic pseudo-random sequence for tests (a linear congruential
/// generator from `seed`): each call gives a number below its argument.
#[cfg(test)]
pub(crate) fn test_sequence(mut seed: u64) -> impl FnMut(u64) -> u64 {
    move |m| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % m
    }
}
