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
