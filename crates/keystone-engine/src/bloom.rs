//! The Bloom filters of the lake's Parquet files, kept in memory once read.
//!
//! A lookup (`WHERE email = '…'`) over `profiles` is answered by the one
//! row group whose Bloom filter may hold the value. DataFusion reads the
//! filter of every row group to find it, one read after the other, at every
//! query: 69 reads at 10 M events. The files of a Delta table are never
//! rewritten in place, so a filter read once stays right for as long as its
//! file exists; this cache answers the later reads from memory.
//!
//! Only reads that are exactly a Bloom filter of the file's footer are
//! cached (the footer itself is in DataFusion's metadata cache; data pages
//! are not kept). The cache is bounded: when full it is emptied and fills
//! again with the filters queries use.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::object_store::ObjectStoreUrl;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::error::Result;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::path::Path;

/// Bytes of Bloom filters kept at most. A filter (one per row group of 16 K
/// rows and lookup column) takes up to 32 KiB, less when the row group holds
/// few distinct values: at 10 M events (measured on `keystone gen` data),
/// those of `profiles` take 6.9 MiB, `identities` 13.7 MiB, `events` 7.5 MiB.
pub(crate) const BLOOM_CACHE_BYTES: usize = 64 << 20;

/// Bloom filters read, by file and byte range.
#[derive(Debug)]
pub(crate) struct BloomCache {
    limit: usize,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    filters: HashMap<(Path, u64, u64), Bytes>,
    bytes: usize,
}

impl BloomCache {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            inner: Mutex::new(Entries::default()),
        }
    }

    fn get(&self, file: &Path, range: &Range<u64>) -> Option<Bytes> {
        let entries = self.inner.lock().ok()?;
        entries
            .filters
            .get(&(file.clone(), range.start, range.end))
            .cloned()
    }

    fn insert(&self, file: &Path, range: &Range<u64>, bytes: &Bytes) {
        let Ok(mut entries) = self.inner.lock() else {
            return;
        };
        if bytes.len() > self.limit {
            return;
        }
        if entries.bytes + bytes.len() > self.limit {
            entries.filters.clear();
            entries.bytes = 0;
        }
        if entries
            .filters
            .insert((file.clone(), range.start, range.end), bytes.clone())
            .is_none()
        {
            entries.bytes += bytes.len();
        }
    }

    /// Number of filters held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().map(|e| e.filters.len()).unwrap_or(0)
    }
}

/// DataFusion's reader of Parquet files (footers from its metadata cache),
/// with Bloom filters from a [`BloomCache`].
#[derive(Debug)]
pub(crate) struct BloomCachingReaderFactory {
    inner: CachedParquetFileReaderFactory,
    cache: Arc<BloomCache>,
}

impl BloomCachingReaderFactory {
    /// Readers of the files of `store` (registered in `runtime`), with the
    /// footers of `runtime`'s metadata cache and the filters of `cache`.
    pub(crate) fn try_new(
        runtime: &RuntimeEnv,
        store: &ObjectStoreUrl,
        cache: Arc<BloomCache>,
    ) -> Result<Self> {
        let inner = CachedParquetFileReaderFactory::new(
            runtime.object_store(store)?,
            runtime.cache_manager.get_file_metadata_cache(),
        );
        Ok(Self { inner, cache })
    }
}

impl ParquetFileReaderFactory for BloomCachingReaderFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        let location = file.object_meta.location.clone();
        let inner = self
            .inner
            .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(Box::new(BloomCachingReader {
            inner,
            location,
            cache: self.cache.clone(),
            metadata: None,
        }))
    }
}

struct BloomCachingReader {
    inner: Box<dyn AsyncFileReader + Send>,
    location: Path,
    cache: Arc<BloomCache>,
    /// The footer, once asked for: it says where the Bloom filters are.
    metadata: Option<Arc<ParquetMetaData>>,
}

impl BloomCachingReader {
    fn is_bloom_filter(&self, range: &Range<u64>) -> bool {
        let Some(metadata) = &self.metadata else {
            return false;
        };
        metadata.row_groups().iter().any(|rg| {
            rg.columns().iter().any(|c| {
                c.bloom_filter_offset()
                    .and_then(|o| u64::try_from(o).ok())
                    .is_some_and(|o| o == range.start)
                    && c.bloom_filter_length()
                        .and_then(|l| u64::try_from(l).ok())
                        .is_some_and(|l| range.start + l == range.end)
            })
        })
    }
}

impl AsyncFileReader for BloomCachingReader {
    fn get_bytes(
        &mut self,
        range: Range<u64>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Bytes>> {
        if !self.is_bloom_filter(&range) {
            return self.inner.get_bytes(range);
        }
        if let Some(bytes) = self.cache.get(&self.location, &range) {
            return futures::future::ready(Ok(bytes)).boxed();
        }
        async move {
            let bytes = self.inner.get_bytes(range.clone()).await?;
            self.cache.insert(&self.location, &range, &bytes);
            Ok(bytes)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Vec<Bytes>>> {
        self.inner.get_byte_ranges(ranges)
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, datafusion::parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let metadata = self.inner.get_metadata(options).await?;
            self.metadata = Some(metadata.clone());
            Ok(metadata)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::physical_plan::{FileScanConfigBuilder, ParquetSource};
    use datafusion::datasource::source::DataSourceExec;
    use datafusion::datasource::table_schema::TableSchema;
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
    use datafusion::physical_plan::{ExecutionPlan, collect};
    use datafusion::prelude::{SessionConfig, SessionContext, col, lit};

    const ROW_GROUPS: usize = 5;

    /// A file of `ROW_GROUPS` row groups of emails, with a Bloom filter on
    /// the column; every row group's bounds hold `m@x` and `z0@x`, so only
    /// the filters tell which row groups may hold them.
    fn write_file(path: &std::path::Path) -> Arc<Schema> {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "email",
            DataType::Utf8,
            false,
        )]));
        // Statistics per row group only, as the lake writes them (no page
        // index for the scan to read).
        let props = WriterProperties::builder()
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_bloom_filter_enabled(true)
            .set_max_row_group_row_count(Some(2))
            .build();
        let file = std::fs::File::create(path).expect("create");
        let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).expect("writer");
        for i in 0..ROW_GROUPS {
            let emails = StringArray::from(vec![format!("a{i}@x"), format!("z{i}@x")]);
            let batch =
                RecordBatch::try_new(schema.clone(), vec![Arc::new(emails)]).expect("batch");
            writer.write(&batch).expect("write");
        }
        writer.close().expect("close");
        schema
    }

    /// Rows of the row groups the scan reads (the predicate prunes row
    /// groups; without a filter on top, a row group is read whole).
    async fn lookup(
        ctx: &SessionContext,
        schema: &Arc<Schema>,
        file: &PartitionedFile,
        cache: &Arc<BloomCache>,
        email: &str,
    ) -> datafusion::error::Result<usize> {
        let url = ObjectStoreUrl::local_filesystem();
        let readers = BloomCachingReaderFactory::try_new(&ctx.runtime_env(), &url, cache.clone())?;
        let predicate = ctx
            .state()
            .create_physical_expr(col("email").eq(lit(email)), &schema.clone().try_into()?)?;
        let source = ParquetSource::new(TableSchema::builder(schema.clone()).build())
            .with_parquet_file_reader_factory(Arc::new(readers))
            .with_bloom_filter_on_read(true)
            .with_predicate(predicate);
        let config = FileScanConfigBuilder::new(url, Arc::new(source))
            .with_file(file.clone())
            .build();
        let plan: Arc<dyn ExecutionPlan> = DataSourceExec::from_data_source(config);
        let batches = collect(plan, ctx.task_ctx()).await?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }

    /// Filters read by one query answer the next one from memory: a value
    /// no filter holds is found absent even once the file is gone, while
    /// values the filters may hold still read the file.
    #[tokio::test]
    async fn bloom_filters_read_once_answer_later_queries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("profiles.parquet");
        let schema = write_file(&path);
        let meta = std::fs::metadata(&path).expect("metadata");
        let file = PartitionedFile::new(path.to_str().expect("utf8"), meta.len());
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1));
        let cache = Arc::new(BloomCache::new(BLOOM_CACHE_BYTES));

        // Bounds keep every row group, the filters only z0's (2 rows).
        assert_eq!(
            lookup(&ctx, &schema, &file, &cache, "z0@x")
                .await
                .expect("z0"),
            2
        );
        assert_eq!(cache.len(), ROW_GROUPS, "one filter per row group");
        assert_eq!(
            lookup(&ctx, &schema, &file, &cache, "m@x")
                .await
                .expect("m"),
            0
        );

        // The footer is in DataFusion's metadata cache and every filter in
        // ours: an absent value needs nothing from the file.
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(
            lookup(&ctx, &schema, &file, &cache, "m@x")
                .await
                .expect("m from memory"),
            0
        );
        // A present value still reads its row group, which is gone.
        assert!(lookup(&ctx, &schema, &file, &cache, "z1@x").await.is_err());
        // Without the filters in memory the absent value reads the file too.
        let empty = Arc::new(BloomCache::new(BLOOM_CACHE_BYTES));
        assert!(lookup(&ctx, &schema, &file, &empty, "m@x").await.is_err());
    }

    /// A full cache is emptied before it takes more than its limit.
    #[test]
    fn the_cache_stays_within_its_limit() {
        let cache = BloomCache::new(10);
        let file = Path::from("f.parquet");
        cache.insert(&file, &(0..6), &Bytes::from_static(b"123456"));
        assert!(cache.get(&file, &(0..6)).is_some());
        cache.insert(&file, &(6..12), &Bytes::from_static(b"abcdef"));
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&file, &(0..6)).is_none());
        assert_eq!(cache.get(&file, &(6..12)).as_deref(), Some(&b"abcdef"[..]));
        cache.insert(&file, &(12..30), &Bytes::from(vec![0; 18]));
        assert!(
            cache.get(&file, &(12..30)).is_none(),
            "larger than the limit"
        );
    }
}
