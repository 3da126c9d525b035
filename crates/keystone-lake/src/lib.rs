//! # keystone-lake
//!
//! The lake: one root URL (a local folder by default, `s3://bucket/prefix` in
//! production) under which every Keystone table is a Delta table, so appends
//! are atomic, old versions stay readable, and any Delta reader (Spark,
//! DuckDB, Polars, deltalake-python) can open them.
//!
//! ```text
//!  <root>/events/            Delta, partitioned by event_date
//!  <root>/quarantine/        Delta, partitioned by event_date
//!  <root>/identities/, profile_merges/, identity_audit/, profiles/   written by resolve
//!  <root>/_keystone/          Keystone's own state (resolution rules in force, API keys, …)
//! ```
//!
//! * [`Lake`] — resolves the root, its storage options, and each table's URL;
//! * [`TableSpec`] — name, schema and partitioning of a table;
//! * [`Append`] — a streaming append that becomes exactly one Delta commit,
//!   optionally tagged with an application transaction so a retried or
//!   repeated load is recognised;
//! * [`KeyRing`] — the API keys (stored hashed) and their roles.

mod append;
mod error;
mod keys;
mod lake;
mod maintain;
mod privacy;
mod rewrite;
mod segments;
mod tables;

pub use append::{Append, AppendMetrics, NO_EXTERNAL_IDS_TAG};
pub use error::{Error, Result};
pub use keys::{GRANTS, KEY_PREFIX, KeyRecord, KeyRing, Role};
pub use lake::{Lake, refresh_table, storage_options_from_env};
pub use maintain::TableUpkeep;
pub use privacy::{Suppressions, digest as suppression_digest};
pub use segments::{SegmentDef, check_segment_name};
pub use tables::{
    EVENTS, IDENTITIES, IDENTITY_AUDIT, PROFILE_MERGES, PROFILES, QUARANTINE, SEGMENT_CHANGES,
    SEGMENT_MEMBERSHIP, TABLES, TableSpec,
};

/// Re-exported so that callers name Delta types through one path.
pub use deltalake;
