//! `keystone maintain`: compaction keeps every row; retention removes
//! exactly the expired ones.

use crate::{ok, query, temp_lake};

fn report(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap()
}

fn table<'a>(r: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    r["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no {name} in {r}"))
}

#[test]
fn maintain_compacts_small_files_and_expires_what_retention_says() {
    let (dir, lake) = temp_lake();
    // Twelve small loads (as a streaming source leaves them), four per day
    // of 2026-10-01..03: each with one visitor who never identifies and one
    // who logs in, plus a bad line.
    for load in 1..=12 {
        let day = (load - 1) % 3 + 1;
        let file = dir.path().join(format!("load{load}.ndjson"));
        std::fs::write(
            &file,
            format!(
                r#"{{"type":"page","messageId":"a{load}","anonymousId":"visitor-{load}","timestamp":"2026-10-{day:02}T10:00:00Z"}}
{{"type":"page","messageId":"b{load}","anonymousId":"cookie-{load}","timestamp":"2026-10-{day:02}T11:00:00Z"}}
{{"type":"identify","messageId":"c{load}","anonymousId":"cookie-{load}","userId":"user-{load}","timestamp":"2026-10-{day:02}T11:01:00Z","traits":{{"email":"p{load}@example.com"}}}}
{{"type":"page","messageId":"d{load}","timestamp":"2026-10-{day:02}T11:02:00Z","anonymousId":["bad"]}}
"#
            ),
        )
        .unwrap();
        ok(&lake, &["ingest", file.to_str().unwrap()]);
    }
    ok(&lake, &["resolve"]);
    let count = |sql: &str| query(&lake, sql)[0].parse::<u64>().unwrap();
    let events = count("SELECT count(*) FROM events");
    assert_eq!(events, 36);
    assert_eq!(count("SELECT count(*) FROM quarantine"), 12);

    // Defaults (13 months for anonymous events, 30 days of quarantine) as of
    // 2026-10-20: nothing has expired; the small files are compacted.
    let r = report(&ok(&lake, &["maintain", "--today", "2026-10-20", "--json"]));
    let ev = table(&r, "events");
    assert_eq!(ev["rows_expired"], 0);
    assert!(ev["files_before"].as_u64().unwrap() >= 12, "{ev}");
    assert!(
        ev["files_after"].as_u64().unwrap() < ev["files_before"].as_u64().unwrap(),
        "{ev}"
    );
    assert_eq!(count("SELECT count(*) FROM events"), events);
    assert_eq!(count("SELECT count(*) FROM quarantine"), 12);
    assert_eq!(
        query(
            &lake,
            "SELECT count(DISTINCT profile_id) FROM events_resolved"
        ),
        vec!["24"]
    );

    // A short retention, 30 days from now: anonymous events before
    // 2026-10-03 go (the eight never-identified visitors of days 1-2); the
    // identified people's events all stay; quarantine (by day of receipt,
    // today) is older than 10 days by then and goes.
    let later = chrono::Utc::now().date_naive() + chrono::Days::new(30);
    let keep_days = (later - chrono::NaiveDate::from_ymd_opt(2026, 10, 3).unwrap()).num_days();
    std::fs::write(
        dir.path().join("keystone.toml"),
        format!("[retention]\nanonymous_events_days = {keep_days}\nquarantine_days = 10\n"),
    )
    .unwrap();
    let later = later.format("%Y-%m-%d").to_string();
    let r = report(&ok(&lake, &["maintain", "--today", &later, "--json"]));
    assert_eq!(table(&r, "events")["rows_expired"], 8, "{r}");
    assert_eq!(table(&r, "quarantine")["rows_expired"], 12, "{r}");
    assert_eq!(count("SELECT count(*) FROM events"), events - 8);
    assert_eq!(
        count(
            "SELECT count(*) FROM events WHERE anonymous_id LIKE 'visitor-%' AND event_date < DATE '2026-10-03'"
        ),
        0
    );
    assert_eq!(
        count("SELECT count(*) FROM events WHERE user_id IS NOT NULL"),
        12
    );
    assert_eq!(count("SELECT count(*) FROM quarantine"), 0);
    // The next resolve sees compacted, expired events and still groups them.
    ok(&lake, &["resolve"]);
    assert_eq!(
        count("SELECT count(*) FROM profiles WHERE user_id IS NOT NULL"),
        12
    );

    // A bad config is refused with the key's name.
    std::fs::write(
        dir.path().join("keystone.toml"),
        "[retention]\nanonymous_days = 1\n",
    )
    .unwrap();
    let out = crate::keystone(&lake, &["maintain"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("anonymous_days"));
}
