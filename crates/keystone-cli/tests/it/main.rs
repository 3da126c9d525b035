//! End-to-end tests of the `keystone` binary: one test binary, a module per area.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod demo;
mod forget;
mod ingest;
mod kill;
mod maintain;
mod resolve;
mod segment;
mod sql;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The fixtures folder (`data/fixtures`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/fixtures")
        .join(name)
}

/// `keystone --lake LAKE ARGS...`, with a clean environment for Keystone's variables.
pub fn keystone(lake: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keystone"))
        .arg("--lake")
        .arg(lake)
        .args(args)
        .env_remove("KEYSTONE_CONFIG")
        .current_dir(lake.parent().unwrap_or(lake))
        .output()
        .expect("run keystone")
}

/// Like [`keystone`], asserting success; returns stdout.
pub fn ok(lake: &Path, args: &[&str]) -> String {
    let out = keystone(lake, args);
    assert!(
        out.status.success(),
        "keystone {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// One SQL query as CSV rows (header dropped).
pub fn query(lake: &Path, sql: &str) -> Vec<String> {
    ok(lake, &["sql", sql, "--format", "csv"])
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// A fresh lake folder inside a temp dir (kept alive by the returned guard).
pub fn temp_lake() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    (dir, lake)
}
