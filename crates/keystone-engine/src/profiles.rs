//! The `profiles` table and the `events_resolved` view.
//!
//! `events_resolved` is `events` joined to `identities` on the event's
//! resolving identifier (`identity_key`, see [`crate::udf`]). `profiles` is
//! built from it: activity counts, revenue, the latest value of each trait
//! from `identify` calls, the computed traits of the configuration, and RFM
//! scores.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;
use keystone_core::schema::events_schema;
use serde::{Deserialize, Serialize};

use crate::udf::IDENTITY_KEY_ARGS;
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
    "consents",
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

/// Build every profile, in one pass over `events_resolved`. `ctx` must have
/// `events_resolved`, `identities`, Keystone's functions (`most_frequent`,
/// `latest_traits`, `latest_consents`) and the JSON functions registered.
pub async fn build_profiles(
    ctx: &SessionContext,
    traits: &[ComputedTrait],
) -> Result<Vec<RecordBatch>> {
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
         max(\"timestamp\") FILTER (WHERE type = 'track' AND event = 'Order Completed') AS last_order_at, \
         latest_traits(CASE WHEN type = 'identify' THEN coalesce(traits, json_get_json(context, 'traits')) END, \"timestamp\") AS traits, \
         {consents} AS consents\
         {computed} FROM events_resolved WHERE profile_id IS NOT NULL GROUP BY profile_id",
        consents = crate::consent::current_consents_expr()
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
         b.event_count, b.order_count, b.revenue, b.last_order_at, b.traits, b.consents{names}, {}, {}, {} \
         FROM __base b LEFT JOIN __ids i ON i.profile_id = b.profile_id ORDER BY b.profile_id",
        score("rfm_recency", "b.last_order_at"),
        score("rfm_frequency", "b.order_count"),
        score("rfm_monetary", "b.revenue"),
    );
    let batches = ctx.sql(&query).await?.collect().await?;
    // Delta wants plain strings: no views in the stored schema.
    batches.into_iter().map(plain_strings).collect()
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
