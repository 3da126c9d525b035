//! Consent per purpose, per profile, over time.
//!
//! Consents are read from the events themselves, so they follow the person
//! through identity resolution and vanish with them on `keystone forget`:
//! - `context.consent.categoryPreferences` of any event — what Segment's
//!   consent management stamps on every event — e.g. `{"marketing": true,
//!   "advertising": false}`;
//! - `properties.categoryPreferences` of a `Consent Updated` track event (or
//!   Segment's `Segment Consent Preference Updated`), the explicit change.
//!
//! Only boolean values count. The current consent for a purpose is the
//! latest value by event `timestamp`; when two events of the same instant
//! disagree, the refusal wins. A profile that never stated a purpose has not
//! consented to it.
//!
//! Three places use the one rule: the view `consents` (the history: one row
//! per profile, purpose and event that stated it), the `profiles.consents`
//! column (the current state as a JSON object, written by `keystone
//! resolve`), and exports for a purpose ([`granted_sql`], over the live view,
//! so a withdrawal counts from the moment its event lands).

/// The view of every consent statement.
pub const CONSENTS: &str = "consents";

/// Track events whose `properties.categoryPreferences` change consents.
pub const CONSENT_EVENTS: &[&str] = &["Consent Updated", "Segment Consent Preference Updated"];

fn consent_events_list() -> String {
    CONSENT_EVENTS
        .iter()
        .map(|e| format!("'{e}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// SQL expression over an event row: its consent preferences as JSON object
/// text, or NULL when it states none. The cheap substring test keeps the JSON
/// parser off the events that carry no consent.
pub fn preferences_expr() -> String {
    format!(
        "CASE WHEN type = 'track' AND event IN ({events}) \
              THEN coalesce(json_get_json(properties, 'categoryPreferences'), \
                            json_get_json(context, 'consent', 'categoryPreferences')) \
              WHEN strpos(context, 'categoryPreferences') > 0 \
              THEN json_get_json(context, 'consent', 'categoryPreferences') END",
        events = consent_events_list()
    )
}

/// SQL of the `consents` view over `events_resolved`: `profile_id`,
/// `purpose`, `granted`, `timestamp`, `message_id`, `source`, one row per
/// purpose an event states.
pub fn consents_sql() -> String {
    format!(
        "SELECT profile_id, purpose, json_get_bool(preferences, purpose) AS granted, \
                \"timestamp\", message_id, source \
         FROM (SELECT profile_id, \"timestamp\", message_id, source, preferences, \
                      unnest(json_object_keys(preferences)) AS purpose \
               FROM (SELECT profile_id, \"timestamp\", message_id, source, {prefs} AS preferences \
                     FROM events_resolved WHERE profile_id IS NOT NULL) AS stated \
               WHERE preferences IS NOT NULL) AS per_purpose \
         WHERE json_get_bool(preferences, purpose) IS NOT NULL",
        prefs = preferences_expr()
    )
}

/// The aggregate that gives a profile's current consents (the
/// `profiles.consents` column): the latest boolean of each purpose.
pub fn current_consents_expr() -> String {
    format!("latest_consents({}, \"timestamp\")", preferences_expr())
}

/// SQL of the profiles whose current consent for `purpose` is granted, over
/// the `consents` view.
pub fn granted_sql(purpose: &str) -> String {
    let p = format!("'{}'", purpose.replace('\'', "''"));
    format!(
        "SELECT profile_id FROM (\
           SELECT profile_id, granted, row_number() OVER (PARTITION BY profile_id \
                  ORDER BY \"timestamp\" DESC, granted ASC, message_id DESC) AS rn \
           FROM {CONSENTS} WHERE purpose = {p}) AS latest \
         WHERE rn = 1 AND granted"
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::prelude::SessionContext;

    use super::*;

    /// A session with an `events_resolved` of the given rows:
    /// (profile, type, event, timestamp µs, properties, context).
    type Row<'a> = (&'a str, &'a str, &'a str, i64, &'a str, &'a str);

    async fn session<'a>(rows: &[Row<'a>]) -> SessionContext {
        let s = |f: fn(&Row<'a>) -> &'a str| {
            Arc::new(StringArray::from(
                rows.iter()
                    .map(|r| Some(f(r)).filter(|v| !v.is_empty()))
                    .collect::<Vec<_>>(),
            )) as arrow::array::ArrayRef
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("profile_id", DataType::Utf8, true),
            Field::new("type", DataType::Utf8, true),
            Field::new("event", DataType::Utf8, true),
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("properties", DataType::Utf8, true),
            Field::new("context", DataType::Utf8, true),
            Field::new("message_id", DataType::Utf8, true),
            Field::new("source", DataType::Utf8, true),
        ]));
        let ids: Vec<String> = (0..rows.len()).map(|i| format!("m{i}")).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                s(|r| r.0),
                s(|r| r.1),
                s(|r| r.2),
                Arc::new(
                    TimestampMicrosecondArray::from(rows.iter().map(|r| r.3).collect::<Vec<_>>())
                        .with_timezone("UTC"),
                ),
                s(|r| r.4),
                s(|r| r.5),
                Arc::new(StringArray::from(ids)),
                Arc::new(StringArray::from(vec!["web"; rows.len()])),
            ],
        )
        .unwrap();
        let mut ctx = SessionContext::new();
        datafusion_functions_json::register_all(&mut ctx).unwrap();
        ctx.register_udaf(crate::udf::latest_consents_udaf());
        ctx.register_batch("events_resolved", batch).unwrap();
        ctx.register_table(
            CONSENTS,
            ctx.sql(&consents_sql()).await.unwrap().into_view(),
        )
        .unwrap();
        ctx
    }

    async fn strings(ctx: &SessionContext, sql: &str) -> Vec<String> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        text.lines()
            .skip(3)
            .filter(|l| l.starts_with('|'))
            .map(|l| {
                l.trim_matches('|')
                    .split('|')
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    const DAY: i64 = 86_400_000_000;

    fn ctx_consent(prefs: &str) -> String {
        format!(r#"{{"consent":{{"categoryPreferences":{prefs}}}}}"#)
    }

    #[tokio::test]
    async fn latest_statement_wins_and_a_refusal_wins_a_tie() {
        let given = ctx_consent(r#"{"marketing":true,"advertising":true}"#);
        let withdrawn = ctx_consent(r#"{"advertising":false}"#);
        let ctx = session(&[
            // p1: grants both, later withdraws advertising.
            ("p1", "identify", "", DAY, "", &given),
            ("p1", "track", "Page Viewed", 2 * DAY, "", &withdrawn),
            (
                "p1",
                "track",
                "Page Viewed",
                3 * DAY,
                "",
                r#"{"ip":"1.2.3.4"}"#,
            ),
            // p2: a Consent Updated event grants marketing; at the same
            // instant another event refuses it: the refusal wins.
            (
                "p2",
                "track",
                "Consent Updated",
                DAY,
                r#"{"categoryPreferences":{"marketing":true}}"#,
                "",
            ),
            (
                "p2",
                "page",
                "",
                DAY,
                "",
                &ctx_consent(r#"{"marketing":false}"#),
            ),
            // p3: a non-boolean value and a non-object are ignored.
            (
                "p3",
                "page",
                "",
                DAY,
                "",
                &ctx_consent(r#"{"marketing":"yes"}"#),
            ),
            ("p3", "page", "", DAY, "", &ctx_consent("[true]")),
            // p4: nothing said.
            (
                "p4",
                "track",
                "Order Completed",
                DAY,
                r#"{"revenue":3}"#,
                "",
            ),
        ])
        .await;

        let history = strings(
            &ctx,
            "SELECT profile_id, purpose, granted FROM consents ORDER BY profile_id, \"timestamp\", purpose, granted",
        )
        .await;
        assert_eq!(
            history,
            [
                "p1 advertising true",
                "p1 marketing true",
                "p1 advertising false",
                "p2 marketing false",
                "p2 marketing true",
            ]
        );

        let current = strings(
            &ctx,
            &format!(
                "SELECT profile_id, {} FROM events_resolved GROUP BY profile_id ORDER BY profile_id",
                current_consents_expr()
            ),
        )
        .await;
        assert_eq!(
            current,
            [
                r#"p1 {"advertising":false,"marketing":true}"#,
                r#"p2 {"marketing":false}"#,
                "p3",
                "p4",
            ]
        );

        let granted = |purpose: &'static str| {
            let ctx = ctx.clone();
            async move {
                strings(
                    &ctx,
                    &format!("{} ORDER BY profile_id", granted_sql(purpose)),
                )
                .await
            }
        };
        assert_eq!(granted("marketing").await, ["p1"]);
        assert!(granted("advertising").await.is_empty());
        assert!(granted("it's").await.is_empty(), "quotes are escaped");
    }
}
