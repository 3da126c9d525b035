//! `keystone forget`: the person is gone from every byte of the lake, stays
//! out, and everyone else is untouched.

use std::path::{Path, PathBuf};

use crate::{fixture, keystone, ok, query, temp_lake};

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Every value of every column of a Parquet file, as text (the bytes of a
/// compressed file need not hold a value contiguously).
fn parquet_values(path: &Path) -> Vec<String> {
    use datafusion::arrow::array::Array;
    use datafusion::arrow::util::display::ArrayFormatter;
    let file = std::fs::File::open(path).unwrap();
    let reader =
        datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.unwrap();
        for column in batch.columns() {
            let f = ArrayFormatter::try_new(column.as_ref(), &Default::default()).unwrap();
            for i in 0..column.len() {
                out.push(f.value(i).to_string());
            }
        }
    }
    out
}

/// Where under `root` (files as bytes, Parquet files value by value) any of
/// `needles` appears, case-insensitively.
fn traces(root: &Path, needles: &[&str]) -> Vec<String> {
    let needles: Vec<String> = needles.iter().map(|n| n.to_lowercase()).collect();
    let mut found = Vec::new();
    for path in files_under(root) {
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        let mut hay = vec![text];
        if path.extension().is_some_and(|e| e == "parquet") {
            hay.extend(parquet_values(&path).into_iter().map(|v| v.to_lowercase()));
        }
        for n in &needles {
            if hay.iter().any(|h| h.contains(n.as_str())) {
                found.push(format!("{n} in {}", path.display()));
            }
        }
    }
    found
}

#[test]
fn forget_erases_a_person_from_every_file_and_keeps_them_out() {
    let (dir, lake) = temp_lake();
    // Jane: cookie anon-1, login u-1, e-mail and phone, a store receipt,
    // and a quarantined event holding her e-mail.
    let bad = dir.path().join("bad.ndjson");
    std::fs::write(
        &bad,
        r#"{"type":"track","messageId":"q1","userId":"u-1","event":["no"],"traits":{"email":"Jane.Doe@Example.com"}}
{"type":"track","messageId":"q2","userId":"u-2","event":["no"]}
"#,
    )
    .unwrap();
    ok(
        &lake,
        &[
            "ingest",
            fixture("shop.ndjson").to_str().unwrap(),
            fixture("store.csv").to_str().unwrap(),
            bad.to_str().unwrap(),
        ],
    );
    ok(&lake, &["resolve"]);
    let jane = query(
        &lake,
        "SELECT profile_id FROM identities WHERE identifier_type = 'email' AND identifier = 'jane.doe@example.com'",
    )[0]
    .clone();
    ok(
        &lake,
        &[
            "segment",
            "create",
            "buyers",
            "--sql",
            "SELECT profile_id FROM profiles WHERE order_count > 0",
        ],
    );
    ok(&lake, &["segment", "materialize", "--all"]);
    let export = dir.path().join("exports/buyers.csv");
    ok(
        &lake,
        &[
            "segment",
            "export",
            "buyers",
            "--to",
            export.to_str().unwrap(),
            "--format",
            "csv",
        ],
    );
    assert!(
        std::fs::read_to_string(&export)
            .unwrap()
            .contains("jane.doe@example.com")
    );

    let count = |sql: &str| query(&lake, sql)[0].parse::<u64>().unwrap();
    let her_events = count(&format!(
        "SELECT count(*) FROM events_resolved WHERE profile_id = '{jane}'"
    ));
    let events = count("SELECT count(*) FROM events");
    let others = |table: &str| {
        count(&format!(
            "SELECT count(*) FROM {table} WHERE profile_id <> '{jane}'"
        ))
    };
    let (profiles, identities) = (others("profiles"), others("identities"));
    let quarantine = count("SELECT count(*) FROM quarantine");
    assert!(her_events >= 6, "{her_events}");
    let needles = [
        "jane.doe@example.com",
        "+33 6 12 34 56 78",
        "+33612345678",
        "\"u-1\"",
        "\"anon-1\"",
        jane.as_str(),
    ];
    assert!(
        !traces(&lake, &needles).is_empty(),
        "the lake holds her before"
    );

    // Right of access first: everything about her, found from her e-mail.
    let doc: serde_json::Value = serde_json::from_str(&ok(
        &lake,
        &["export-subject", "email:JANE.DOE@example.com"],
    ))
    .unwrap();
    assert_eq!(doc["profiles"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["profiles"][0]["profile_id"], jane.as_str());
    assert_eq!(doc["events"].as_array().unwrap().len() as u64, her_events);
    let ids: Vec<String> = doc["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["identifier_type"].as_str().unwrap(),
                i["identifier"].as_str().unwrap()
            )
        })
        .collect();
    for id in [
        "user_id:u-1",
        "anonymous_id:anon-1",
        "email:jane.doe@example.com",
        "phone:+33612345678",
    ] {
        assert!(ids.iter().any(|i| i == id), "{id} not in {ids:?}");
    }
    assert!(
        doc["segment_membership"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["segment"] == "buyers")
    );

    let out = ok(&lake, &["forget", "email: Jane.Doe@Example.com ", "--json"]);
    let record: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(record["profiles"], 1, "{out}");
    assert_eq!(record["removed"]["events"], her_events, "{out}");
    assert!(
        !out.contains("jane"),
        "the audit holds no personal data: {out}"
    );

    let left = traces(&lake, &needles);
    assert!(left.is_empty(), "traces left: {left:#?}");
    // Decoded values must also not equal her plain ids anywhere.
    for path in files_under(&lake)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
    {
        let values = parquet_values(path);
        assert!(
            !values.iter().any(|v| v == "u-1" || v == "anon-1"),
            "{}",
            path.display()
        );
    }
    let export_text = std::fs::read_to_string(&export).unwrap();
    assert!(
        !export_text.contains(&jane) && !export_text.to_lowercase().contains("jane"),
        "{export_text}"
    );

    // Everyone else is untouched.
    assert_eq!(count("SELECT count(*) FROM events"), events - her_events);
    assert_eq!(others("profiles"), profiles);
    assert_eq!(others("identities"), identities);
    assert_eq!(count("SELECT count(*) FROM quarantine"), quarantine - 1);
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM profiles WHERE profile_id = '{jane}'"
        )),
        0
    );

    // She comes back with a new event: dropped and counted; others land.
    let again = dir.path().join("again.ndjson");
    std::fs::write(
        &again,
        r#"{"type":"identify","messageId":"n1","userId":"u-77","timestamp":"2026-11-02T10:00:00Z","traits":{"email":"JANE.DOE@example.com"}}
{"type":"page","messageId":"n2","anonymousId":"anon-1","timestamp":"2026-11-02T10:01:00Z"}
{"type":"page","messageId":"n3","anonymousId":"anon-99","timestamp":"2026-11-02T10:02:00Z"}
"#,
    )
    .unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&ok(&lake, &["ingest", again.to_str().unwrap(), "--json"])).unwrap();
    assert_eq!(report["suppressed"], 2, "{report}");
    assert_eq!(report["events"], 1, "{report}");
    assert_eq!(
        count("SELECT count(*) FROM events"),
        events - her_events + 1
    );
    ok(&lake, &["resolve"]);
    assert!(traces(&lake, &["jane.doe@example.com", "\"anon-1\""]).is_empty());
    let doc: serde_json::Value = serde_json::from_str(&ok(
        &lake,
        &["export-subject", "email:jane.doe@example.com"],
    ))
    .unwrap();
    assert_eq!(doc["events"].as_array().unwrap().len(), 0, "{doc}");
    assert_eq!(doc["profiles"].as_array().unwrap().len(), 0, "{doc}");

    // Bad requests name what is wrong.
    let bad = keystone(&lake, &["forget", "jane@example.org"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("TYPE:VALUE"));
}

/// Loads keep landing while `forget` and `maintain` rewrite the same day
/// partitions: every acknowledged load is in the lake, each event once.
#[test]
fn forget_and_maintain_while_ingesting_lose_no_event() {
    let (dir, lake) = temp_lake();
    ok(
        &lake,
        &[
            "ingest",
            fixture("shop.ndjson").to_str().unwrap(),
            fixture("store.csv").to_str().unwrap(),
        ],
    );
    ok(&lake, &["resolve"]);
    let files: Vec<PathBuf> = (0..8)
        .map(|f| {
            let path = dir.path().join(format!("stream{f}.ndjson"));
            let lines: Vec<String> = (0..50)
                .map(|i| {
                    format!(
                        r#"{{"type":"page","messageId":"c{f}-{i}","anonymousId":"visitor-{f}-{i}","timestamp":"2026-10-{:02}T12:00:00Z"}}"#,
                        30 + i % 2
                    )
                })
                .collect();
            std::fs::write(&path, lines.join("\n") + "\n").unwrap();
            path
        })
        .collect();
    let loading_lake = lake.clone();
    let loader = std::thread::spawn(move || {
        files
            .iter()
            .map(|f| keystone(&loading_lake, &["ingest", f.to_str().unwrap()]))
            .collect::<Vec<_>>()
    });
    let forget = keystone(&lake, &["forget", "email:jane.doe@example.com"]);
    let maintain = keystone(&lake, &["maintain", "--today", "2026-11-05"]);
    let loads = loader.join().unwrap();
    for (what, out) in [("forget", &forget), ("maintain", &maintain)]
        .into_iter()
        .chain(loads.iter().map(|l| ("ingest", l)))
    {
        assert!(
            out.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        query(
            &lake,
            "SELECT count(*), count(DISTINCT message_id) FROM events WHERE message_id LIKE 'c%-%'"
        ),
        vec!["400,400"]
    );
    assert_eq!(
        query(
            &lake,
            "SELECT count(*) FROM events WHERE email = 'jane.doe@example.com'"
        ),
        vec!["0"]
    );
}

/// An export file that cannot be rewritten does not stop the erasure: the
/// person is erased, suppressed and audited, and the command fails naming
/// the file.
#[test]
fn an_unrewritable_export_is_named_and_the_erasure_still_completes() {
    let (dir, lake) = temp_lake();
    ok(&lake, &["ingest", fixture("shop.ndjson").to_str().unwrap()]);
    ok(&lake, &["resolve"]);
    ok(
        &lake,
        &[
            "segment",
            "create",
            "known",
            "--sql",
            "SELECT profile_id FROM profiles WHERE email IS NOT NULL",
        ],
    );
    let export = dir.path().join("known.csv");
    ok(
        &lake,
        &[
            "segment",
            "export",
            "known",
            "--to",
            export.to_str().unwrap(),
            "--format",
            "csv",
        ],
    );
    // The file becomes a folder: reading it fails.
    std::fs::remove_file(&export).unwrap();
    std::fs::create_dir(&export).unwrap();

    let out = keystone(&lake, &["forget", "email:jane.doe@example.com"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 export file(s) could not be rewritten") && stderr.contains("known.csv"),
        "{stderr}"
    );
    assert_eq!(
        query(
            &lake,
            "SELECT count(*) FROM identities WHERE identifier = 'jane.doe@example.com'"
        ),
        ["0"]
    );
    let audit = std::fs::read_to_string(lake.join("_keystone/erasures.json")).unwrap();
    assert!(
        audit.contains("exports_failed") && audit.contains("known.csv"),
        "{audit}"
    );
    assert!(lake.join("_keystone/suppressions.json").is_file());
}

#[test]
fn an_over_long_identifier_is_erased_from_the_audit_and_an_unknown_type_is_refused() {
    let (dir, lake) = temp_lake();
    // A user id over the 1 KiB limit: cut by `resolve`, audited shortened.
    let long = format!("u-{}", "x".repeat(2000));
    let file = dir.path().join("long.ndjson");
    std::fs::write(
        &file,
        format!(
            "{}\n{}\n",
            serde_json::json!({"type": "identify", "messageId": "l1", "userId": long,
                "timestamp": "2026-10-01T10:00:00Z", "traits": {"email": "long@example.org"}}),
            serde_json::json!({"type": "identify", "messageId": "l2", "userId": "u-short",
                "timestamp": "2026-10-01T10:00:00Z", "traits": {"email": "short@example.org"}}),
        ),
    )
    .unwrap();
    ok(&lake, &["ingest", file.to_str().unwrap()]);
    ok(&lake, &["resolve"]);
    assert_eq!(
        query(
            &lake,
            "SELECT count(*) FROM identity_audit WHERE identifier_type = 'user_id'"
        ),
        ["1"]
    );

    // A mistyped type erases nothing and says so.
    let out = keystone(&lake, &["forget", "emial:short@example.org"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("unknown identifier type \"emial\"") && e.contains("email"),
        "{e}"
    );
    assert_eq!(query(&lake, "SELECT count(*) FROM events"), ["2"]);

    ok(&lake, &["forget", &format!("user_id:{long}")]);
    assert_eq!(query(&lake, "SELECT count(*) FROM identity_audit"), ["0"]);
    let prefix = &long[..600];
    assert_eq!(traces(&lake, &[prefix]), Vec::<String>::new());
    assert_eq!(
        query(&lake, "SELECT user_id FROM events"),
        ["u-short"],
        "the other person stays"
    );
}
