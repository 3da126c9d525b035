//! The session analysts and tools query.

use std::num::NonZeroUsize;
use std::sync::{Arc, LazyLock};

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use keystone_lake::Lake;

use crate::join_order::BuildOnGroupedSide;
use crate::masking::MaskedSchema;
use crate::segments::SegmentsSchema;
use crate::{LakeSchema, Result};
use keystone_lake::SegmentDef;

/// Name of Keystone's catalog.
pub const CATALOG: &str = "keystone";
/// Schema of the lake tables.
pub const PUBLIC: &str = "public";
/// Schema of the segment views (one view per defined segment).
pub const SEGMENTS: &str = "segments";

/// How many of a query's largest memory consumers an out-of-memory error names.
const TOP_CONSUMERS: NonZeroUsize = NonZeroUsize::new(5).expect("not zero");

/// A SQL session over one lake.
///
/// ```no_run
/// # async fn f() -> keystone_engine::Result<()> {
/// let lake = keystone_lake::Lake::open("./keystone-lake")?;
/// let engine = keystone_engine::Engine::open(lake).await?;
/// let df = engine.sql("SELECT type, count(*) FROM events GROUP BY type").await?;
/// df.show().await?;
/// # Ok(()) }
/// ```
pub struct Engine {
    ctx: SessionContext,
    lake: Lake,
    /// The sessions served queries plan in: over the catalog, and over the
    /// catalog with personal data masked.
    served: SessionContext,
    served_masked: SessionContext,
    segments: Arc<SegmentsSchema>,
}

impl Engine {
    /// Open a session over `lake`.
    pub async fn open(lake: Lake) -> Result<Self> {
        let runtime = Arc::new(RuntimeEnv::default());
        let public = Arc::new(LakeSchema::try_new(lake.clone(), runtime.clone()).await?);
        let segments = Arc::new(SegmentsSchema::new(lake.clone(), runtime.clone()));
        segments.refresh().await?;
        let catalog = MemoryCatalogProvider::new();
        catalog.register_schema(PUBLIC, public.clone())?;
        catalog.register_schema(SEGMENTS, segments.clone())?;
        let masked = MemoryCatalogProvider::new();
        masked.register_schema(PUBLIC, Arc::new(MaskedSchema::new(public)))?;
        masked.register_schema(SEGMENTS, Arc::new(MaskedSchema::new(segments.clone())))?;
        let catalog: Arc<dyn CatalogProvider> = Arc::new(catalog);
        segments.set_catalog(Arc::downgrade(&catalog));
        let served = context_with(served_session_config()?, runtime.clone(), catalog.clone())?;
        let served_masked =
            context_with(served_session_config()?, runtime.clone(), Arc::new(masked))?;
        let ctx = build_context(runtime, catalog)?;
        Ok(Self {
            ctx,
            lake,
            served,
            served_masked,
            segments,
        })
    }

    /// The DataFusion session.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The lake this session reads.
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// The session a server plans its callers' queries in: over the same
    /// catalog, object stores and caches, with twice the partitions of a
    /// batch job, personal data masked if `masked` (see [`crate::masking`]).
    /// Built once and shared: building a session per query took 124–142 µs
    /// of each query (1 M-event lake). Run what it plans with
    /// [`Engine::task_context`], which gives the query its own memory limit.
    pub fn served_context(&self, masked: bool) -> SessionContext {
        if masked {
            self.served_masked.clone()
        } else {
            self.served.clone()
        }
    }

    /// What one query planned in `state` runs with: `state`'s functions and
    /// configuration, the server's caches (Parquet footers, listings) and
    /// spill files, and a memory pool of its own. With `memory_limit`,
    /// each operator that can spill (sorts, aggregations) is held to an
    /// even share of what the ones that cannot (hash join build sides) do
    /// not hold, and spills beyond it; those that cannot spill may take
    /// whatever is not reserved. The query fails when an operator cannot
    /// fit even after spilling; the error names the five largest consumers.
    pub fn task_context(
        &self,
        state: &SessionState,
        memory_limit: Option<usize>,
    ) -> Result<Arc<TaskContext>> {
        let shared = state.runtime_env();
        let mut builder = RuntimeEnvBuilder::new()
            .with_object_store_registry(shared.object_store_registry.clone());
        if let Some(limit) = memory_limit {
            // Fair, not greedy: with a greedy pool the first partitions' sorts
            // take all the memory and the last one's merge fails instead of
            // spilling (the sessions query at 10 M events under the default
            // 1 GiB).
            let pool = TrackConsumersPool::new(FairSpillPool::new(limit), TOP_CONSUMERS);
            builder = builder.with_memory_pool(Arc::new(pool));
        }
        let mut runtime = builder.build()?;
        runtime.cache_manager = shared.cache_manager.clone();
        runtime.disk_manager = shared.disk_manager.clone();
        Ok(Arc::new(
            TaskContext::from(state).with_runtime(Arc::new(runtime)),
        ))
    }

    /// Re-read the segment definitions (another process may have changed them).
    pub async fn refresh_segments(&self) -> Result<Vec<SegmentDef>> {
        self.segments.refresh().await
    }

    /// Re-read the segment definitions if the last read is older than
    /// `max_age` (servers: definitions change from other processes).
    pub async fn refresh_segments_if_older(&self, max_age: std::time::Duration) -> Result<()> {
        self.segments.refresh_if_older(max_age).await
    }

    /// Define a segment after checking it (see [`crate::segments::validate`]).
    pub async fn create_segment(&self, name: &str, sql: &str) -> Result<SegmentDef> {
        let mut defs = self.refresh_segments().await?;
        if defs.iter().any(|d| d.name == name) {
            return Err(crate::Error::Segment(format!(
                "segment {name} already exists: drop it first or pick another name"
            )));
        }
        let sql = sql.trim().trim_end_matches(';').trim();
        crate::segments::validate(self, name, sql).await?;
        let def = SegmentDef {
            name: name.to_string(),
            sql: sql.to_string(),
            created_at: chrono_now(),
        };
        defs.push(def.clone());
        self.lake.write_segments(defs).await?;
        self.refresh_segments().await?;
        Ok(def)
    }

    /// Remove a segment's definition; refused while another segment uses it.
    pub async fn drop_segment(&self, name: &str) -> Result<SegmentDef> {
        let defs = self.refresh_segments().await?;
        let Some(def) = defs.iter().find(|d| d.name == name).cloned() else {
            return Err(crate::Error::Segment(format!(
                "segment {name} does not exist (keystone segment list shows them)"
            )));
        };
        for other in defs.iter().filter(|d| d.name != name) {
            let tables = crate::segments::definition_tables(&other.sql).unwrap_or_default();
            if tables.iter().any(|(s, t)| s == SEGMENTS && t == name) {
                return Err(crate::Error::Segment(format!(
                    "segment {name} is used by segment {}: drop that one first",
                    other.name
                )));
            }
        }
        let rest = defs.into_iter().filter(|d| d.name != name).collect();
        self.lake.write_segments(rest).await?;
        self.refresh_segments().await?;
        Ok(def)
    }

    /// Plan a query.
    pub async fn sql(&self, query: &str) -> Result<DataFrame> {
        Ok(self.ctx.sql(query).await?)
    }

    /// Plan and start a query, streaming its results.
    pub async fn stream(&self, query: &str) -> Result<SendableRecordBatchStream> {
        Ok(self.sql(query).await?.execute_stream().await?)
    }

    /// Run a query and collect every batch (for small results).
    pub async fn collect(&self, query: &str) -> Result<Vec<arrow::array::RecordBatch>> {
        Ok(self.sql(query).await?.collect().await?)
    }
}

/// The variable that sets DataFusion's `target_partitions`.
const TARGET_PARTITIONS_VAR: &str = "DATAFUSION_EXECUTION_TARGET_PARTITIONS";

/// Plan partitions per core of a served query (Flight SQL), unless
/// [`TARGET_PARTITIONS_VAR`] says otherwise. Twice the cores lets one
/// partition compute while another waits for its file reads, and evens out
/// skewed partitions: the analyst query suite ran 6 % faster (geometric
/// mean, 1 M events, 2 cores; `benches/RESULTS.md`). Batch jobs (resolve,
/// segment materialisation, `keystone sql`) keep one partition per core,
/// which bounds their memory.
const SERVED_PARTITIONS_PER_CORE: usize = 2;

/// The configuration of every Keystone session: DataFusion's defaults, then
/// any `DATAFUSION_*` environment variable (DataFusion's own names, e.g.
/// `DATAFUSION_EXECUTION_TARGET_PARTITIONS=4`), so an operator can tune the
/// engine without a rebuild. Leaf-expression pushdown is off unless such a
/// variable turns it on: it hoists "cheap" field accesses below their node,
/// and the JSON functions declare themselves such, so `CASE WHEN type =
/// 'identify' THEN json_get_json(context, 'traits') END` would parse the
/// `context` of every event instead of the few the CASE selects (a fifth of
/// a profile build). The environment is read once per process; a value
/// that does not parse fails every session with the variable's name.
pub(crate) fn session_config() -> Result<SessionConfig> {
    static CONFIG: LazyLock<std::result::Result<SessionConfig, String>> =
        LazyLock::new(config_from_env);
    CONFIG
        .clone()
        .map_err(|e| DataFusionError::Configuration(e).into())
}

/// [`session_config`] with [`SERVED_PARTITIONS_PER_CORE`] partitions per
/// core unless [`TARGET_PARTITIONS_VAR`] set them, derived once per process.
fn served_session_config() -> Result<SessionConfig> {
    static CONFIG: LazyLock<std::result::Result<SessionConfig, String>> = LazyLock::new(|| {
        let config = config_from_env()?;
        if std::env::var_os(TARGET_PARTITIONS_VAR).is_some() {
            return Ok(config);
        }
        let partitions = config.target_partitions() * SERVED_PARTITIONS_PER_CORE;
        Ok(config.with_target_partitions(partitions))
    });
    CONFIG
        .clone()
        .map_err(|e| DataFusionError::Configuration(e).into())
}

fn config_from_env() -> std::result::Result<SessionConfig, String> {
    const LEAF_PUSHDOWN: &str = "datafusion.optimizer.enable_leaf_expression_pushdown";
    let mut config = SessionConfig::new();
    let mut leaf_pushdown_set = false;
    for entry in config.options().entries() {
        let var = entry.key.to_uppercase().replace('.', "_");
        if let Some(value) = std::env::var_os(&var) {
            config
                .options_mut()
                .set(&entry.key, &value.to_string_lossy())
                .map_err(|e| format!("environment variable {var}: {e}"))?;
            leaf_pushdown_set |= entry.key == LEAF_PUSHDOWN;
        }
    }
    if !leaf_pushdown_set {
        config
            .options_mut()
            .optimizer
            .enable_leaf_expression_pushdown = false;
    }
    Ok(config)
}

/// A session whose default catalog is `catalog`, with Keystone's functions.
pub(crate) fn build_context(
    runtime: Arc<RuntimeEnv>,
    catalog: Arc<dyn CatalogProvider>,
) -> Result<SessionContext> {
    context_with(session_config()?, runtime, catalog)
}

fn context_with(
    config: SessionConfig,
    runtime: Arc<RuntimeEnv>,
    catalog: Arc<dyn CatalogProvider>,
) -> Result<SessionContext> {
    let config = config
        .with_default_catalog_and_schema(CATALOG, PUBLIC)
        .with_create_default_catalog_and_schema(false)
        .with_information_schema(true);
    // DataFusion's physical optimizer rules with Keystone's: the join order
    // right after DataFusion chose it, `lag` last.
    let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
    let after_joins = rules
        .iter()
        .position(|r| r.name() == BuildOnGroupedSide::AFTER)
        .map_or(rules.len(), |at| at + 1);
    rules.insert(after_joins, Arc::new(BuildOnGroupedSide));
    rules.push(Arc::new(crate::lag::LagOverSortedInput));
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_physical_optimizer_rules(rules)
        .build();
    let mut ctx = SessionContext::new_with_state(state);
    ctx.register_catalog(CATALOG, catalog);
    datafusion_functions_json::register_all(&mut ctx)?;
    crate::bounded::register(&ctx);
    ctx.register_udaf(crate::udf::most_frequent_udaf());
    ctx.register_udaf(crate::udf::latest_traits_udaf());
    ctx.register_udaf(crate::udf::latest_consents_udaf());
    Ok(ctx)
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A served query plans with twice the partitions of a batch job, unless
    /// the operator set them; everything else of the session is the same.
    #[tokio::test]
    async fn served_sessions_plan_twice_the_partitions_of_batch_jobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = Lake::open(dir.path().to_str().expect("utf8")).expect("lake");
        let engine = Engine::open(lake).await.expect("engine");
        let batch = engine.context().copied_config();
        let served = engine.served_context(false).copied_config();
        let expected = if std::env::var_os(TARGET_PARTITIONS_VAR).is_some() {
            batch.target_partitions()
        } else {
            batch.target_partitions() * SERVED_PARTITIONS_PER_CORE
        };
        assert_eq!(served.target_partitions(), expected);
        assert_eq!(served.batch_size(), batch.batch_size());
        assert_eq!(
            served.options().catalog.default_catalog,
            batch.options().catalog.default_catalog
        );
        assert!(!served.options().optimizer.enable_leaf_expression_pushdown);
    }
}
