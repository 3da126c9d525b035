//! `keystone.public`: the lake's tables as a DataFusion schema.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex as StdMutex};

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::runtime_env::RuntimeEnv;
use keystone_lake::deltalake::DeltaTable;
use keystone_lake::deltalake::delta_datafusion::engine::AsObjectStoreUrl;
use keystone_lake::{Lake, TABLES};
use tokio::sync::Mutex;

use datafusion::datasource::ViewTable;
use datafusion::prelude::SessionContext;

use crate::bloom::{BLOOM_CACHE_BYTES, BloomCache};
use crate::consent::{CONSENTS, consents_sql};
use crate::profiles::events_resolved_sql;
use crate::resolve::ResolveState;
use crate::scan::LakeTable;
use crate::udf::identity_key_udf;
use keystone_identity::Rules;

/// A view and what it was planned from.
type Cached<K> = (K, Arc<dyn TableProvider>);

/// The view of every event with its profile.
pub const EVENTS_RESOLVED: &str = "events_resolved";

/// The lake's tables, each read at its latest committed version when a query
/// names it: a query never sees a half-written ingest, and always sees every
/// finished one.
#[derive(Debug)]
pub struct LakeSchema {
    lake: Lake,
    runtime: Arc<RuntimeEnv>,
    /// Tables known to exist (so `SHOW TABLES` lists them).
    known: StdMutex<BTreeSet<String>>,
    /// Loaded tables, brought up to date at each use.
    cache: Mutex<HashMap<String, DeltaTable>>,
    /// The provider of each table's latest version seen, reused by every
    /// query until the next commit (see [`crate::scan`]).
    providers: Mutex<HashMap<String, TableVersion>>,
    /// The views over `events` and `identities`, with what they were
    /// planned from.
    views: Mutex<HashMap<String, Cached<ViewKey>>>,
    /// The Bloom filters queries read, shared by every table and version.
    blooms: Arc<BloomCache>,
}

/// The provider of one version of a table: Keystone's scan (kept apart too,
/// so the next version reuses its files' statistics) or deltalake's.
#[derive(Debug)]
struct TableVersion {
    version: Option<u64>,
    provider: Arc<dyn TableProvider>,
    lake: Option<Arc<LakeTable>>,
}

/// What a view over `events` and `identities` depends on.
#[derive(Debug, PartialEq)]
struct ViewKey {
    events: Option<u64>,
    identities: Option<u64>,
    rules: Rules,
}

impl LakeSchema {
    /// A schema over `lake`, registering its object store in `runtime`.
    pub async fn try_new(lake: Lake, runtime: Arc<RuntimeEnv>) -> keystone_lake::Result<Self> {
        let schema = Self {
            lake,
            runtime,
            known: StdMutex::new(BTreeSet::new()),
            cache: Mutex::new(HashMap::new()),
            providers: Mutex::new(HashMap::new()),
            views: Mutex::new(HashMap::new()),
            blooms: Arc::new(BloomCache::new(BLOOM_CACHE_BYTES)),
        };
        for spec in TABLES {
            // Loading registers the table as known when it exists.
            schema.load_latest(spec.name).await?;
        }
        Ok(schema)
    }

    fn is_lake_table(name: &str) -> bool {
        TABLES.iter().any(|t| t.name == name)
    }

    /// A view built over the latest `events` and `identities` with the rules
    /// of the last `keystone resolve` (`None` before the first):
    /// `events_resolved`, or `consents` over it. Planned once for each
    /// versions-and-rules triple and reused until one of them changes (the
    /// planning took 4.5 ms of each query on `events_resolved`, 10 ms on
    /// `consents`).
    async fn resolved_view(
        &self,
        name: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        let ext = |e: keystone_lake::Error| DataFusionError::External(Box::new(e));
        let (Some(events), Some(identities)) = (
            self.load_latest("events").await.map_err(ext)?,
            self.load_latest("identities").await.map_err(ext)?,
        ) else {
            return Ok(None);
        };
        let rules = ResolveState::load(&self.lake)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map(|s| s.rules)
            .unwrap_or_default();
        let key = ViewKey {
            events: events.version(),
            identities: identities.version(),
            rules,
        };
        let mut views = self.views.lock().await;
        if let Some((k, view)) = views.get(name)
            && *k == key
        {
            return Ok(Some(view.clone()));
        }
        let mut ctx = SessionContext::new();
        ctx.register_table("events", self.provider("events", &events).await?)?;
        ctx.register_table(
            "identities",
            self.provider("identities", &identities).await?,
        )?;
        ctx.register_udf(identity_key_udf(key.rules.clone()));
        let mut sql = events_resolved_sql();
        if name == CONSENTS {
            datafusion_functions_json::register_all(&mut ctx)?;
            ctx.register_table(EVENTS_RESOLVED, ctx.sql(&sql).await?.into_view())?;
            sql = consents_sql();
        }
        let plan = ctx.sql(&sql).await?.into_unoptimized_plan();
        let view: Arc<dyn TableProvider> = Arc::new(ViewTable::new(plan, Some(sql)));
        views.insert(name.to_string(), (key, view.clone()));
        Ok(Some(view))
    }

    /// The provider of `table` (the latest version of `name`): the one
    /// built for this version if a query already asked, else a new one —
    /// Keystone's Parquet scan where it can read the table, deltalake's
    /// provider otherwise.
    async fn provider(
        &self,
        name: &str,
        table: &DeltaTable,
    ) -> Result<Arc<dyn TableProvider>, DataFusionError> {
        let version = table.version();
        let mut providers = self.providers.lock().await;
        let previous = providers.get(name);
        if let Some(p) = previous
            && p.version == version
        {
            return Ok(p.provider.clone());
        }
        let delta = table
            .table_provider()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let previous_lake = previous.and_then(|p| p.lake.as_deref());
        let lake = LakeTable::try_new(
            table,
            delta.schema(),
            &self.runtime,
            previous_lake,
            self.blooms.clone(),
        )
        .await
        .map(Arc::new);
        let provider: Arc<dyn TableProvider> = match &lake {
            Some(lake) => lake.clone(),
            None => delta,
        };
        providers.insert(
            name.to_string(),
            TableVersion {
                version,
                provider: provider.clone(),
                lake,
            },
        );
        Ok(provider)
    }

    fn mark_known(&self, name: &str) {
        if let Ok(mut known) = self.known.lock() {
            known.insert(name.to_string());
        }
    }

    async fn load_latest(&self, name: &str) -> keystone_lake::Result<Option<DeltaTable>> {
        let mut cache = self.cache.lock().await;
        if let Some(table) = cache.get_mut(name) {
            keystone_lake::refresh_table(table)
                .await
                .map_err(|e| keystone_lake::Error::delta(name, e))?;
            return Ok(Some(table.clone()));
        }
        let Some(table) = self.lake.load_named(name).await? else {
            return Ok(None);
        };
        let url = table.log_store().root_url().as_object_store_url();
        if self.runtime.object_store(&url).is_err() {
            self.runtime
                .register_object_store(url.as_ref(), table.log_store().root_object_store(None));
        }
        self.mark_known(name);
        cache.insert(name.to_string(), table.clone());
        Ok(Some(table))
    }
}

#[async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .known
            .lock()
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default();
        if names.iter().any(|n| n == "identities") && names.iter().any(|n| n == "events") {
            names.push(EVENTS_RESOLVED.into());
            names.push(CONSENTS.into());
            names.sort();
        }
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if name == EVENTS_RESOLVED || name == CONSENTS {
            return self.resolved_view(name).await;
        }
        if !Self::is_lake_table(name) {
            return Ok(None);
        }
        let Some(table) = self
            .load_latest(name)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
        else {
            // `quarantine` is created by the first rejected row: before it,
            // a lake with no bad input has an empty one, not a missing one.
            if name == keystone_lake::QUARANTINE.name {
                let schema = (keystone_lake::QUARANTINE.schema)();
                return Ok(Some(Arc::new(
                    datafusion::datasource::empty::EmptyTable::new(schema),
                )));
            }
            return Ok(None);
        };
        Ok(Some(self.provider(name, &table).await?))
    }

    fn table_exist(&self, name: &str) -> bool {
        Self::is_lake_table(name) || name == EVENTS_RESOLVED || name == CONSENTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest_fixture as ingest;
    use crate::resolve::{ResolveOptions, resolve};

    async fn count(schema: &LakeSchema, table: &str) -> (Arc<dyn TableProvider>, usize) {
        let provider = schema.table(table).await.expect("table").expect("exists");
        let ctx = SessionContext::new();
        let batches = ctx
            .read_table(provider.clone())
            .expect("read")
            .collect()
            .await
            .expect("collect");
        (provider, batches.iter().map(|b| b.num_rows()).sum())
    }

    /// A table's provider and the views over it are built once per version
    /// and reused by later queries; a new commit is seen by the next query.
    #[tokio::test]
    async fn providers_and_views_are_rebuilt_only_for_a_new_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = Lake::open(dir.path().to_str().expect("utf8")).expect("lake");
        ingest(&lake, "shop.ndjson").await;
        resolve(&lake, &ResolveOptions::default(), &mut |_| {})
            .await
            .expect("resolve");
        let schema = LakeSchema::try_new(lake.clone(), Arc::new(RuntimeEnv::default()))
            .await
            .expect("schema");

        let (events, n) = count(&schema, "events").await;
        let (view, m) = count(&schema, EVENTS_RESOLVED).await;
        assert_eq!(n, m);
        let (events_again, _) = count(&schema, "events").await;
        let (view_again, _) = count(&schema, EVENTS_RESOLVED).await;
        assert!(Arc::ptr_eq(&events, &events_again));
        assert!(Arc::ptr_eq(&view, &view_again));

        ingest(&lake, "store.csv").await;
        let (events_new, n_new) = count(&schema, "events").await;
        let (view_new, m_new) = count(&schema, EVENTS_RESOLVED).await;
        assert!(
            n_new > n,
            "{n_new} events after the second ingest, {n} before"
        );
        assert_eq!(n_new, m_new);
        assert!(!Arc::ptr_eq(&events, &events_new));
        assert!(!Arc::ptr_eq(&view, &view_new));

        // Other rules saved (as a resolve run with other rules would, before
        // it rewrites `identities`) re-plan the view, though no table moved.
        let mut state = ResolveState::load(&lake)
            .await
            .expect("state")
            .expect("saved");
        state.rules.blocked.push("nobody@example.com".into());
        lake.write_state(
            crate::resolve::RESOLVE_STATE,
            serde_json::to_vec(&state).expect("json"),
        )
        .await
        .expect("write state");
        let (view_rules, _) = count(&schema, EVENTS_RESOLVED).await;
        assert!(!Arc::ptr_eq(&view_new, &view_rules));
    }

    /// Commits are seen by the next query even when an erasure's log
    /// cleanup removed the log entries after the version the schema holds
    /// (only the checkpoint then tells that the table moved on).
    #[tokio::test]
    async fn commits_whose_log_entries_were_cleaned_up_are_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = Lake::open(dir.path().to_str().expect("utf8")).expect("lake");
        ingest(&lake, "shop.ndjson").await;
        let schema = LakeSchema::try_new(lake.clone(), Arc::new(RuntimeEnv::default()))
            .await
            .expect("schema");
        let (_, before) = count(&schema, "events").await;
        let held = schema
            .load_latest("events")
            .await
            .expect("load")
            .expect("exists");
        let held = held.version().expect("version");

        // What `keystone forget` does: new rows, a delete, the history erased.
        ingest(&lake, "store.csv").await;
        let spec = TABLES.iter().find(|t| t.name == "events").expect("spec");
        let deleted = lake
            .delete_where(spec, "anonymous_id = 'anon-1'")
            .await
            .expect("delete");
        assert!(deleted > 0);
        lake.erase_history(spec).await.expect("erase history");
        let next = dir
            .path()
            .join(format!("events/_delta_log/{:020}.json", held + 1));
        assert!(!next.exists(), "the cleanup left {}", next.display());

        let fresh = LakeSchema::try_new(lake.clone(), Arc::new(RuntimeEnv::default()))
            .await
            .expect("schema");
        let (_, expected) = count(&fresh, "events").await;
        let (_, after) = count(&schema, "events").await;
        assert_ne!(expected, before);
        assert_eq!(after, expected);
    }
}
