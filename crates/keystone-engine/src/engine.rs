//! The session analysts and tools query.

use std::sync::Arc;

use datafusion::catalog::{CatalogProvider, MemoryCatalogProvider};
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use keystone_lake::Lake;

use crate::{LakeSchema, Result};

/// Name of Keystone's catalog.
pub const CATALOG: &str = "keystone";
/// Schema of the lake tables.
pub const PUBLIC: &str = "public";

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
}

impl Engine {
    /// Open a session over `lake`.
    pub async fn open(lake: Lake) -> Result<Self> {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, PUBLIC)
            .with_create_default_catalog_and_schema(false)
            .with_information_schema(true);
        let mut ctx = SessionContext::new_with_config(config);
        let schema = LakeSchema::try_new(lake.clone(), ctx.runtime_env()).await?;
        let catalog = MemoryCatalogProvider::new();
        catalog.register_schema(PUBLIC, Arc::new(schema))?;
        ctx.register_catalog(CATALOG, Arc::new(catalog));
        datafusion_functions_json::register_all(&mut ctx)?;
        ctx.register_udaf(crate::udf::most_frequent_udaf());
        ctx.register_udaf(crate::udf::latest_traits_udaf());
        Ok(Self { ctx, lake })
    }

    /// The DataFusion session.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The lake this session reads.
    pub fn lake(&self) -> &Lake {
        &self.lake
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
