//! Integration tests of `keystone-identity`: resolution scored against the
//! ground truth of `keystone gen`.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod gen_truth;
