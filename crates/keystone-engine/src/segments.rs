//! `keystone.segments`: one view per segment definition, whose rows are the
//! profiles in the segment now (their `profiles` columns).
//!
//! ```text
//!  segments.vip  =  SELECT p.* FROM keystone.public.profiles p
//!                   WHERE p.profile_id IN (SELECT profile_id FROM (<definition>))
//! ```
//!
//! Definitions live in the lake (`_keystone/segments.json`): created and
//! dropped with `keystone segment create|drop`, seen by every session.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock, Weak};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::TableReference;
use datafusion::datasource::ViewTable;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;
use keystone_lake::{Lake, SegmentDef, check_segment_name};

use crate::engine::{CATALOG, PUBLIC, SEGMENTS, build_context};
use crate::{Error, Result};

/// The `segments` schema.
#[derive(Debug)]
pub struct SegmentsSchema {
    lake: Lake,
    runtime: Arc<RuntimeEnv>,
    catalog: OnceLock<Weak<dyn CatalogProvider>>,
    defs: RwLock<HashMap<String, SegmentDef>>,
    loaded: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The SQL of the view of a segment defined by `definition`.
pub fn view_sql(definition: &str) -> String {
    format!(
        "SELECT p.* FROM {CATALOG}.{PUBLIC}.profiles p WHERE p.profile_id IN (SELECT profile_id FROM (\n{definition}\n) AS segment_definition)"
    )
}

impl SegmentsSchema {
    /// The schema over `lake`'s definitions (loaded by [`Self::refresh`]).
    pub fn new(lake: Lake, runtime: Arc<RuntimeEnv>) -> Self {
        Self {
            lake,
            runtime,
            catalog: OnceLock::new(),
            defs: RwLock::new(HashMap::new()),
            loaded: std::sync::Mutex::new(None),
        }
    }

    /// The catalog the views are planned in (set once, after registration).
    pub fn set_catalog(&self, catalog: Weak<dyn CatalogProvider>) {
        let _ = self.catalog.set(catalog);
    }

    /// Re-read the definitions when the last read is older than `max_age`
    /// (a server calls this before each query).
    pub async fn refresh_if_older(&self, max_age: std::time::Duration) -> Result<()> {
        let fresh = self
            .loaded
            .lock()
            .ok()
            .and_then(|l| *l)
            .is_some_and(|at| at.elapsed() < max_age);
        if !fresh {
            self.refresh().await?;
        }
        Ok(())
    }

    /// Re-read the definitions from the lake.
    pub async fn refresh(&self) -> Result<Vec<SegmentDef>> {
        let defs = self.lake.segments().await?;
        if let Ok(mut loaded) = self.loaded.lock() {
            *loaded = Some(std::time::Instant::now());
        }
        if let Ok(mut map) = self.defs.write() {
            *map = defs.iter().map(|d| (d.name.clone(), d.clone())).collect();
        }
        Ok(defs)
    }

    fn def(&self, name: &str) -> Option<SegmentDef> {
        self.defs.read().ok()?.get(name).cloned()
    }

    async fn view(&self, definition: &str) -> DfResult<Arc<dyn TableProvider>> {
        let catalog = self
            .catalog
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| DataFusionError::Internal("segments: catalog is gone".into()))?;
        let ctx = build_context(self.runtime.clone(), catalog)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let sql = view_sql(definition);
        let plan = ctx.sql(&sql).await?.into_unoptimized_plan();
        Ok(Arc::new(ViewTable::new(plan, Some(sql))))
    }
}

#[async_trait]
impl SchemaProvider for SegmentsSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .defs
            .read()
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        match self.def(name) {
            Some(def) => Ok(Some(self.view(&def.sql).await.map_err(|e| {
                e.context(format!("segment {name} (definition: {})", def.sql))
            })?)),
            None => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.def(name).is_some()
    }
}

/// The Keystone tables a segment definition reads: `(schema, table)`.
/// Refuses anything but one read-only query.
pub fn definition_tables(sql: &str) -> Result<Vec<(String, String)>> {
    let bad = |m: String| Error::Segment(m);
    let mut statements =
        DFParser::parse_sql(sql).map_err(|e| bad(format!("the definition does not parse: {e}")))?;
    if statements.len() != 1 {
        return Err(bad(format!(
            "the definition must be one SELECT query (got {} statements)",
            statements.len()
        )));
    }
    let Some(statement) = statements.pop_front() else {
        return Err(bad("the definition is empty".into()));
    };
    let is_query = matches!(&statement, DfStatement::Statement(s) if matches!(s.as_ref(), Statement::Query(_)));
    if !is_query {
        return Err(bad("the definition must be a SELECT query".into()));
    }
    let (references, _) = datafusion::sql::resolve::resolve_table_references(&statement, true)
        .map_err(|e| bad(e.to_string()))?;
    references
        .into_iter()
        .map(|r: TableReference| {
            let shown = r.to_string();
            let resolved = r.resolve(CATALOG, PUBLIC);
            if resolved.catalog.as_ref() != CATALOG
                || ![PUBLIC, SEGMENTS].contains(&resolved.schema.as_ref())
            {
                return Err(bad(format!(
                    "the definition reads {shown}, which is not a Keystone table (public.* or segments.*)"
                )));
            }
            Ok((resolved.schema.to_string(), resolved.table.to_string()))
        })
        .collect()
}

/// Check a new segment: its name, that it reads only Keystone tables that
/// exist, and that it plans and returns a `profile_id` column.
pub async fn validate(engine: &crate::Engine, name: &str, sql: &str) -> Result<()> {
    check_segment_name(name).map_err(Error::Segment)?;
    let tables = definition_tables(sql)?;
    let ctx = engine.context();
    for (schema, table) in &tables {
        let exists = match ctx.catalog(CATALOG).and_then(|c| c.schema(schema)) {
            Some(s) => s.table(table).await?.is_some(),
            None => false,
        };
        if !exists {
            return Err(Error::Segment(format!(
                "the definition reads {schema}.{table}, which does not exist{}",
                if schema == PUBLIC && (table == "profiles" || table == "identities") {
                    " yet: run `keystone resolve` first"
                } else {
                    ""
                }
            )));
        }
    }
    let df = ctx
        .sql(sql)
        .await
        .map_err(|e| Error::Segment(format!("the definition does not plan: {e}")))?;
    match df.schema().field_with_unqualified_name("profile_id") {
        Ok(f)
            if f.data_type().is_null()
                || matches!(
                    f.data_type(),
                    arrow::datatypes::DataType::Utf8
                        | arrow::datatypes::DataType::Utf8View
                        | arrow::datatypes::DataType::LargeUtf8
                ) => {}
        Ok(f) => {
            return Err(Error::Segment(format!(
                "profile_id must be text (got {})",
                f.data_type()
            )));
        }
        Err(_) => {
            return Err(Error::Segment(format!(
                "the definition must return a profile_id column (it returns: {})",
                df.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    ctx.sql(&view_sql(sql))
        .await
        .map_err(|e| Error::Segment(format!("the segment view does not plan: {e}")))?;
    Ok(())
}
