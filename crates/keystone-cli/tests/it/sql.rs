use crate::{fixture, keystone, ok, query, temp_lake};

fn shop_lake() -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, lake) = temp_lake();
    ok(&lake, &["ingest", fixture("shop.ndjson").to_str().unwrap()]);
    (dir, lake)
}

#[test]
fn csv_output_has_a_header_line() {
    let (_d, lake) = shop_lake();
    let out = ok(
        &lake,
        &[
            "sql",
            "SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY type",
            "--format",
            "csv",
        ],
    );
    assert_eq!(
        out,
        "type,n\nalias,1\ngroup,1\nidentify,1\npage,2\nscreen,1\ntrack,6\n"
    );
}

#[test]
fn json_output_is_one_object_per_row() {
    let (_d, lake) = shop_lake();
    let out = ok(
        &lake,
        &[
            "sql",
            "SELECT message_id, revenue FROM events WHERE revenue IS NOT NULL ORDER BY message_id",
            "--format",
            "json",
        ],
    );
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["message_id"], "m05");
    assert_eq!(rows[0]["revenue"], 89.9);
}

#[test]
fn table_output_is_aligned() {
    let (_d, lake) = shop_lake();
    let out = ok(&lake, &["sql", "SELECT count(*) AS n FROM events"]);
    assert!(out.contains("| n  |") && out.contains("| 12 |"), "{out}");
}

#[test]
fn json_fields_are_queryable() {
    let (_d, lake) = shop_lake();
    assert_eq!(
        query(
            &lake,
            "SELECT json_get_str(properties, 'sku'), json_get_float(properties, 'price') FROM events WHERE message_id = 'm02'"
        ),
        vec!["SKU-1,89.9"]
    );
    assert_eq!(
        query(
            &lake,
            "SELECT json_get_str(traits, 'plan') FROM events WHERE type = 'identify'"
        ),
        vec!["gold"]
    );
}

#[test]
fn statements_from_stdin_run_in_order() {
    let (_d, lake) = shop_lake();
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keystone"))
        .args(["--lake", lake.to_str().unwrap(), "sql", "--format", "csv"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT 1 AS a;\nSELECT count(*) AS n FROM events WHERE type = 'page';\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "a\n1\nn\n2\n");
}

#[test]
fn each_query_sees_the_latest_commit() {
    let (dir, lake) = shop_lake();
    assert_eq!(query(&lake, "SELECT count(*) FROM events"), vec!["12"]);
    let more = dir.path().join("more.ndjson");
    std::fs::write(
        &more,
        "{\"type\":\"page\",\"userId\":\"u-7\",\"timestamp\":\"2026-11-02T00:00:00Z\"}\n",
    )
    .unwrap();
    ok(&lake, &["ingest", more.to_str().unwrap()]);
    assert_eq!(query(&lake, "SELECT count(*) FROM events"), vec!["13"]);
}

#[test]
fn sql_errors_are_one_line_and_non_zero() {
    let (_d, lake) = shop_lake();
    for (q, needle) in [
        ("SELEC 1", "SELEC"),
        ("SELECT * FROM nope", "nope"),
        ("SELECT no_such_column FROM events", "no_such_column"),
    ] {
        let out = keystone(&lake, &["sql", q]);
        assert!(!out.status.success(), "{q}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{q}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    let out = keystone(&lake, &["sql", "SELECT 1", "--format", "xml"]);
    assert!(!out.status.success());
}

#[test]
fn tables_are_listed_with_information_schema() {
    let (_d, lake) = shop_lake();
    let rows = query(
        &lake,
        "SELECT table_catalog, table_schema, table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name",
    );
    assert_eq!(rows, vec!["keystone,public,events"]);
}

#[test]
fn documented_tables_answer_before_their_first_row() {
    let (dir, lake) = temp_lake();
    let clean = dir.path().join("clean.ndjson");
    std::fs::write(
        &clean,
        r#"{"type":"identify","messageId":"q1","userId":"u-1","timestamp":"2026-10-01T10:00:00Z","traits":{"email":"jane@example.org"}}"#,
    )
    .unwrap();
    ok(&lake, &["ingest", clean.to_str().unwrap()]);
    // No bad row yet: quarantine is empty, not missing.
    assert_eq!(query(&lake, "SELECT count(*) FROM quarantine"), ["0"]);
    // Before the first resolve, a profile lookup says what to do.
    let out = keystone(&lake, &["profile", "show", "email:jane@example.org"]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("run `keystone resolve` first"), "{e}");
}

/// A mistyped `--lake` is named, and no empty lake is left in its place;
/// the commands that write a lake from nothing still create it.
#[test]
fn a_lake_that_is_not_there_is_named_and_not_created() {
    let (_d, lake) = temp_lake();
    for args in [
        &["sql", "SELECT 1"][..],
        &["tables"],
        &["resolve"],
        &["profile", "show", "user_id:u1"],
        &["segment", "list"],
    ] {
        let out = keystone(&lake, args);
        assert!(!out.status.success(), "{args:?}");
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            e.contains(lake.to_str().unwrap()) && e.contains("no such folder"),
            "{args:?}: {e}"
        );
        assert!(!lake.exists(), "{args:?} created the lake");
    }
    ok(&lake, &["ingest", fixture("shop.ndjson").to_str().unwrap()]);
    ok(&lake, &["tables"]);

    let file = lake.parent().unwrap().join("notes.txt");
    std::fs::write(&file, "x").unwrap();
    let out = keystone(&file, &["ingest", fixture("shop.ndjson").to_str().unwrap()]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("is a file, not a folder"),
        "{e}"
    );
}

/// Statements that would change or define tables are refused by name,
/// pointing at the commands that do it; the tables are left as they were.
#[test]
fn statements_that_write_tables_are_refused_naming_the_statement() {
    let (_d, lake) = shop_lake();
    for (sql, named) in [
        ("DROP TABLE events", "DROP TABLE events"),
        ("drop view segments.vip", "DROP VIEW segments.vip"),
        ("DELETE FROM events", "DELETE FROM events"),
        ("UPDATE events SET email = NULL", "UPDATE events"),
        (
            "INSERT INTO events SELECT * FROM events",
            "INSERT INTO events",
        ),
        ("CREATE TABLE t AS SELECT 1", "CREATE TABLE t"),
    ] {
        let out = keystone(&lake, &["sql", sql]);
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && e.contains(&format!("{named} is not allowed"))
                && e.contains("keystone forget"),
            "{sql}: {e}"
        );
    }
    assert_eq!(query(&lake, "SELECT count(*) AS n FROM events"), ["12"]);
}
