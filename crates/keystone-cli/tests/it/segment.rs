//! `keystone segment create|list|drop` and the `segments.NAME` views.

use crate::{fixture, keystone, ok, query, temp_lake};

fn err(lake: &std::path::Path, args: &[&str]) -> String {
    let out = keystone(lake, args);
    assert!(!out.status.success(), "keystone {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn segments_are_validated_views_of_their_members_profiles() {
    let (_dir, lake) = temp_lake();
    ok(
        &lake,
        &[
            "ingest",
            fixture("shop.ndjson").to_str().unwrap(),
            fixture("store.csv").to_str().unwrap(),
        ],
    );
    // Before `resolve` there is no profiles table to select members from.
    let e = err(
        &lake,
        &[
            "segment",
            "create",
            "buyers",
            "--sql",
            "SELECT profile_id FROM profiles",
        ],
    );
    assert!(e.contains("keystone resolve"), "{e}");
    ok(&lake, &["resolve"]);

    ok(
        &lake,
        &[
            "segment",
            "create",
            "buyers",
            "--sql",
            "SELECT profile_id FROM profiles WHERE order_count > 0;",
        ],
    );
    // A segment over a segment, with duplicates in its definition (an event
    // per order): members are profiles, each once.
    ok(
        &lake,
        &[
            "segment",
            "create",
            "web_buyers",
            "--sql",
            "SELECT e.profile_id FROM events_resolved e JOIN segments.buyers b USING (profile_id) WHERE e.event = 'Order Completed'",
        ],
    );
    let expected = query(
        &lake,
        "SELECT profile_id, user_id FROM profiles WHERE order_count > 0 ORDER BY 1",
    );
    assert!(!expected.is_empty());
    assert_eq!(
        query(
            &lake,
            "SELECT profile_id, user_id FROM segments.buyers ORDER BY 1"
        ),
        expected
    );
    let web = query(
        &lake,
        "SELECT profile_id FROM segments.web_buyers ORDER BY 1",
    );
    let distinct = query(
        &lake,
        "SELECT count(DISTINCT profile_id) FROM segments.web_buyers",
    );
    assert_eq!(distinct, vec![web.len().to_string()]);

    let list = ok(&lake, &["segment", "list"]);
    assert!(list.starts_with("name\tcreated_at\tsql\n"), "{list}");
    assert!(
        list.contains("buyers\t") && list.contains("web_buyers\t"),
        "{list}"
    );
    // The trailing `;` is not stored.
    assert!(list.contains("order_count > 0\n"), "{list}");

    // Bad definitions, each refused with the reason, nothing stored.
    for (name, sql, needle) in [
        (
            "buyers",
            "SELECT profile_id FROM profiles",
            "already exists",
        ),
        ("Caps", "SELECT profile_id FROM profiles", "lower-case"),
        ("no_pid", "SELECT email FROM profiles", "profile_id column"),
        (
            "bad_sql",
            "SELEC profile_id FROM profiles",
            "does not parse",
        ),
        ("writes", "DELETE FROM profiles", "SELECT query"),
        (
            "two",
            "SELECT profile_id FROM profiles; SELECT 1",
            "one SELECT",
        ),
        (
            "outside",
            "SELECT profile_id FROM other.public.t",
            "not a Keystone table",
        ),
        ("typo", "SELECT profile_id FROM profile", "does not exist"),
        ("num", "SELECT 1 AS profile_id", "must be text"),
    ] {
        let e = err(&lake, &["segment", "create", name, "--sql", sql]);
        assert!(e.contains(needle), "{name}: {e}");
    }
    assert_eq!(ok(&lake, &["segment", "list"]).lines().count(), 3);
    // A definition ending in a comment still makes a working view.
    ok(
        &lake,
        &[
            "segment",
            "create",
            "everyone",
            "--sql",
            "SELECT profile_id FROM profiles -- all",
        ],
    );
    assert_eq!(
        query(&lake, "SELECT count(*) FROM segments.everyone"),
        query(&lake, "SELECT count(*) FROM profiles")
    );
    ok(&lake, &["segment", "drop", "everyone"]);

    let e = err(&lake, &["segment", "drop", "buyers"]);
    assert!(e.contains("used by segment web_buyers"), "{e}");
    ok(&lake, &["segment", "drop", "web_buyers"]);
    ok(&lake, &["segment", "drop", "buyers"]);
    let e = err(&lake, &["segment", "drop", "buyers"]);
    assert!(e.contains("does not exist"), "{e}");
    let e = err(&lake, &["sql", "SELECT * FROM segments.buyers"]);
    assert!(e.contains("buyers"), "{e}");
}

/// The audiences of docs/segments.md, each created as documented and checked
/// against an independent formulation, on `keystone gen` data ending today
/// over 200 days (so "last 24 hours" and "no order in 90 days" have members).
#[test]
fn audiences_marketers_ask_for_work_as_documented() {
    let (dir, lake) = temp_lake();
    let data = dir.path().join("data");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    ok(
        &lake,
        &[
            "gen",
            "--profiles",
            "1000",
            "--days",
            "200",
            "--end",
            &today,
            "--out",
            data.to_str().unwrap(),
        ],
    );
    ok(
        &lake,
        &[
            "ingest",
            data.join("events.ndjson").to_str().unwrap(),
            data.join("store_purchases.csv").to_str().unwrap(),
        ],
    );
    ok(&lake, &["resolve"]);
    let members = |name: &str| {
        query(
            &lake,
            &format!("SELECT profile_id FROM segments.{name} ORDER BY 1"),
        )
    };
    let create = |name: &str, sql: &str| {
        ok(&lake, &["segment", "create", name, "--sql", sql]);
        members(name)
    };

    let high = create(
        "high_value",
        "SELECT profile_id FROM profiles WHERE revenue >= 1000",
    );
    assert!(!high.is_empty());
    assert_eq!(
        query(
            &lake,
            "SELECT count(*) FROM segments.high_value WHERE revenue < 1000"
        ),
        vec!["0"]
    );
    let vip = create(
        "vip",
        "SELECT profile_id FROM profiles WHERE rfm_monetary = 5 AND rfm_frequency >= 4",
    );
    assert!(!vip.is_empty() && vip.len() < high.len() * 10);

    let recent = create(
        "recent_buyers",
        "SELECT profile_id FROM profiles WHERE last_order_at >= now() - INTERVAL '30 days'",
    );
    assert!(!recent.is_empty());
    assert_eq!(
        recent,
        query(
            &lake,
            "SELECT DISTINCT profile_id FROM events_resolved WHERE type = 'track' AND event = 'Order Completed' AND \"timestamp\" >= now() - INTERVAL '30 days' ORDER BY 1"
        )
    );

    let abandoners = create(
        "cart_abandoners",
        "SELECT a.profile_id \
         FROM (SELECT profile_id, max(\"timestamp\") AS added_at FROM events_resolved \
               WHERE event = 'Product Added' AND \"timestamp\" >= now() - INTERVAL '24 hours' GROUP BY profile_id) a \
         LEFT JOIN (SELECT profile_id, max(\"timestamp\") AS ordered_at FROM events_resolved \
                    WHERE event = 'Order Completed' GROUP BY profile_id) o USING (profile_id) \
         WHERE o.ordered_at IS NULL OR o.ordered_at < a.added_at",
    );
    let added_today = query(
        &lake,
        "SELECT count(DISTINCT profile_id) FROM events_resolved WHERE event = 'Product Added' AND \"timestamp\" >= now() - INTERVAL '24 hours'",
    );
    assert_ne!(
        added_today,
        vec!["0"],
        "the data has carts in the last 24 h"
    );
    assert_eq!(
        abandoners,
        query(
            &lake,
            "SELECT DISTINCT a.profile_id FROM events_resolved a \
             WHERE a.event = 'Product Added' AND a.\"timestamp\" >= now() - INTERVAL '24 hours' \
             AND NOT EXISTS (SELECT 1 FROM events_resolved o WHERE o.profile_id = a.profile_id \
                             AND o.event = 'Order Completed' AND o.\"timestamp\" >= a.\"timestamp\") \
             AND NOT EXISTS (SELECT 1 FROM events_resolved b WHERE b.profile_id = a.profile_id \
                             AND b.event = 'Product Added' AND b.\"timestamp\" > a.\"timestamp\") \
             ORDER BY 1"
        )
    );

    let churn = create(
        "churn_risk",
        "SELECT profile_id FROM profiles WHERE order_count >= 2 AND last_order_at < now() - INTERVAL '90 days'",
    );
    assert!(!churn.is_empty());
    assert_eq!(
        churn,
        query(
            &lake,
            "SELECT profile_id FROM events_resolved WHERE type = 'track' AND event = 'Order Completed' \
             GROUP BY profile_id HAVING count(*) >= 2 AND max(\"timestamp\") < now() - INTERVAL '90 days' ORDER BY 1"
        )
    );

    let anonymous = create(
        "anonymous_electronics",
        "SELECT DISTINCT e.profile_id FROM events_resolved e JOIN profiles p USING (profile_id) \
         WHERE p.user_id IS NULL AND p.email IS NULL AND p.order_count = 0 \
         AND e.event = 'Product Viewed' AND e.category = 'Electronics'",
    );
    assert!(!anonymous.is_empty());
    assert_eq!(
        anonymous,
        query(
            &lake,
            "SELECT profile_id FROM profiles WHERE user_id IS NULL AND email IS NULL AND order_count = 0 \
             AND profile_id IN (SELECT profile_id FROM events_resolved WHERE event = 'Product Viewed' AND category = 'Electronics') ORDER BY 1"
        )
    );

    let customers = create(
        "customers",
        "SELECT profile_id FROM profiles WHERE order_count > 0",
    );
    let prospects = create(
        "prospects",
        "SELECT profile_id FROM profiles WHERE event_count >= 3 EXCEPT SELECT profile_id FROM segments.customers",
    );
    assert!(!customers.is_empty() && !prospects.is_empty());
    assert!(
        prospects
            .iter()
            .all(|p| customers.binary_search(p).is_err())
    );
    assert_eq!(
        prospects,
        query(
            &lake,
            "SELECT profile_id FROM profiles WHERE event_count >= 3 AND NOT coalesce(order_count > 0, false) ORDER BY 1"
        )
    );
}

fn write_lines(path: &std::path::Path, lines: &[&str]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn csv_rows(path: &std::path::Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Snapshots, entered/exited, exports (plain, hashed, changes only, by
/// consent) and the errors that must write nothing.
#[test]
fn materialized_runs_record_who_entered_and_exited_and_exports_follow_them() {
    let (dir, lake) = temp_lake();
    let people = dir.path().join("people.ndjson");
    // Four people; consent for `marketing` given, withdrawn, given through a
    // Consent Updated event, or never given.
    write_lines(
        &people,
        &[
            r#"{"type":"identify","messageId":"c1","userId":"u-1","timestamp":"2026-10-01T10:00:00Z","traits":{"email":" Ann@Example.com "},"context":{"consent":{"categoryPreferences":{"marketing":true}}}}"#,
            r#"{"type":"track","messageId":"c2","userId":"u-1","timestamp":"2026-10-02T10:00:00Z","event":"Order Completed","properties":{"order_id":"o1","revenue":700}}"#,
            r#"{"type":"identify","messageId":"c3","userId":"u-2","timestamp":"2026-10-01T10:00:00Z","traits":{"email":"bob@example.org","phone":"+33 6 12 34 56 78"},"context":{"consent":{"categoryPreferences":{"marketing":true}}}}"#,
            r#"{"type":"track","messageId":"c4","userId":"u-2","timestamp":"2026-10-03T10:00:00Z","event":"Order Completed","properties":{"order_id":"o2","revenue":1500},"context":{"consent":{"categoryPreferences":{"marketing":false}}}}"#,
            r#"{"type":"identify","messageId":"c5","userId":"u-3","timestamp":"2026-10-01T10:00:00Z","traits":{"email":"cy@example.net"}}"#,
            r#"{"type":"track","messageId":"c6","userId":"u-3","timestamp":"2026-10-04T10:00:00Z","event":"Consent Updated","properties":{"categoryPreferences":{"marketing":true,"advertising":false}}}"#,
            r#"{"type":"track","messageId":"c7","userId":"u-3","timestamp":"2026-10-05T10:00:00Z","event":"Order Completed","properties":{"order_id":"o3","revenue":2500}}"#,
            r#"{"type":"identify","messageId":"c8","userId":"u-4","timestamp":"2026-10-01T10:00:00Z","traits":{"email":"dee@example.com"}}"#,
        ],
    );
    ok(&lake, &["ingest", people.to_str().unwrap()]);
    ok(&lake, &["resolve"]);
    let pid = |user: &str| {
        query(
            &lake,
            &format!("SELECT profile_id FROM profiles WHERE user_id = '{user}'"),
        )[0]
        .clone()
    };
    let (u1, u2, u3, u4) = (pid("u-1"), pid("u-2"), pid("u-3"), pid("u-4"));
    // The current consents in profiles, and their history in `consents`.
    assert_eq!(
        query(
            &lake,
            "SELECT user_id, json_get_bool(consents, 'marketing'), json_get_bool(consents, 'advertising') \
             FROM profiles ORDER BY user_id"
        ),
        ["u-1,true,", "u-2,false,", "u-3,true,false", "u-4,,"]
    );
    assert_eq!(
        query(
            &lake,
            "SELECT p.user_id, c.purpose, c.granted, c.message_id FROM consents c \
             JOIN profiles p USING (profile_id) ORDER BY c.\"timestamp\", c.purpose"
        ),
        [
            "u-1,marketing,true,c1",
            "u-2,marketing,true,c3",
            "u-2,marketing,false,c4",
            "u-3,advertising,false,c6",
            "u-3,marketing,true,c6",
        ]
    );

    let e = err(&lake, &["segment", "materialize", "--all"]);
    assert!(e.contains("no segment is defined"), "{e}");
    ok(
        &lake,
        &[
            "segment",
            "create",
            "buyers",
            "--sql",
            "SELECT profile_id, revenue FROM profiles WHERE revenue > 500",
        ],
    );
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
    let run = ok(&lake, &["segment", "materialize", "--all"]);
    assert_eq!(run.trim(), "1");
    let snapshot = |segment: &str, run: i64| {
        query(
            &lake,
            &format!(
                "SELECT profile_id FROM segment_membership WHERE segment = '{segment}' AND run_id = {run} ORDER BY 1"
            ),
        )
    };
    let mut buyers = vec![u1.clone(), u2.clone(), u3.clone()];
    buyers.sort();
    assert_eq!(snapshot("buyers", 1), buyers);
    assert_eq!(snapshot("known", 1).len(), 4);
    assert_eq!(
        query(
            &lake,
            "SELECT count(*) FROM segment_changes WHERE run_id = 1 AND change = 'entered'"
        ),
        vec!["7"],
        "at the first run every member entered"
    );

    // Redefine buyers more strictly: u-1 (700) exits at run 2, nobody enters;
    // `known` is unchanged.
    ok(&lake, &["segment", "drop", "buyers"]);
    ok(
        &lake,
        &[
            "segment",
            "create",
            "buyers",
            "--sql",
            "SELECT profile_id, revenue FROM profiles WHERE revenue > 1000",
        ],
    );
    assert_eq!(ok(&lake, &["segment", "materialize", "buyers"]).trim(), "2");
    assert_eq!(
        query(
            &lake,
            "SELECT segment, profile_id, change FROM segment_changes WHERE run_id = 2"
        ),
        vec![format!("buyers,{u1},exited")]
    );
    let runs = ok(&lake, &["segment", "runs"]);
    assert!(
        runs.lines()
            .any(|l| l.starts_with("2\t") && l.ends_with("\tbuyers\t2\t0\t1")),
        "run 2: buyers has 2 members, 0 entered, 1 exited\n{runs}"
    );
    assert_eq!(
        runs.lines().count(),
        1 + 2 + 1,
        "a header, run 1 (2 segments), run 2"
    );

    // A definition that returns a profile several times with its own
    // columns cannot be exported (which row's columns?); unknown names are
    // refused.
    ok(
        &lake,
        &[
            "segment",
            "create",
            "dupes",
            "--sql",
            "SELECT profile_id, event FROM events_resolved",
        ],
    );
    let e = err(
        &lake,
        &[
            "segment",
            "export",
            "dupes",
            "--to",
            dir.path().join("dupes.parquet").to_str().unwrap(),
        ],
    );
    assert!(
        e.contains("dupes") && e.contains("cannot be exported"),
        "{e}"
    );
    ok(&lake, &["segment", "drop", "dupes"]);
    let e = err(&lake, &["segment", "materialize", "nope"]);
    assert!(e.contains("segment nope does not exist"), "{e}");
    assert_eq!(
        query(&lake, "SELECT max(run_id) FROM segment_membership"),
        vec!["2"]
    );

    // Plain CSV export: profile_id, normalised identifiers, the definition's columns.
    let out = dir.path().join("exports");
    let plain = out.join("buyers.csv");
    ok(
        &lake,
        &[
            "segment",
            "export",
            "buyers",
            "--to",
            plain.to_str().unwrap(),
            "--format",
            "csv",
        ],
    );
    let rows = csv_rows(&plain);
    assert_eq!(rows[0], ["profile_id", "email", "phone", "revenue"]);
    let mut got: Vec<_> = rows[1..]
        .iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    got.sort();
    let mut want = vec![
        (u2.clone(), "bob@example.org".to_string()),
        (u3.clone(), "cy@example.net".to_string()),
    ];
    want.sort();
    assert_eq!(got, want);
    let bob = rows.iter().find(|r| r[0] == u2).unwrap();
    assert_eq!(bob[2], "+33612345678");
    assert_eq!(bob[3], "1500.0");

    // Hashed: SHA-256 of the normalised value, as customer-match uploads expect.
    let hashed = out.join("known-hashed.csv");
    ok(
        &lake,
        &[
            "segment",
            "export",
            "known",
            "--to",
            hashed.to_str().unwrap(),
            "--format",
            "csv",
            "--hash-identifiers",
        ],
    );
    let rows = csv_rows(&hashed);
    let ann = rows.iter().find(|r| r[0] == u1).unwrap();
    assert_eq!(ann[1], sha256_hex("ann@example.com"));
    let bob = rows.iter().find(|r| r[0] == u2).unwrap();
    assert_eq!(bob[2], sha256_hex("+33612345678"));
    assert!(!std::fs::read_to_string(&hashed).unwrap().contains('@'));

    // Only the changes since run 1: u-1 exited.
    let changes = out.join("buyers-changes.csv");
    ok(
        &lake,
        &[
            "segment",
            "export",
            "buyers",
            "--to",
            changes.to_str().unwrap(),
            "--format",
            "csv",
            "--changes-since",
            "1",
        ],
    );
    let rows = csv_rows(&changes);
    assert_eq!(rows[0][..3], ["profile_id", "change", "email"]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        rows[1][..3],
        [u1.clone(), "exited".into(), "ann@example.com".into()]
    );
    let e = err(
        &lake,
        &[
            "segment",
            "export",
            "buyers",
            "--to",
            changes.to_str().unwrap(),
            "--changes-since",
            "9",
        ],
    );
    assert!(e.contains("run 9 does not exist"), "{e}");

    // Consent for marketing: u-1 granted, u-2 withdrew, u-3 granted by a
    // Consent Updated event, u-4 never said.
    let consented = out.join("known-marketing.csv");
    ok(
        &lake,
        &[
            "segment",
            "export",
            "known",
            "--to",
            consented.to_str().unwrap(),
            "--format",
            "csv",
            "--purpose",
            "marketing",
        ],
    );
    let mut got: Vec<_> = csv_rows(&consented)[1..]
        .iter()
        .map(|r| r[0].clone())
        .collect();
    got.sort();
    let mut want = vec![u1.clone(), u3.clone()];
    want.sort();
    assert_eq!(got, want);
    let _ = u4;
    let advertising = out.join("known-advertising.csv");
    ok(
        &lake,
        &[
            "segment",
            "export",
            "known",
            "--to",
            advertising.to_str().unwrap(),
            "--format",
            "csv",
            "--purpose",
            "advertising",
        ],
    );
    assert_eq!(
        csv_rows(&advertising).len(),
        1,
        "nobody granted advertising"
    );

    // A withdrawal counts from the moment its event lands, before the next
    // resolve: u-1 leaves the marketing export.
    let withdrawal = dir.path().join("withdrawal.ndjson");
    write_lines(
        &withdrawal,
        &[
            r#"{"type":"track","messageId":"c9","userId":"u-1","timestamp":"2026-10-06T10:00:00Z","event":"Consent Updated","properties":{"categoryPreferences":{"marketing":false}}}"#,
        ],
    );
    ok(&lake, &["ingest", withdrawal.to_str().unwrap()]);
    let after = out.join("known-marketing-2.csv");
    ok(
        &lake,
        &[
            "segment",
            "export",
            "known",
            "--to",
            after.to_str().unwrap(),
            "--format",
            "csv",
            "--purpose",
            "marketing",
        ],
    );
    let got: Vec<_> = csv_rows(&after)[1..].iter().map(|r| r[0].clone()).collect();
    assert_eq!(got, std::slice::from_ref(&u3));

    let e = err(
        &lake,
        &["segment", "export", "nope", "--to", plain.to_str().unwrap()],
    );
    assert!(e.contains("segment nope does not exist"), "{e}");
    let e = err(
        &lake,
        &["segment", "export", "buyers", "--to", out.to_str().unwrap()],
    );
    assert!(e.contains("is a folder"), "{e}");

    // Without --format, the extension of --to decides.
    let inferred = out.join("known-inferred.csv");
    ok(
        &lake,
        &[
            "segment",
            "export",
            "known",
            "--to",
            inferred.to_str().unwrap(),
        ],
    );
    assert_eq!(
        csv_rows(&inferred)[0][..3],
        ["profile_id", "email", "phone"]
    );

    // A definition over events returns a buyer once per order: members are
    // still each profile once (as in its view). A definition that later data
    // breaks (a trait that no longer casts) is left out of the run; the other
    // segments are still materialised and the command fails naming it.
    for (name, sql) in [
        (
            "ordered",
            "SELECT profile_id FROM events_resolved WHERE event = 'Order Completed'",
        ),
        (
            "adults",
            "SELECT profile_id FROM profiles WHERE CAST(json_get_str(traits, 'age') AS INT) >= 18",
        ),
    ] {
        ok(&lake, &["segment", "create", name, "--sql", sql]);
    }
    let again = dir.path().join("again.ndjson");
    write_lines(
        &again,
        &[
            r#"{"type":"track","messageId":"c10","userId":"u-1","timestamp":"2026-10-07T10:00:00Z","event":"Order Completed","properties":{"order_id":"o4","revenue":5}}"#,
            r#"{"type":"identify","messageId":"c11","userId":"u-4","timestamp":"2026-10-07T10:00:00Z","traits":{"age":"unknown"}}"#,
        ],
    );
    ok(&lake, &["ingest", again.to_str().unwrap()]);
    ok(&lake, &["resolve"]);
    let e = err(&lake, &["segment", "materialize", "--all"]);
    assert!(
        e.contains("segment adults:")
            && e.contains("unknown")
            && e.contains("1 segment(s) left out of run 3: adults"),
        "{e}"
    );
    assert_eq!(
        query(
            &lake,
            "SELECT segment, count(*) FROM segment_membership WHERE run_id = 3 GROUP BY 1 ORDER BY 1"
        ),
        ["buyers,2", "known,4", "ordered,3"]
    );
    let e = err(&lake, &["segment", "materialize", "adults"]);
    assert!(e.contains("unknown"), "{e}");
    assert_eq!(
        query(&lake, "SELECT max(run_id) FROM segment_membership"),
        vec!["3"],
        "a run whose only segment fails writes nothing"
    );
}
