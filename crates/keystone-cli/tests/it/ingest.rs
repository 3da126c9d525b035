use crate::{fixture, keystone, ok, query, temp_lake};

#[test]
fn ndjson_events_land_with_promoted_columns() {
    let (_dir, lake) = temp_lake();
    let out = ok(&lake, &["ingest", fixture("shop.ndjson").to_str().unwrap()]);
    assert!(
        out.contains("loaded 12 events, quarantined 0 rows"),
        "{out}"
    );
    assert_eq!(query(&lake, "SELECT count(*) FROM events"), vec!["12"]);
    assert_eq!(
        query(
            &lake,
            "SELECT email, phone, user_id FROM events WHERE message_id = 'm04'"
        ),
        vec!["jane.doe@example.com,+33612345678,u-1"]
    );
    assert_eq!(
        query(
            &lake,
            "SELECT order_id, revenue, currency, category FROM events WHERE event = 'Order Completed' ORDER BY order_id"
        ),
        vec![
            "o-1,89.9,EUR,shoes",
            "o-2,45.5,EUR,bags",
            "o-3,20.0,EUR,socks"
        ]
    );
    assert_eq!(
        query(
            &lake,
            "SELECT utm_source, utm_medium, utm_campaign, page_path, ip, locale FROM events WHERE message_id = 'm01'"
        ),
        vec!["news,email,autumn,/,203.0.113.7,fr-FR"]
    );
    assert_eq!(
        query(
            &lake,
            "SELECT device_id FROM events WHERE message_id = 'm06'"
        ),
        vec!["dev-2"]
    );
    // Every row is stamped and sourced from the file name.
    assert_eq!(
        query(
            &lake,
            "SELECT count(*) FROM events WHERE received_at IS NOT NULL AND source = 'shop'"
        ),
        vec!["12"]
    );
    // event_date is the UTC day of the timestamp, and the table is partitioned by it.
    assert_eq!(
        query(
            &lake,
            "SELECT event_date, count(*) FROM events GROUP BY event_date ORDER BY event_date"
        ),
        vec!["2026-10-30,5", "2026-10-31,3", "2026-11-01,4"]
    );
    assert!(lake.join("events/event_date=2026-10-31").is_dir());
}

#[test]
fn bad_lines_go_to_quarantine_and_the_rest_is_kept() {
    let (_dir, lake) = temp_lake();
    let out = ok(
        &lake,
        &[
            "ingest",
            fixture("bad.ndjson").to_str().unwrap(),
            "--source",
            "app",
        ],
    );
    assert!(out.contains("loaded 2 events, quarantined 6 rows"), "{out}");
    let rows = query(&lake, "SELECT line, reason FROM quarantine ORDER BY line");
    let expect = [
        (2, "invalid JSON"),
        (3, "\"click\""),
        (4, "`userId` is missing"),
        (5, "`timestamp` is not ISO-8601"),
        (6, "`event` must be a string"),
        (8, "invalid UTF-8"),
    ];
    assert_eq!(rows.len(), expect.len(), "{rows:?}");
    for (row, (line, needle)) in rows.iter().zip(expect) {
        assert!(row.starts_with(&format!("{line},")), "{row}");
        assert!(row.contains(needle), "line {line}: {row}");
    }
    assert_eq!(
        query(
            &lake,
            "SELECT DISTINCT source, file LIKE '%bad.ndjson' FROM quarantine"
        ),
        vec!["app,true"]
    );
    let raw = ok(
        &lake,
        &[
            "sql",
            "SELECT raw FROM quarantine WHERE line = 2",
            "--format",
            "json",
        ],
    );
    let raw: serde_json::Value = serde_json::from_str(raw.trim()).unwrap();
    assert_eq!(raw["raw"], r#"{"type":"page","messageId":"b02","#);
}

#[test]
fn loading_the_same_file_again_is_skipped_unless_forced() {
    let (_dir, lake) = temp_lake();
    let file = fixture("shop.ndjson");
    ok(&lake, &["ingest", file.to_str().unwrap()]);
    let again = ok(&lake, &["ingest", file.to_str().unwrap()]);
    assert!(
        again.contains("skipped, this content was already loaded"),
        "{again}"
    );
    assert_eq!(query(&lake, "SELECT count(*) FROM events"), vec!["12"]);
    let forced = ok(&lake, &["ingest", file.to_str().unwrap(), "--force"]);
    assert!(forced.contains("loaded 12 events"), "{forced}");
    assert_eq!(query(&lake, "SELECT count(*) FROM events"), vec!["24"]);
    // A copy under another name has the same content: still a duplicate.
    let copy = lake.parent().unwrap().join("copy.ndjson");
    std::fs::copy(&file, &copy).unwrap();
    let out = ok(&lake, &["ingest", copy.to_str().unwrap()]);
    assert!(out.contains("skipped"), "{out}");
}

#[test]
fn one_ingest_of_several_files_is_one_commit() {
    let (_dir, lake) = temp_lake();
    let out = ok(
        &lake,
        &[
            "ingest",
            fixture("shop.ndjson").to_str().unwrap(),
            fixture("store.csv").to_str().unwrap(),
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["events"], 14, "{v}");
    assert_eq!(v["quarantined"], 2, "{v}");
    // Version 0 creates the table, version 1 holds both files.
    assert_eq!(v["events_version"], 1, "{v}");
    assert_eq!(v["files"].as_array().unwrap().len(), 2);
}

#[test]
fn csv_rows_become_order_events_keyed_by_email() {
    let (_dir, lake) = temp_lake();
    let out = ok(&lake, &["ingest", fixture("store.csv").to_str().unwrap()]);
    assert!(out.contains("loaded 2 events, quarantined 2 rows"), "{out}");
    assert_eq!(
        query(
            &lake,
            "SELECT message_id, type, event, email, revenue, order_id, source, json_get_str(properties, 'store_id') FROM events ORDER BY message_id"
        ),
        vec![
            "R-1,track,Order Completed,jane.doe@example.com,35.0,R-1,store,S01",
            "R-2,track,Order Completed,carol@example.net,12.5,R-2,store,S02",
        ]
    );
    let reasons = query(&lake, "SELECT line, reason FROM quarantine ORDER BY line");
    assert!(
        reasons[0].starts_with("4,") && reasons[0].contains("column `amount`"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].starts_with("5,")
            && reasons[1].contains("userId or anonymousId, email or phone"),
        "{reasons:?}"
    );
}

#[test]
fn parquet_export_round_trips() {
    let (dir, lake) = temp_lake();
    ok(&lake, &["ingest", fixture("shop.ndjson").to_str().unwrap()]);
    // Export the events as Parquet with SQL, then load them into a second lake.
    let export = dir.path().join("export.parquet");
    ok(
        &lake,
        &[
            "sql",
            &format!(
                "COPY (SELECT * FROM events) TO '{}' STORED AS PARQUET",
                export.display()
            ),
        ],
    );
    let lake2 = dir.path().join("lake2");
    let out = ok(&lake2, &["ingest", export.to_str().unwrap()]);
    assert!(out.contains("loaded 12 events, quarantined 0"), "{out}");
    let q = "SELECT message_id, type, user_id, timestamp, revenue, email, event_date FROM events ORDER BY message_id";
    assert_eq!(query(&lake, q), query(&lake2, q));
}

#[test]
fn unreadable_or_unknown_input_fails_with_one_line_and_loads_nothing() {
    let (dir, lake) = temp_lake();
    let missing = dir.path().join("nope.ndjson");
    let out = keystone(
        &lake,
        &[
            "ingest",
            fixture("shop.ndjson").to_str().unwrap(),
            missing.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("nope.ndjson"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // The good file in the same command was not loaded either.
    let q = keystone(
        &lake,
        &["sql", "SELECT count(*) FROM events", "--format", "csv"],
    );
    assert!(!q.status.success(), "events should not exist yet");

    let weird = dir.path().join("data.xml");
    std::fs::write(&weird, "<x/>").unwrap();
    let out = keystone(&lake, &["ingest", weird.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--format"),
        "{out:?}"
    );

    let csv = dir.path().join("nomap.csv");
    std::fs::write(&csv, "a,b\n1,2\n").unwrap();
    let out = keystone(&lake, &["ingest", csv.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nomap.mapping.toml"),
        "{out:?}"
    );
}

#[test]
fn a_file_with_only_bad_rows_exits_non_zero_but_keeps_the_quarantine() {
    let (dir, lake) = temp_lake();
    let f = dir.path().join("junk.ndjson");
    std::fs::write(&f, "nope\n{\"type\":\"page\"}\n").unwrap();
    let out = keystone(&lake, &["ingest", f.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("nothing could be loaded: 2 rows quarantined"),
        "{out:?}"
    );
    assert_eq!(query(&lake, "SELECT count(*) FROM quarantine"), vec!["2"]);
}

#[test]
fn a_missing_mapping_file_or_an_unknown_grant_is_named_as_such() {
    let (dir, lake) = temp_lake();
    let missing = dir.path().join("nonexist.toml");
    let out = keystone(
        &lake,
        &[
            "ingest",
            fixture("store.csv").to_str().unwrap(),
            "--mapping",
            missing.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("nonexist.toml (--mapping) does not exist") && !e.contains("pass --mapping"),
        "{e}"
    );
    let out = keystone(
        &lake,
        &["keys", "create", "--role", "analyst", "--grant", "bogus"],
    );
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("unknown grant \"bogus\"") && !e.contains("keys.json"),
        "{e}"
    );
    // Revoking twice says so the second time.
    ok(
        &lake,
        &["keys", "create", "--role", "analyst", "--name", "temp"],
    );
    let listed = ok(&lake, &["keys", "list"]);
    let id = listed
        .lines()
        .nth(1)
        .and_then(|l| l.split('\t').next())
        .expect("a key");
    for expected in [
        format!("revoked key {id}"),
        format!("key {id} was already revoked"),
    ] {
        let out = keystone(&lake, &["keys", "revoke", id]);
        assert!(out.status.success());
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains(&expected), "{e}");
    }
}
