//! The `profiles` table and the `events_resolved` view.
//!
//! `events_resolved` is `events` joined to `identities` on the event's
//! resolving identifier (`identity_key`, see [`crate::udf`]). `profiles` is
//! built from it: activity counts, revenue, the latest value of each trait
//! from `identify` calls, the computed traits of the configuration, and RFM
//! scores.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{filter_record_batch, not};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode, PhysicalGroupBy};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{
    ExecutionPlan, Partitioning, PhysicalExpr, collect, collect_partitioned,
};
use datafusion::prelude::SessionContext;
use keystone_core::schema::events_schema;
use serde::{Deserialize, Serialize};

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
    "consents",
    "rfm_recency",
    "rfm_frequency",
    "rfm_monetary",
];

/// SQL of `events_resolved` over tables `events` and `identities` and the
/// function `identity_key`.
pub fn events_resolved_sql() -> String {
    events_resolved_sql_over("events")
}

/// SQL of `events_resolved` over the events of table `events`.
pub fn events_resolved_sql_over(events: &str) -> String {
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
        "SELECT {}, i.profile_id FROM (SELECT *, identity_key({}) AS __key FROM {events}) e \
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

/// Where a profile build starts from.
pub enum ProfileInput {
    /// Every event: `events_resolved`.
    All,
    /// The aggregate states saved by the previous build (one row per profile
    /// it knew), plus the events of `events_resolved_new` (the files added
    /// since). `merged` maps each profile absorbed since then to its survivor.
    Incremental {
        states: Vec<RecordBatch>,
        merged: HashMap<String, String>,
    },
}

/// A built `profiles` table and the aggregate states it was finalised from.
pub struct BuiltProfiles {
    pub profiles: Vec<RecordBatch>,
    /// One row per profile: `profile_id` and the partial state of every
    /// aggregate of the build (DataFusion's own state layout).
    pub states: Vec<RecordBatch>,
    pub state_schema: SchemaRef,
}

/// What saved aggregate states are valid for: the aggregation (built-in
/// columns and computed traits) and the engine versions that wrote them.
pub fn state_fingerprint(traits: &[ComputedTrait]) -> String {
    format!(
        "{} | datafusion {} | keystone {}",
        base_sql("events_resolved", traits),
        datafusion::DATAFUSION_VERSION,
        env!("CARGO_PKG_VERSION")
    )
}

/// The aggregate part of a profile build over `table`.
fn base_sql(table: &str, traits: &[ComputedTrait]) -> String {
    let computed: String = traits
        .iter()
        .map(|t| format!(", {} AS \"{}\"", t.sql, t.name))
        .collect();
    format!(
        "SELECT profile_id, min(\"timestamp\") AS first_seen, max(\"timestamp\") AS last_seen, \
         count(*) AS event_count, \
         count(*) FILTER (WHERE type = 'track' AND event = 'Order Completed') AS order_count, \
         coalesce(sum(revenue), 0.0) AS revenue, \
         max(\"timestamp\") FILTER (WHERE type = 'track' AND event = 'Order Completed') AS last_order_at, \
         latest_traits(CASE WHEN type = 'identify' THEN coalesce(traits, json_get_json(context, 'traits')) END, \"timestamp\") AS traits, \
         {consents} AS consents\
         {computed} FROM {table} WHERE profile_id IS NOT NULL GROUP BY profile_id",
        consents = crate::consent::current_consents_expr()
    )
}

/// The parts of the plan's (first) aggregation over its raw input.
struct RawAggregate {
    /// The topmost aggregation node of the plan, replaced by the final phase.
    top: Arc<dyn ExecutionPlan>,
    group_by: PhysicalGroupBy,
    aggr: Vec<Arc<AggregateFunctionExpr>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    input: Arc<dyn ExecutionPlan>,
    input_schema: SchemaRef,
}

/// The first node at or under `from`, down a chain of single-child nodes,
/// that is an aggregation `pick` accepts (`what` names it in the error).
fn descend(
    from: &Arc<dyn ExecutionPlan>,
    what: &str,
    pick: impl Fn(&AggregateExec) -> bool,
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut at = from.clone();
    loop {
        if at.downcast_ref::<AggregateExec>().is_some_and(&pick) {
            return Ok(at);
        }
        let children = at.children();
        if children.len() != 1 {
            return Err(Error::Resolve(format!(
                "profile build: no {what} under {}",
                at.name()
            )));
        }
        let next = children[0].clone();
        at = next;
    }
}

/// Find the profile aggregation in `plan`: its top node, and the node that
/// reads the events (`Partial`, or `Single` when the planner fused them).
fn raw_aggregate(plan: &Arc<dyn ExecutionPlan>) -> Result<RawAggregate> {
    let top = descend(plan, "aggregation", |_| true)?;
    let raw = descend(&top, "partial aggregation", |a| {
        matches!(
            a.mode(),
            AggregateMode::Partial | AggregateMode::Single | AggregateMode::SinglePartitioned
        )
    })?;
    let agg = raw
        .downcast_ref::<AggregateExec>()
        .ok_or_else(|| Error::Resolve("profile build: lost the aggregation".into()))?;
    Ok(RawAggregate {
        group_by: agg.group_expr().clone(),
        aggr: agg.aggr_expr().to_vec(),
        filters: agg.filter_expr().to_vec(),
        input: agg.input().clone(),
        input_schema: agg.input_schema(),
        top,
    })
}

/// Give `batch` the layout `schema` (same types in the same order), or say
/// why it does not have it.
pub fn with_state_schema(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let found = batch.schema();
    let same = found.fields().len() == schema.fields().len()
        && found
            .fields()
            .iter()
            .zip(schema.fields())
            // Names embed the table read (`events_resolved_new`): what the
            // states mean is checked by `state_fingerprint`.
            .all(|(a, b)| a.data_type() == b.data_type());
    if !same {
        return Err(Error::Resolve(format!(
            "saved profile states have the layout {found}, the build needs {schema}"
        )));
    }
    Ok(RecordBatch::try_new(
        schema.clone(),
        batch.columns().to_vec(),
    )?)
}

/// `states` with the `profile_id` (first column) of absorbed profiles
/// replaced by their survivor's.
fn remap(states: Vec<RecordBatch>, merged: &HashMap<String, String>) -> Result<Vec<RecordBatch>> {
    if merged.is_empty() {
        return Ok(states);
    }
    states
        .into_iter()
        .map(|b| {
            let ids = crate::udf::StrCol::new(b.column(0).as_ref())?;
            let mut out =
                arrow::array::StringBuilder::with_capacity(b.num_rows(), b.num_rows() * 36);
            for i in 0..b.num_rows() {
                out.append_option(ids.get(i).map(|p| merged.get(p).map_or(p, |s| s.as_str())));
            }
            let column = arrow::compute::cast(&out.finish(), b.schema().field(0).data_type())?;
            let mut columns = b.columns().to_vec();
            columns[0] = column;
            Ok(RecordBatch::try_new(b.schema(), columns)?)
        })
        .collect()
}

/// Build every profile. `ctx` must have `events_resolved` (and for an
/// incremental build `events_resolved_new`), `identities`, Keystone's
/// functions (`most_frequent`, `latest_traits`, `latest_consents`) and the
/// JSON functions registered.
///
/// The aggregation runs in DataFusion's phases, kept apart: *partial* over
/// the events read, *partial-reduce* of those states (and, incremental, the
/// saved states of the previous build, absorbed profiles renamed to their
/// survivors) into one state per profile — returned, to be saved for the
/// next build — then *final* over them. Every aggregate, computed traits
/// included, is merged by its own state, so an incremental build reads only
/// new events. A computed trait whose filter uses `now()` is evaluated, in
/// the partial phase, at the time each event was first aggregated: the
/// caller rebuilds from all events regularly to refresh such windows.
pub async fn build_profiles(
    ctx: &SessionContext,
    traits: &[ComputedTrait],
    input: ProfileInput,
) -> Result<BuiltProfiles> {
    validate_traits(ctx, traits).await?;
    let table = match input {
        ProfileInput::All => "events_resolved",
        ProfileInput::Incremental { .. } => "events_resolved_new",
    };
    let df = ctx.sql(&base_sql(table, traits)).await?;
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let raw = raw_aggregate(&plan)?;
    let partitions = ctx.copied_config().target_partitions().max(1);
    let partial: Arc<dyn ExecutionPlan> = Arc::new(AggregateExec::try_new(
        AggregateMode::Partial,
        raw.group_by.clone(),
        raw.aggr.clone(),
        raw.filters.clone(),
        raw.input.clone(),
        raw.input_schema.clone(),
    )?);
    let state_schema = partial.schema();
    // `try_new` may rewrite aggregates (e.g. reverse an ordered one): the
    // later phases take them from the partial node, as DataFusion's planner does.
    let aggr = partial
        .downcast_ref::<AggregateExec>()
        .map(|a| a.aggr_expr().to_vec())
        .unwrap_or_else(|| raw.aggr.clone());
    let final_group = raw.group_by.as_final();
    let key = final_group.expr()[0].0.clone();
    // The partial-reduce phase: any number of states per profile in, one out.
    let reduce = |input: Arc<dyn ExecutionPlan>| -> Result<Arc<dyn ExecutionPlan>> {
        let repartition = Arc::new(RepartitionExec::try_new(
            input,
            Partitioning::Hash(vec![key.clone()], partitions),
        )?);
        Ok(Arc::new(AggregateExec::try_new(
            AggregateMode::PartialReduce,
            final_group.clone(),
            aggr.clone(),
            vec![None; aggr.len()],
            repartition,
            raw.input_schema.clone(),
        )?))
    };
    let reduced: Vec<Vec<RecordBatch>> = match input {
        ProfileInput::All => collect_partitioned(reduce(partial)?, task.clone()).await?,
        ProfileInput::Incremental { states, merged } => {
            // The layout is checked before the ids are read.
            let states = states
                .iter()
                .map(|b| with_state_schema(b, &state_schema))
                .collect::<Result<Vec<_>>>()?;
            let states = remap(states, &merged)?;
            let fresh = collect(partial, task.clone()).await?;
            // Only the profiles with new events or merges are reduced; the
            // saved state of every other profile is already its one state.
            let mut touched: HashSet<&str> = merged.values().map(String::as_str).collect();
            for b in &fresh {
                let ids = StrCol::new(b.column(0).as_ref())?;
                touched.extend((0..b.num_rows()).filter_map(|i| ids.get(i)));
            }
            let (mut kept, mut changed) = (Vec::new(), Vec::new());
            for b in &states {
                let ids = StrCol::new(b.column(0).as_ref())?;
                let hit: BooleanArray = (0..b.num_rows())
                    .map(|i| Some(ids.get(i).is_some_and(|p| touched.contains(p))))
                    .collect();
                match hit.true_count() {
                    0 => kept.push(b.clone()),
                    n if n == b.num_rows() => changed.push(b.clone()),
                    _ => {
                        changed.push(filter_record_batch(b, &hit)?);
                        kept.push(filter_record_batch(b, &not(&hit)?)?);
                    }
                }
            }
            changed.extend(fresh.iter().cloned());
            let source = MemorySourceConfig::try_new_exec(&[changed], state_schema.clone(), None)?;
            let mut parts = collect_partitioned(reduce(source)?, task.clone()).await?;
            // The kept states are spread over the partitions, so the final
            // phase runs on every core.
            let n = parts.len().max(1);
            parts.resize_with(n, Vec::new);
            for (i, b) in kept.into_iter().enumerate() {
                parts[i % n].push(b);
            }
            parts
        }
    };
    let states: Vec<RecordBatch> = reduced.iter().flatten().cloned().collect();

    // The final phase reads the states (each profile once, so any split of
    // them is a valid partitioning) in place of the plan's own aggregation.
    let finals = Arc::new(AggregateExec::try_new(
        AggregateMode::FinalPartitioned,
        final_group.clone(),
        aggr.clone(),
        vec![None; aggr.len()],
        MemorySourceConfig::try_new_exec(&reduced, state_schema.clone(), None)?,
        raw.input_schema.clone(),
    )?);
    if finals.schema().fields().len() != raw.top.schema().fields().len() {
        return Err(Error::Resolve(format!(
            "profile build: the final phase gives {}, the plan expects {}",
            finals.schema(),
            raw.top.schema()
        )));
    }
    let top = raw.top.clone();
    let plan = plan
        .transform_down(|node| {
            Ok(if Arc::ptr_eq(&node, &top) {
                Transformed::new(
                    finals.clone() as Arc<dyn ExecutionPlan>,
                    true,
                    TreeNodeRecursion::Jump,
                )
            } else {
                Transformed::no(node)
            })
        })?
        .data;
    let base = collect(plan.clone(), task).await?;
    let base = arrow::compute::concat_batches(&plan.schema(), &base)?;
    let identities = ctx.table("identities").await?.collect().await?;
    let profiles = finish(&base, &identities, traits)?;
    Ok(BuiltProfiles {
        profiles,
        states,
        state_schema,
    })
}

/// Rows of `profiles` written per batch.
const PROFILE_BATCH_ROWS: usize = 64 * 1024;

/// The `profiles` table from the finalised aggregates `base` (one row per
/// profile) and the `identities` rows: sorted by `profile_id`, with each
/// profile's latest `user_id`, `email` and `phone`, and its RFM scores.
fn finish(
    base: &RecordBatch,
    identities: &[RecordBatch],
    traits: &[ComputedTrait],
) -> Result<Vec<RecordBatch>> {
    let column = |name: &str| -> Result<&arrow::array::ArrayRef> {
        base.column_by_name(name)
            .ok_or_else(|| Error::Resolve(format!("profile build: no column {name}")))
    };
    let order = arrow::compute::sort_to_indices(column("profile_id")?, None, None)?;
    let sorted = arrow::compute::take_record_batch(base, &order)?;
    let base = &sorted;
    let column = |name: &str| -> Result<ArrayRef> {
        base.column_by_name(name)
            .cloned()
            .ok_or_else(|| Error::Resolve(format!("profile build: no column {name}")))
    };
    let ids = latest_identifiers(identities, &StrCol::new(column("profile_id")?.as_ref())?)?;
    let orders = arrow::compute::cast(&column("order_count")?, &DataType::Int64)?;
    let orders = orders.as_primitive::<arrow::datatypes::Int64Type>();
    let buyers: Vec<u32> = (0..base.num_rows() as u32)
        .filter(|&i| orders.is_valid(i as usize) && orders.value(i as usize) > 0)
        .collect();

    let mut names = vec!["profile_id", "user_id", "email", "phone"];
    let mut columns = vec![column("profile_id")?];
    columns.extend(ids);
    // The aggregates, in `PROFILE_COLUMNS` order, then the computed traits;
    // the RFM scores come last.
    let aggregates = PROFILE_COLUMNS
        .iter()
        .copied()
        .filter(|c| !names.contains(c) && !c.starts_with("rfm_"))
        .collect::<Vec<_>>();
    for name in aggregates
        .into_iter()
        .chain(traits.iter().map(|t| t.name.as_str()))
    {
        names.push(name);
        columns.push(column(name)?);
    }
    for (name, by) in [
        ("rfm_recency", "last_order_at"),
        ("rfm_frequency", "order_count"),
        ("rfm_monetary", "revenue"),
    ] {
        names.push(name);
        columns.push(Arc::new(quintiles(&column(by)?, &buyers)?));
    }
    let fields: Vec<Field> = names
        .iter()
        .zip(&columns)
        .map(|(n, c)| Field::new(*n, c.data_type().clone(), true))
        .collect();
    let all = plain_strings(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)?;
    Ok((0..all.num_rows())
        .step_by(PROFILE_BATCH_ROWS)
        .map(|at| all.slice(at, PROFILE_BATCH_ROWS.min(all.num_rows() - at)))
        .collect())
}

/// Per row, the RFM score of `values` among the `buyers` rows (others
/// null): `ceil(cume_dist() * 5)` over the buyers ordered by the value
/// ascending, nulls last, equal values sharing the score of the last of them
/// (SQL's `cume_dist() OVER (ORDER BY value)`).
fn quintiles(values: &ArrayRef, buyers: &[u32]) -> Result<arrow::array::Int32Array> {
    let mut scores: Vec<Option<i32>> = vec![None; values.len()];
    let taken = arrow::compute::take(values, &UInt32Array::from(buyers.to_vec()), None)?;
    let options = arrow::compute::SortOptions {
        descending: false,
        nulls_first: false,
    };
    let order = arrow::compute::sort_to_indices(&taken, Some(options), None)?;
    let cmp = arrow::array::make_comparator(taken.as_ref(), taken.as_ref(), options)?;
    let n = order.len();
    let mut start = 0;
    while start < n {
        let first = order.value(start) as usize;
        let mut end = start + 1;
        while end < n && cmp(first, order.value(end) as usize).is_eq() {
            end += 1;
        }
        let score = ((end as f64 / n as f64) * 5.0).ceil() as i32;
        for k in start..end {
            scores[buyers[order.value(k) as usize] as usize] = Some(score);
        }
        start = end;
    }
    Ok(scores.into_iter().collect())
}

/// For each of `profiles`, its most recently seen `user_id`, `email` and
/// `phone` in the `identities` rows (latest `last_seen`; ties: the larger
/// identifier), in one pass: a 3.5 M-row SQL aggregation with ordered
/// `last_value` cost seconds.
fn latest_identifiers(identities: &[RecordBatch], profiles: &StrCol<'_>) -> Result<Vec<ArrayRef>> {
    use arrow::array::StringBuilder;
    use arrow::datatypes::TimestampMicrosecondType;
    const KINDS: [&str; 3] = ["user_id", "email", "phone"];
    // profile → for each kind, (last_seen, identifier) of the best so far.
    type Best<'a> = [Option<(i64, &'a str)>; 3];
    let mut best: hashbrown::HashMap<&str, Best<'_>> = hashbrown::HashMap::new();
    for b in identities {
        let col = |name: &str| -> Result<StrCol<'_>> {
            let c = b
                .column_by_name(name)
                .ok_or_else(|| Error::Resolve(format!("identities has no column {name}")))?;
            Ok(StrCol::new(c.as_ref())?)
        };
        let last = b
            .column_by_name("last_seen")
            .ok_or_else(|| Error::Resolve("identities has no column last_seen".into()))?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| Error::Resolve("identities.last_seen is not a timestamp".into()))?;
        let (kind, value, profile) = (
            col("identifier_type")?,
            col("identifier")?,
            col("profile_id")?,
        );
        for i in 0..last.len() {
            let (Some(k), Some(v), Some(p)) = (kind.get(i), value.get(i), profile.get(i)) else {
                continue;
            };
            let Some(slot) = KINDS.iter().position(|&x| x == k) else {
                continue;
            };
            // `last_value(... ORDER BY last_seen, identifier)` ignores no row:
            // ASC NULLS LAST puts a NULL last_seen last, so it wins.
            let seen = if last.is_valid(i) {
                last.value(i)
            } else {
                i64::MAX
            };
            let entry = best.entry(p).or_default();
            if entry[slot].is_none_or(|(t, x)| (seen, v) > (t, x)) {
                entry[slot] = Some((seen, v));
            }
        }
    }
    let n = profiles.len();
    let mut out: Vec<StringBuilder> = (0..3)
        .map(|_| StringBuilder::with_capacity(n, n * 24))
        .collect();
    for i in 0..n {
        let found = profiles.get(i).and_then(|p| best.get(p));
        for (slot, b) in out.iter_mut().enumerate() {
            b.append_option(found.and_then(|k| k[slot]).map(|(_, v)| v));
        }
    }
    Ok(out
        .iter_mut()
        .map(|b| Arc::new(b.finish()) as ArrayRef)
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array};
    use datafusion::datasource::MemTable;

    /// `quintiles` gives what the SQL it replaced gives: `cume_dist()` over
    /// the buyers, ties sharing a score, nulls last, others null.
    #[tokio::test]
    async fn quintiles_match_sql_cume_dist() {
        let n = 3000usize;
        let mut next = crate::test_sequence(7);
        let orders: Int64Array = (0..n).map(|_| Some(next(4) as i64)).collect();
        // Few distinct values, so ties are common; some nulls.
        let money: Float64Array = (0..n)
            .map(|_| (next(10) != 0).then(|| next(40) as f64 * 2.5))
            .collect();
        let days: Int64Array = (0..n)
            .map(|_| (next(10) != 0).then(|| next(25) as i64))
            .collect();
        let row: Int64Array = (0..n as i64).map(Some).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int64, false),
            Field::new("order_count", DataType::Int64, false),
            Field::new("money", DataType::Float64, true),
            Field::new("days", DataType::Int64, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(row),
            Arc::new(orders.clone()),
            Arc::new(money.clone()),
            Arc::new(days.clone()),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        let ctx = SessionContext::new();
        ctx.register_table(
            "t",
            Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap()),
        )
        .unwrap();
        let buyers: Vec<u32> = (0..n as u32)
            .filter(|&i| orders.value(i as usize) > 0)
            .collect();
        for (column, values) in [
            ("money", Arc::new(money) as ArrayRef),
            ("days", Arc::new(days) as ArrayRef),
        ] {
            let sql = format!(
                "SELECT CASE WHEN order_count > 0 THEN CAST(ceil(cume_dist() OVER \
                 (PARTITION BY order_count > 0 ORDER BY {column}) * 5) AS INT) END AS s \
                 FROM t ORDER BY i"
            );
            let got = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            let expected: Vec<Option<i32>> = got
                .iter()
                .flat_map(|b| {
                    b.column(0)
                        .as_primitive::<arrow::datatypes::Int32Type>()
                        .iter()
                        .collect::<Vec<_>>()
                })
                .collect();
            let ours: Vec<Option<i32>> = quintiles(&values, &buyers).unwrap().iter().collect();
            assert_eq!(ours, expected, "{column}");
            assert!(ours.contains(&Some(1)) && ours.contains(&Some(5)) && ours.contains(&None));
        }
    }
}
