use crate::{ok, query, temp_lake};

#[test]
fn demo_fills_the_lake_and_prints_a_summary() {
    let (_dir, lake) = temp_lake();
    let out = ok(&lake, &["demo", "--profiles", "200"]);
    for needle in [
        "1/4 generating",
        "2/4 ingesting",
        "3/4 resolving",
        "first run",
        "4/4 summary",
        "Top profiles by revenue",
        "Events per type",
        "Events per source",
        "Explore next",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    let sources = query(
        &lake,
        "SELECT source FROM events GROUP BY source ORDER BY source",
    );
    assert_eq!(sources, vec!["events", "store_purchases"]);
    assert_eq!(
        query(
            &lake,
            "SELECT count(*) - count(profile_id) FROM events_resolved"
        ),
        vec!["0"]
    );
    // The suggested profile is one the sample holds, on this lake.
    let suggested = out
        .lines()
        .find_map(|l| l.split_once(" profile show "))
        .expect("a profile show suggestion");
    assert!(suggested.0.contains("--lake"), "{}", suggested.0);
    let id = suggested.1.split_whitespace().next().unwrap();
    let shown = ok(&lake, &["profile", "show", id, "--explain"]);
    assert!(shown.contains(id.trim_start_matches("user_id:")), "{shown}");
    // --quiet: the summary only.
    let quiet = ok(&lake, &["--quiet", "demo", "--profiles", "200"]);
    assert!(
        !quiet.contains("1/4")
            && !quiet.contains("Explore next")
            && quiet.contains("Events per type"),
        "{quiet}"
    );
    // A second run on the same day finds the same content and loads nothing new.
    let before = query(&lake, "SELECT count(*) FROM events");
    let again = ok(&lake, &["demo", "--profiles", "200"]);
    assert!(again.contains("skipped"), "{again}");
    assert!(again.contains("nothing new"), "{again}");
    assert_eq!(query(&lake, "SELECT count(*) FROM events"), before);
}

#[test]
fn gen_is_deterministic_for_a_seed() {
    let (dir, lake) = temp_lake();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    for out in [&a, &b] {
        ok(
            &lake,
            &[
                "gen",
                "--profiles",
                "100",
                "--seed",
                "3",
                "--end",
                "2026-11-01",
                "--out",
                out.to_str().unwrap(),
            ],
        );
    }
    for f in ["events.ndjson", "store_purchases.csv", "truth.csv"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let (_dir, lake) = temp_lake();
    std::fs::create_dir(&lake).expect("an empty lake");
    ok(&lake, &["tables"]);
    for _ in 0..3 {
        // The reading end is closed before keystone writes (it opens the
        // lake first): each write then fails with EPIPE.
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keystone"))
            .arg("--lake")
            .arg(&lake)
            .arg("tables")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn keystone");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("panicked"),
            "{:?}: {stderr}",
            out.status
        );
    }
}
