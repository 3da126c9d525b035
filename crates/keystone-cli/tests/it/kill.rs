//! An ingest killed at any moment leaves the table as it was, or fully loaded.

use std::process::Command;
use std::time::Duration;

use crate::{ok, query, temp_lake};

#[test]
fn killed_ingest_is_all_or_nothing() {
    let (dir, lake) = temp_lake();
    let data = dir.path().join("data");
    ok(
        &lake,
        &[
            "gen",
            "--profiles",
            "3000",
            "--end",
            "2026-11-01",
            "--out",
            data.to_str().unwrap(),
        ],
    );
    let file = data.join("events.ndjson");
    let lines = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .count()
        .to_string();
    // Kill after various delays: the count is always 0 (table absent) or every line.
    for delay_ms in [300u64, 900, 1500] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keystone"))
            .args([
                "--lake",
                lake.to_str().unwrap(),
                "--quiet",
                "ingest",
                file.to_str().unwrap(),
                "--force",
            ])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let out = crate::keystone(
            &lake,
            &["sql", "SELECT count(*) FROM events", "--format", "csv"],
        );
        if out.status.success() {
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            let n: u64 = stdout.lines().nth(1).unwrap().parse().unwrap();
            let full: u64 = lines.parse().unwrap();
            assert!(
                n.is_multiple_of(full),
                "after kill at {delay_ms} ms: {n} rows is not a multiple of {full}"
            );
        }
    }
    // A clean run afterwards loads everything exactly once more.
    let count = || -> u64 {
        let out = crate::keystone(
            &lake,
            &["sql", "SELECT count(*) FROM events", "--format", "csv"],
        );
        if !out.status.success() {
            return 0;
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = count();
    ok(&lake, &["ingest", file.to_str().unwrap(), "--force"]);
    let full: u64 = lines.parse().unwrap();
    assert_eq!(count(), before + full);
    assert_eq!(
        query(&lake, "SELECT count(DISTINCT message_id) FROM events"),
        vec![full.to_string()]
    );
}
