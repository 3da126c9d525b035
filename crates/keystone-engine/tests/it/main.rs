//! Integration tests of `keystone-engine`: SQL behaviour as sqllogictest files.
//!
//! Each `tests/slt/*.slt` file runs against a fresh lake holding the fixtures
//! of `data/fixtures` (shop.ndjson, store.csv and the bad lines of bad.ndjson).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod slt;
