//! A served query's read of a lake table: a DataFusion Parquet scan over the
//! files of one Delta version, built once per version and shared by every
//! query until the next commit.
//!
//! deltalake's own table provider replays the version's file actions
//! through the Delta kernel at each scan, parsing every file's statistics
//! from JSON again: 28 % of a Flight server's CPU on a small query over
//! `events` (93 files at 1 M events), about 4 ms per query (see
//! `benches/RESULTS.md`). This provider reads the file list, partition
//! values and statistics once, when a query first names a version, and
//! plans each later query over them with DataFusion's Parquet scan. File
//! pruning (statistics, partition values), row-group pruning, Bloom filters
//! and the footer cache are DataFusion's; the Bloom filters read are kept in
//! memory for the next queries ([`crate::bloom`]).
//!
//! Each file's statistics come from its Parquet footer, read once (files
//! a previous version already had are not read again): exact row counts,
//! null counts and bounds, so DataFusion answers `count(*)`, and `min` or
//! `max` of a column whose bounds are exact, without reading the data, and
//! prunes by the exact bounds. A footer that cannot be read leaves the
//! file with the statistics of its Delta log entry, kept to the
//! millisecond and marked inexact.
//!
//! It reads only what it can read exactly as Delta defines the table: a
//! protocol that needs no reader features (reader version 1: no deletion
//! vectors, no column mapping), files addressed relative to the table root,
//! and partition columns last in the schema. Any other table is read with
//! deltalake's provider ([`LakeTable::try_new`] returns `None`).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{ColumnStatistics, ScalarValue, Statistics};
use datafusion::datasource::TableProvider;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use delta_kernel::expressions::Scalar;
use futures::StreamExt;
use keystone_lake::deltalake::DeltaTable;
use keystone_lake::deltalake::delta_datafusion::engine::AsObjectStoreUrl;
use keystone_lake::deltalake::kernel::LogicalFileView;
use object_store::ObjectMeta;
use object_store::path::Path;

use crate::bloom::{BloomCache, BloomCachingReaderFactory};

/// One version of a lake table, read with DataFusion's Parquet scan.
#[derive(Debug)]
pub(crate) struct LakeTable {
    /// The table's schema: the data columns, then the partition columns.
    schema: SchemaRef,
    /// Columns stored in the files (the schema without partition columns).
    file_schema: SchemaRef,
    partition_fields: Vec<FieldRef>,
    store: ObjectStoreUrl,
    files: Vec<PartitionedFile>,
    statistics: Statistics,
    blooms: Arc<BloomCache>,
}

impl LakeTable {
    /// The files of `table`'s loaded version, with `schema` (the schema
    /// deltalake's provider gives the table, so both read the same types),
    /// or `None` when this provider cannot read the table exactly (see the
    /// module documentation).
    pub(crate) async fn try_new(
        table: &DeltaTable,
        schema: SchemaRef,
        runtime: &RuntimeEnv,
        previous: Option<&LakeTable>,
        blooms: Arc<BloomCache>,
    ) -> Option<Self> {
        Self::build(table, schema, runtime, previous, blooms)
            .await
            .ok()
    }

    /// [`Self::try_new`], saying why a table is not read by this provider.
    async fn build(
        table: &DeltaTable,
        schema: SchemaRef,
        runtime: &RuntimeEnv,
        previous: Option<&LakeTable>,
        blooms: Arc<BloomCache>,
    ) -> Result<Self, String> {
        let state = table.snapshot().map_err(|e| e.to_string())?;
        let protocol = state.protocol();
        if protocol.min_reader_version() > 1 || protocol.reader_features().is_some() {
            return Err(format!("reader protocol {protocol:?}"));
        }
        let partitions = state.metadata().partition_columns();
        let data_len = schema
            .fields()
            .len()
            .checked_sub(partitions.len())
            .ok_or("more partition columns than columns")?;
        let partition_fields: Vec<FieldRef> = schema.fields()[data_len..].to_vec();
        if partition_fields
            .iter()
            .zip(partitions)
            .any(|(f, name)| f.name() != name)
        {
            return Err(format!(
                "partition columns {partitions:?} not last in {schema}"
            ));
        }
        let file_schema = Arc::new(Schema::new_with_metadata(
            schema.fields()[..data_len].to_vec(),
            schema.metadata().clone(),
        ));
        let root = table.log_store().root_url().clone();
        let root_path = Path::from_url_path(root.path()).map_err(|e| e.to_string())?;
        let store_url = root.as_object_store_url();
        let store = runtime
            .object_store(&store_url)
            .map_err(|e| e.to_string())?;
        let known: HashMap<&Path, &PartitionedFile> = previous
            .map(|p| {
                p.files
                    .iter()
                    .map(|f| (&f.object_meta.location, f))
                    .collect()
            })
            .unwrap_or_default();
        let mut logged = Vec::new();
        for view in state.log_data().iter() {
            logged.push(partitioned_file(
                &view,
                &root_path,
                &file_schema,
                &partition_fields,
            )?);
        }
        let cache = runtime.cache_manager.get_file_metadata_cache();
        let files: Vec<PartitionedFile> = futures::stream::iter(logged)
            .map(|file| {
                let (store, cache, file_schema) = (&store, &cache, &file_schema);
                let seen = known
                    .get(&file.object_meta.location)
                    .filter(|f| f.object_meta.size == file.object_meta.size)
                    .map(|f| (*f).clone());
                async move {
                    if let Some(seen) = seen {
                        return seen;
                    }
                    let footer = DFParquetMetadata::new(store.as_ref(), &file.object_meta)
                        .with_file_metadata_cache(Some(cache.clone()))
                        .fetch_statistics(file_schema)
                        .await;
                    match footer {
                        Ok(stats) => PartitionedFile::new_from_meta(file.object_meta.clone())
                            .with_partition_values(file.partition_values.clone())
                            .with_statistics(Arc::new(stats)),
                        Err(_) => file,
                    }
                }
            })
            .buffered(FOOTER_READS)
            .collect()
            .await;
        let statistics = if files.iter().all(|f| f.statistics.is_some()) {
            Statistics::try_merge_iter(
                files.iter().filter_map(|f| f.statistics.as_deref()),
                &schema,
            )
            .unwrap_or_else(|_| Statistics::new_unknown(&schema))
        } else {
            Statistics::new_unknown(&schema)
        };
        Ok(Self {
            schema,
            file_schema,
            partition_fields,
            store: store_url,
            files,
            statistics,
            blooms,
        })
    }
}

/// Footers read at once when a version brings new files (object stores
/// answer many small reads in parallel better than one after another).
const FOOTER_READS: usize = 16;

/// One file of the table, with its partition values and its statistics:
/// the row count (exact), null counts (exact) and the bounds Delta keeps
/// (inexact: strings may be truncated, timestamps are kept to the
/// millisecond, the maximum rounded up). An error when the file cannot be
/// read by this provider (a deletion vector, a path outside the table, a
/// partition value that does not parse).
fn partitioned_file(
    view: &LogicalFileView,
    root: &Path,
    file_schema: &Schema,
    partition_fields: &[FieldRef],
) -> Result<PartitionedFile, String> {
    if view.deletion_vector_descriptor().is_some() || view.path().contains("://") {
        return Err(format!(
            "file {} has a deletion vector or is outside the table",
            view.path()
        ));
    }
    let location = Path::from_iter(root.parts().chain(view.object_store_path().parts()));
    let meta = ObjectMeta {
        location,
        last_modified: view.modification_datetime().map_err(|e| e.to_string())?,
        size: u64::try_from(view.size()).map_err(|e| e.to_string())?,
        e_tag: None,
        version: None,
    };
    let values = view.partition_values_map();
    let partition_values = partition_fields
        .iter()
        .map(|f| match values.get(f.name()).cloned().flatten() {
            Some(v) => ScalarValue::try_from_string(v, f.data_type()),
            None => ScalarValue::try_new_null(f.data_type()),
        })
        .collect::<Result<Vec<_>>>()
        .map_err(|e| format!("file {}: partition value: {e}", view.path()))?;
    let column = |stats: &Option<Scalar>, name: &str| -> Option<Scalar> {
        let Some(Scalar::Struct(s)) = stats else {
            return None;
        };
        let i = s.fields().iter().position(|f| f.name() == name)?;
        Some(s.values()[i].clone())
    };
    let (nulls, mins, maxs) = (view.null_counts(), view.min_values(), view.max_values());
    let column_statistics = file_schema
        .fields()
        .iter()
        .map(|f| {
            let bound = |stats: &Option<Scalar>| {
                column(stats, f.name())
                    .and_then(|s| scalar_value(&s))
                    .and_then(|v| v.cast_to(f.data_type()).ok())
                    .map_or(Precision::Absent, Precision::Inexact)
            };
            let null_count = match column(&nulls, f.name()) {
                Some(Scalar::Long(n)) => {
                    usize::try_from(n).map_or(Precision::Absent, Precision::Exact)
                }
                _ => Precision::Absent,
            };
            ColumnStatistics {
                null_count,
                min_value: bound(&mins),
                max_value: bound(&maxs),
                ..ColumnStatistics::new_unknown()
            }
        })
        .collect();
    let statistics = Statistics {
        num_rows: view
            .num_records()
            .map_or(Precision::Absent, Precision::Exact),
        total_byte_size: Precision::Absent,
        column_statistics,
    };
    Ok(PartitionedFile::new_from_meta(meta)
        .with_partition_values(partition_values)
        .with_statistics(Arc::new(statistics)))
}

/// A statistics value of the Delta kernel as a DataFusion value (before it
/// is cast to the column's type); `None` for kinds not used for pruning.
fn scalar_value(value: &Scalar) -> Option<ScalarValue> {
    Some(match value {
        Scalar::Byte(v) => ScalarValue::Int8(Some(*v)),
        Scalar::Short(v) => ScalarValue::Int16(Some(*v)),
        Scalar::Integer(v) => ScalarValue::Int32(Some(*v)),
        Scalar::Long(v) => ScalarValue::Int64(Some(*v)),
        Scalar::Float(v) => ScalarValue::Float32(Some(*v)),
        Scalar::Double(v) => ScalarValue::Float64(Some(*v)),
        Scalar::Boolean(v) => ScalarValue::Boolean(Some(*v)),
        Scalar::String(v) => ScalarValue::Utf8(Some(v.clone())),
        Scalar::Date(v) => ScalarValue::Date32(Some(*v)),
        Scalar::Timestamp(v) => ScalarValue::TimestampMicrosecond(Some(*v), Some("UTC".into())),
        Scalar::TimestampNtz(v) => ScalarValue::TimestampMicrosecond(Some(*v), None),
        _ => return None,
    })
}

#[async_trait]
impl TableProvider for LakeTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn statistics(&self) -> Option<Statistics> {
        Some(self.statistics.clone())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.files.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let groups = FileGroup::new(self.files.clone())
            .split_files(state.config().target_partitions().max(1));
        // What `ParquetFormat::create_physical_plan` builds, with Bloom
        // filters kept in memory (see [`crate::bloom`]).
        let options = state.table_options().parquet.clone();
        let readers = BloomCachingReaderFactory::try_new(
            state.runtime_env(),
            &self.store,
            self.blooms.clone(),
        )?;
        let mut source = ParquetSource::new(
            TableSchema::builder(self.file_schema.clone())
                .with_table_partition_cols(self.partition_fields.clone())
                .build(),
        )
        .with_parquet_file_reader_factory(Arc::new(readers));
        if let Some(hint) = options.global.metadata_size_hint {
            source = source.with_metadata_size_hint(hint);
        }
        let source = source.with_table_parquet_options(options);
        let config = FileScanConfigBuilder::new(self.store.clone(), Arc::new(source))
            .with_file_groups(groups)
            .with_statistics(self.statistics.clone())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest_fixture;
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;
    use keystone_lake::Lake;

    /// The fixture files, ingested one run (one commit) each.
    const FIXTURES: [&str; 2] = ["shop.ndjson", "store.csv"];

    /// The fixtures ingested in two runs: two commits, several partitions.
    async fn fixture_events(dir: &std::path::Path) -> DeltaTable {
        let lake = Lake::open(dir.to_str().expect("utf8")).expect("lake");
        for file in FIXTURES {
            ingest_fixture(&lake, file).await;
        }
        lake.load_named("events")
            .await
            .expect("load")
            .expect("events exist")
    }

    fn blooms() -> Arc<BloomCache> {
        Arc::new(BloomCache::new(crate::bloom::BLOOM_CACHE_BYTES))
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.expect(sql).collect().await.expect(sql);
        pretty_format_batches(&batches).expect("format").to_string()
    }

    /// Every query answers the same over this provider as over
    /// deltalake's, and its plan reads the files directly.
    #[tokio::test]
    async fn the_lake_scan_answers_as_deltalake_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = fixture_events(dir.path()).await;
        let delta = table.table_provider().await.expect("delta provider");
        let runtime = RuntimeEnv::default();
        runtime.register_object_store(
            table.log_store().root_url(),
            table.log_store().root_object_store(None),
        );
        let lake = LakeTable::build(&table, delta.schema(), &runtime, None, blooms())
            .await
            .expect("readable by the lake scan");
        assert!(lake.files.len() >= 2, "{} files", lake.files.len());
        assert_eq!(lake.schema(), delta.schema());
        let (ours_ctx, theirs_ctx) = (SessionContext::new(), SessionContext::new());
        ours_ctx
            .register_table("t", Arc::new(lake))
            .expect("register");
        theirs_ctx.register_table("t", delta).expect("register");
        for query in [
            "SELECT * FROM {t} ORDER BY message_id",
            "SELECT count(*), count(email), count(event_date) FROM {t}",
            "SELECT min(\"timestamp\"), max(\"timestamp\"), max(event_date), min(message_id) FROM {t}",
            "SELECT message_id FROM {t} WHERE event_date = (SELECT min(event_date) FROM {t}) ORDER BY 1",
            "SELECT message_id, \"timestamp\" FROM {t} WHERE \"timestamp\" >= (SELECT max(\"timestamp\") FROM {t}) ORDER BY 1",
            "SELECT message_id FROM {t} WHERE email = 'jane.doe@example.com' ORDER BY 1",
            "SELECT message_id FROM {t} WHERE email = 'nobody@example.com'",
            "SELECT event_date, count(*) FROM {t} GROUP BY 1 ORDER BY 1",
            "SELECT count(*) FROM (SELECT message_id FROM {t} LIMIT 3)",
            "SELECT source, round(sum(revenue), 2) FROM {t} WHERE revenue > 20 GROUP BY 1 ORDER BY 1",
        ] {
            let query = query.replace("{t}", "t");
            let ours = rows(&ours_ctx, &query).await;
            let theirs = rows(&theirs_ctx, &query).await;
            assert_eq!(ours, theirs, "{query}");
            assert!(
                ours.lines().count() > 3 || query.contains("nobody"),
                "{query}: {ours}"
            );
        }
        let plan = rows(
            &ours_ctx,
            "EXPLAIN SELECT message_id FROM t WHERE email = 'x'",
        )
        .await;
        assert!(
            plan.contains("DataSourceExec") && !plan.contains("DeltaScanExec"),
            "{plan}"
        );
        // The footers' exact statistics answer these without reading data.
        let plan = rows(
            &ours_ctx,
            "EXPLAIN SELECT count(*), max(\"timestamp\"), min(event_date) FROM t",
        )
        .await;
        assert!(!plan.contains("DataSourceExec"), "{plan}");
    }

    /// A new version reads the footers of its new files only: the files it
    /// shares with the version before keep their statistics; the new ones get
    /// their footer's exact statistics.
    #[tokio::test]
    async fn a_new_version_reads_only_the_new_files_footers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = Lake::open(dir.path().to_str().expect("utf8")).expect("lake");
        let runtime = RuntimeEnv::default();
        let mut versions: Vec<LakeTable> = Vec::new();
        for file in FIXTURES {
            ingest_fixture(&lake, file).await;
            let table = lake
                .load_named("events")
                .await
                .expect("load")
                .expect("events");
            let schema = table.table_provider().await.expect("delta").schema();
            let built = LakeTable::build(&table, schema, &runtime, versions.last(), blooms())
                .await
                .expect("readable");
            versions.push(built);
        }
        let (first, second) = (&versions[0], &versions[1]);
        let (mut kept, mut new) = (0, 0);
        for file in &second.files {
            let stats = file.statistics.as_ref().expect("statistics");
            assert!(matches!(stats.num_rows, Precision::Exact(n) if n > 0));
            match first
                .files
                .iter()
                .find(|f| f.object_meta.location == file.object_meta.location)
            {
                Some(before) => {
                    let before = before.statistics.as_ref().expect("statistics");
                    assert!(Arc::ptr_eq(before, stats), "{} read again", file.path());
                    kept += 1;
                }
                None => new += 1,
            }
        }
        assert!(kept > 0 && new > 0, "kept {kept}, new {new}");
        assert_eq!(second.statistics.num_rows, Precision::Exact(14));
    }
}
