//! The `profiles` table and the `events_resolved` view.
//!
//! `events_resolved` is `events` joined to `identities` on the event's
//! resolving identifier (`identity_key`, see [`crate::udf`]). `profiles` is
//! built from it: activity counts, revenue, the latest value of each trait
//! from `identify` calls, the computed traits of the configuration, and RFM
//! scores.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use keystone_core::schema::events_schema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::udf::{IDENTITY_KEY_ARGS, StrCol};
use crate::{Error, Result};

/// A column of `profiles` computed by an SQL aggregate over `events_resolved`
/// (`[profiles.traits]` in `keystone.toml`), e.g. `orders_90d = "count(*)
/// FILTER (WHERE event = 'Order Completed' AND timestamp > now() - INTERVAL '90 days')"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputedTrait {
    pub name: String,
    pub sql: String,
}

/// Columns every profile has; computed traits may not reuse these names.
pub const PROFILE_COLUMNS: &[&str] = &[
    "profile_id",
    "user_id",
    "email",
    "phone",
    "first_seen",
    "last_seen",
    "event_count",
    "order_count",
    "revenue",
    "last_order_at",
    "traits",
    "rfm_recency",
    "rfm_frequency",
    "rfm_monetary",
];

/// SQL of `events_resolved` over tables `events` and `identities` and the
/// function `identity_key`.
pub fn events_resolved_sql() -> String {
    let cols: Vec<String> = events_schema()
        .fields()
        .iter()
        .map(|f| format!("e.\"{}\"", f.name()))
        .collect();
    let args: Vec<String> = IDENTITY_KEY_ARGS
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect();
    format!(
        "SELECT {}, i.profile_id FROM (SELECT *, identity_key({}) AS __key FROM events) e \
         LEFT JOIN identities i ON i.identifier_type = e.__key['type'] AND i.identifier = e.__key['value']",
        cols.join(", "),
        args.join(", ")
    )
}

/// Check computed traits: names are plain identifiers, not taken, and each
/// expression plans as an aggregate over `events_resolved` in `ctx`.
pub async fn validate_traits(ctx: &SessionContext, traits: &[ComputedTrait]) -> Result<()> {
    for t in traits {
        let ok_name = !t.name.is_empty()
            && t.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !t.name.starts_with(|c: char| c.is_ascii_digit());
        if !ok_name {
            return Err(Error::Resolve(format!(
                "profiles.traits.{}: a trait name is lower-case letters, digits and _",
                t.name
            )));
        }
        if PROFILE_COLUMNS.contains(&t.name.as_str()) {
            return Err(Error::Resolve(format!(
                "profiles.traits.{}: `{}` is already a column of profiles",
                t.name, t.name
            )));
        }
        let probe = format!(
            "SELECT profile_id, {} AS \"{}\" FROM events_resolved GROUP BY profile_id",
            t.sql, t.name
        );
        ctx.sql(&probe).await.map_err(|e| {
            Error::Resolve(format!(
                "profiles.traits.{} = {:?} is not an aggregate over events_resolved: {e}",
                t.name, t.sql
            ))
        })?;
    }
    Ok(())
}

/// Build every profile. `ctx` must have `events`, `identities`, the
/// `identity_key` function and the JSON functions registered.
pub async fn build_profiles(
    ctx: &SessionContext,
    traits: &[ComputedTrait],
) -> Result<Vec<RecordBatch>> {
    ctx.register_table(
        "events_resolved",
        ctx.sql(&events_resolved_sql()).await?.into_view(),
    )?;
    validate_traits(ctx, traits).await?;

    let computed: String = traits
        .iter()
        .map(|t| format!(", {} AS \"{}\"", t.sql, t.name))
        .collect();
    let base = format!(
        "SELECT profile_id, min(\"timestamp\") AS first_seen, max(\"timestamp\") AS last_seen, \
         count(*) AS event_count, \
         count(*) FILTER (WHERE type = 'track' AND event = 'Order Completed') AS order_count, \
         coalesce(sum(revenue), 0.0) AS revenue, \
         max(\"timestamp\") FILTER (WHERE type = 'track' AND event = 'Order Completed') AS last_order_at\
         {computed} FROM events_resolved WHERE profile_id IS NOT NULL GROUP BY profile_id"
    );
    ctx.register_table("__base", ctx.sql(&base).await?.into_view())?;
    let pick = |kind: &str| {
        format!(
            "last_value(identifier ORDER BY last_seen, identifier) FILTER (WHERE identifier_type = '{kind}') AS {kind}"
        )
    };
    let ids = format!(
        "SELECT profile_id, {}, {}, {} FROM identities GROUP BY profile_id",
        pick("user_id"),
        pick("email"),
        pick("phone")
    );
    ctx.register_table("__ids", ctx.sql(&ids).await?.into_view())?;
    ctx.register_table("__traits", Arc::new(latest_traits(ctx).await?))?;

    let names: String = traits
        .iter()
        .map(|t| format!(", b.\"{}\"", t.name))
        .collect();
    let score = |name: &str, order: &str| {
        format!(
            "CASE WHEN b.order_count > 0 THEN CAST(ceil(cume_dist() OVER \
             (PARTITION BY b.order_count > 0 ORDER BY {order}) * 5) AS INT) END AS {name}"
        )
    };
    let query = format!(
        "SELECT b.profile_id, i.user_id, i.email, i.phone, b.first_seen, b.last_seen, \
         b.event_count, b.order_count, b.revenue, b.last_order_at, t.traits{names}, {}, {}, {} \
         FROM __base b LEFT JOIN __ids i ON i.profile_id = b.profile_id \
         LEFT JOIN __traits t ON t.profile_id = b.profile_id ORDER BY b.profile_id",
        score("rfm_recency", "b.last_order_at"),
        score("rfm_frequency", "b.order_count"),
        score("rfm_monetary", "b.revenue"),
    );
    let batches = ctx.sql(&query).await?.collect().await?;
    // Delta wants plain strings: no views in the stored schema.
    batches.into_iter().map(plain_strings).collect()
}

/// Latest non-null value of each trait key from `identify` calls (`traits`,
/// else `context.traits`), per profile, as JSON text.
async fn latest_traits(ctx: &SessionContext) -> Result<MemTable> {
    let df = ctx
        .sql(
            "SELECT profile_id, \"timestamp\", coalesce(traits, json_get_json(context, 'traits')) AS traits \
             FROM events_resolved WHERE type = 'identify' AND profile_id IS NOT NULL",
        )
        .await?;
    let mut stream = df.execute_stream().await?;
    let mut latest: HashMap<String, Map<String, Value>> = HashMap::new();
    let mut stamps: HashMap<(String, String), i64> = HashMap::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let profile = StrCol::new(batch.column(0).as_ref())?;
        let ts = batch
            .column(1)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        let traits = StrCol::new(batch.column(2).as_ref())?;
        for i in 0..batch.num_rows() {
            let (Some(p), Some(text)) = (profile.get(i), traits.get(i)) else {
                continue;
            };
            let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            let t = ts.value(i);
            let entry = latest.entry(p.to_string()).or_default();
            for (k, v) in obj {
                if v.is_null() {
                    continue;
                }
                let stamp = stamps.entry((p.to_string(), k.clone())).or_insert(i64::MIN);
                if t >= *stamp {
                    *stamp = t;
                    entry.insert(k, v);
                }
            }
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("profile_id", DataType::Utf8, true),
        Field::new("traits", DataType::Utf8, true),
    ]));
    let mut ids = StringBuilder::new();
    let mut json = StringBuilder::new();
    for (p, obj) in latest {
        ids.append_value(p);
        json.append_value(Value::Object(obj).to_string());
    }
    let columns: Vec<ArrayRef> = vec![Arc::new(ids.finish()), Arc::new(json.finish())];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(MemTable::try_new(schema, vec![vec![batch]])?)
}

/// Cast `Utf8View` columns to `Utf8` (the type the lake stores).
fn plain_strings(batch: RecordBatch) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        if matches!(f.data_type(), DataType::Utf8View | DataType::LargeUtf8) {
            fields.push(Field::new(f.name(), DataType::Utf8, true));
            columns.push(arrow::compute::cast(c, &DataType::Utf8)?);
        } else {
            fields.push(f.as_ref().clone().with_nullable(true));
            columns.push(c.clone());
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}
