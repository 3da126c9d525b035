//! Streaming appends that land as exactly one Delta commit.
//!
//! ```text
//!  write(batch) ─▶ Parquet files under the table (not yet visible)
//!  write(batch) ─▶ …
//!  commit()     ─▶ one _delta_log/N.json listing every file, with the
//!                  commit metadata and the application transaction
//! ```
//!
//! If the process dies before `commit`, the files written so far are not
//! referenced by any version: readers never see them, and `VACUUM` removes
//! them. With an application transaction (`app_id`, `version`) a repeated
//! load is recognised before it starts ([`Lake::transaction_version`]) and
//! two racing loads of the same content conflict at commit time, so only one
//! lands.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use deltalake::kernel::Action;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::transaction::{CommitBuilder, CommitConflictError, TransactionError};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableError};
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde_json::Value;

use keystone_core::schema::EVENT_DATE;

use crate::privacy::Suppressions;
use crate::{Error, Lake, Result, TableSpec};

/// Event columns checked against the suppression list: (identifier type, column).
const SUPPRESSED_COLUMNS: &[(&str, &str)] = &[
    ("user_id", "user_id"),
    ("anonymous_id", "anonymous_id"),
    ("email", "email"),
    ("phone", "phone"),
    ("device_id", "device_id"),
];

/// Rows per Parquet row group. A row group is encoded in memory until it is
/// full, and an ingest keeps one open file per partition (`event_date`): small
/// row groups let finished ones stream out instead of the whole ingest staying
/// in memory until the commit.
const ROW_GROUP_ROWS: usize = 16 * 1024;

/// Commits retried after a concurrent delete or rewrite.
const COMMIT_RETRIES: usize = 20;

/// Size at which a data file is closed and a new one started.
const TARGET_FILE_BYTES: u64 = 128 * 1024 * 1024;

/// The versions recorded for `app_ids` (Delta application transactions) in
/// `table`'s state. The lookup reads commit files; when an erasure's log
/// cleanup removes them meanwhile, the table is read afresh from the new
/// checkpoint and the lookup repeated.
async fn landed_versions(
    table: &mut DeltaTable,
    app_ids: &[String],
) -> std::result::Result<Vec<Option<i64>>, DeltaTableError> {
    let mut attempt = 0;
    loop {
        if attempt > 0 {
            crate::lake::refresh_table(table).await?;
        }
        let state = table.snapshot()?;
        let mut out = Vec::with_capacity(app_ids.len());
        let mut failed = None;
        for app_id in app_ids {
            match state
                .transaction_version(table.log_store().as_ref(), app_id)
                .await
            {
                Ok(v) => out.push(v),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            None => return Ok(out),
            Some(e) if attempt < 5 && crate::lake::is_vanished_log_entry(&e) => {
                attempt += 1;
                *table = DeltaTable::new(table.log_store());
                tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
            }
            Some(e) => return Err(e),
        }
    }
}

/// Did the commit lose a race to a concurrent delete (nothing written)?
fn is_delete_race(e: &DeltaTableError) -> bool {
    matches!(
        e,
        DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(CommitConflictError::ConcurrentDeleteRead),
        }
    )
}

/// Columns a person is looked up by (`profile show`, a BI tool asking for one
/// email): each row group of any table that has one carries a Bloom filter
/// for it, so an equality lookup reads only the row groups that may hold the
/// value instead of every one (min/max statistics cannot prune random ids).
pub(crate) const LOOKUP_COLUMNS: &[&str] = &[
    "profile_id",
    "identifier",
    "user_id",
    "anonymous_id",
    "email",
    "phone",
];

/// False-positive rate of the lookup columns' Bloom filters: a lookup in a
/// table of N row groups reads about 1 + N/1000 of them. The writer sizes a
/// filter for `ROW_GROUP_ROWS` values (32 KiB, a power of two) and then
/// halves it while its estimated rate stays within this target. At 1 %, the
/// `email` filter of a `profiles` row group (≈ 10 500 emails in 16 K rows)
/// was folded to 16 KiB and let ≈ 0.5 % of absent values through, so a
/// lookup in the 68 row groups of 1.1 M profiles read a second row group
/// about one time in three; at 0.1 % it stays at 32 KiB.
const LOOKUP_BLOOM_FPP: f64 = 0.001;

/// Columns whose values are (close to) unique within a row group — ids,
/// message ids, microsecond timestamps — and how each is compressed. A
/// dictionary of a row group's 16 K values holds every value once, plus an
/// index per row, so it costs the writer an interning hash table and the
/// file more bytes than the values themselves: they are written PLAIN.
/// Snappy does not shrink random UUIDs and timestamps (≤ 1.2× on `keystone
/// gen` data, measured on the 10 M lake), so those are uncompressed, which
/// saves the writer the compression and readers the decompression for the
/// same bytes; sorted, `identifier` shares prefixes and shrinks ≈ 1.5×.
const PLAIN_COLUMNS: &[(&str, Compression)] = &[
    ("profile_id", Compression::UNCOMPRESSED),
    ("identifier", Compression::SNAPPY),
    ("linked_by", Compression::UNCOMPRESSED),
    ("message_id", Compression::UNCOMPRESSED),
    ("first_seen", Compression::UNCOMPRESSED),
    ("last_seen", Compression::UNCOMPRESSED),
    ("last_order_at", Compression::UNCOMPRESSED),
];

/// How every table's files are written. Statistics are kept per column
/// chunk (row group), not per page: a row group of `ROW_GROUP_ROWS` rows
/// holds one page of most columns, so page-level min/max (the column index)
/// would prune nothing the row group's do not, while every query that
/// filters must read and parse it for all row groups and columns of the file
/// (at 1.1 M profiles, most of a lookup's time). The offset index, which
/// lets a reader skip pages, is still written.
pub(crate) fn writer_properties() -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_created_by(format!("keystone {}", env!("CARGO_PKG_VERSION")));
    for column in LOOKUP_COLUMNS {
        let path = ColumnPath::from(*column);
        builder = builder
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_fpp(path.clone(), LOOKUP_BLOOM_FPP)
            .set_column_bloom_filter_max_ndv(path, ROW_GROUP_ROWS as u64);
    }
    for (column, compression) in PLAIN_COLUMNS {
        let path = ColumnPath::from(*column);
        builder = builder
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_compression(path, *compression);
    }
    builder.build()
}

/// Commit properties carrying `metadata` in the `commitInfo` and each
/// `(app id, version)` of `txns` as a Delta application transaction.
pub(crate) fn commit_properties(
    txns: Vec<(String, i64)>,
    metadata: HashMap<String, Value>,
) -> CommitProperties {
    let txns = txns
        .into_iter()
        .map(|(app_id, version)| Transaction::new(app_id, version))
        .collect();
    CommitProperties::default()
        .with_metadata(metadata)
        .with_application_transactions(txns)
}

/// What an [`Append`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendMetrics {
    /// Rows written.
    pub rows: u64,
    /// The table version the commit created (`None` when nothing was written).
    pub version: Option<i64>,
    /// Rows dropped because they carry a suppressed (erased) identifier.
    pub suppressed: u64,
}

/// The file tag an `events` file carries when none of its events has
/// `externalIds` in its `context`: identity resolution then need not read
/// (and decompress) that file's `context` column, the largest of `events`.
/// Files without the tag — written before it existed, or rewritten by a
/// compaction or an erasure — are read whole.
pub const NO_EXTERNAL_IDS_TAG: &str = "keystone.noExternalIds";

/// The text whose presence in `context` may carry identifiers.
const EXTERNAL_IDS: &str = "externalIds";

/// Which `event_date` partitions of an `events` append hold an event whose
/// `context` mentions `externalIds` (checked as text, so a mention anywhere
/// counts: the tag is only ever left off for nothing).
#[derive(Debug, Default)]
struct ExternalIdsSeen {
    dates: std::collections::BTreeSet<Option<chrono::NaiveDate>>,
}

impl ExternalIdsSeen {
    fn observe(&mut self, batch: &RecordBatch) -> Result<()> {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::{DataType, Date32Type};
        let schema = batch.schema();
        let (Ok(c), Ok(d)) = (schema.index_of("context"), schema.index_of(EVENT_DATE)) else {
            return Ok(());
        };
        let context = arrow::compute::cast(batch.column(c), &DataType::Utf8)
            .map_err(|e| Error::Arrow(e.to_string()))?;
        let context = context.as_string::<i32>();
        let dates = batch.column(d).as_primitive_opt::<Date32Type>();
        for row in 0..batch.num_rows() {
            if context.is_valid(row) && context.value(row).contains(EXTERNAL_IDS) {
                let date = dates
                    .and_then(|a| a.is_valid(row).then(|| a.value(row)))
                    .and_then(Date32Type::to_naive_date_opt);
                self.dates.insert(date);
            }
        }
        Ok(())
    }

    /// May the file of partition values `values` hold such an event?
    fn may_hold(&self, values: &HashMap<String, Option<String>>) -> bool {
        let Some(date) = values.get(EVENT_DATE) else {
            return true;
        };
        let day = match date {
            None => None,
            Some(text) => match chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                Ok(day) => Some(day),
                Err(_) => return true,
            },
        };
        self.dates.contains(&day)
    }
}

/// An append in progress; see the module docs.
pub struct Append {
    table_name: &'static str,
    table: DeltaTable,
    writer: RecordBatchWriter,
    txns: Vec<(String, i64)>,
    rows: u64,
    suppressions: Option<Suppressions>,
    suppressed: u64,
    external_ids: Option<ExternalIdsSeen>,
}

impl Lake {
    /// Start an append to `spec`, creating the table if needed. Each
    /// `(app id, version)` of `txns` is recorded as a Delta application
    /// transaction in the commit.
    pub async fn append(&self, spec: &TableSpec, txns: Vec<(String, i64)>) -> Result<Append> {
        let suppressions = if spec.name == crate::EVENTS.name {
            Some(self.suppressions().await?).filter(|s| !s.is_empty())
        } else {
            None
        };
        let table = self.load_or_create(spec).await?;
        let writer = RecordBatchWriter::for_table(&table)
            .map_err(|e| Error::delta(spec.name, e))?
            .with_writer_properties(writer_properties())
            .with_target_file_size(TARGET_FILE_BYTES);
        Ok(Append {
            table_name: spec.name,
            table,
            writer,
            txns,
            rows: 0,
            suppressions,
            suppressed: 0,
            external_ids: (spec.name == crate::EVENTS.name).then(ExternalIdsSeen::default),
        })
    }

    /// For each application id, the version last committed under it in
    /// `spec`'s table, if any (the table is read once).
    pub async fn transaction_versions(
        &self,
        spec: &TableSpec,
        app_ids: &[String],
    ) -> Result<Vec<Option<i64>>> {
        let Some(mut table) = self.load(spec).await? else {
            return Ok(vec![None; app_ids.len()]);
        };
        landed_versions(&mut table, app_ids)
            .await
            .map_err(|e| Error::delta(spec.name, e))
    }
}

impl Append {
    /// Write a batch (of the table's schema) to new files.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let batch = self.drop_suppressed(batch)?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        if let Some(seen) = &mut self.external_ids {
            seen.observe(&batch)?;
        }
        self.writer
            .write(batch)
            .await
            .map_err(|e| Error::delta(self.table_name, e))
    }

    /// `batch` without the rows carrying a suppressed identifier (counted).
    fn drop_suppressed(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        use arrow::array::{Array, AsArray};
        let Some(suppressions) = &self.suppressions else {
            return Ok(batch);
        };
        let mut keep = vec![true; batch.num_rows()];
        for (kind, column) in SUPPRESSED_COLUMNS {
            let Ok(i) = batch.schema().index_of(column) else {
                continue;
            };
            let values = arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8)
                .map_err(|e| Error::Arrow(e.to_string()))?;
            let values = values.as_string::<i32>();
            for (row, k) in keep.iter_mut().enumerate() {
                if *k && !values.is_null(row) && suppressions.contains(kind, values.value(row)) {
                    *k = false;
                }
            }
        }
        let dropped = keep.iter().filter(|k| !**k).count();
        if dropped == 0 {
            return Ok(batch);
        }
        self.suppressed += dropped as u64;
        let mask = arrow::array::BooleanArray::from(keep);
        arrow::compute::filter_record_batch(&batch, &mask).map_err(|e| Error::Arrow(e.to_string()))
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Make everything written visible in one commit, with `metadata` in its
    /// `commitInfo`. With no rows written, nothing is committed.
    pub async fn commit(self, metadata: HashMap<String, Value>) -> Result<AppendMetrics> {
        if self.rows == 0 {
            return Ok(AppendMetrics {
                suppressed: self.suppressed,
                ..AppendMetrics::default()
            });
        }
        let suppressed = self.suppressed;
        let txns = self.txns.clone();
        let props = commit_properties(self.txns, metadata);
        let mut table = self.table;
        let mut writer = self.writer;
        let adds: Vec<Action> = writer
            .flush()
            .await
            .map_err(|e| Error::delta(self.table_name, e))?
            .into_iter()
            .map(|mut add| {
                if let Some(seen) = &self.external_ids
                    && !seen.may_hold(&add.partition_values)
                {
                    add.tags
                        .get_or_insert_with(HashMap::new)
                        .insert(NO_EXTERNAL_IDS_TAG.to_string(), Some("true".to_string()));
                }
                Action::Add(add)
            })
            .collect();
        // A blind append reads nothing, but delta-rs counts it as having read
        // the whole table: a concurrent delete (forget, retention) makes the
        // commit fail. The files are written; commit them again on the new
        // snapshot.
        let mut attempt = 0;
        let version = loop {
            let snapshot = table
                .snapshot()
                .map_err(|e| Error::delta(self.table_name, e))?;
            let partition_cols: Vec<String> = snapshot.metadata().partition_columns().into();
            let operation = DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: (!partition_cols.is_empty()).then_some(partition_cols),
                predicate: None,
            };
            let result = CommitBuilder::from(props.clone())
                .with_actions(adds.clone())
                .build(Some(snapshot), table.log_store(), operation)
                .await;
            match result {
                Ok(done) => break done.version(),
                // Lost a race to a delete: nothing was written. Or an
                // erasure's log cleanup removed commit files this commit
                // had to read — while checking the winning commits (nothing
                // written) or after writing (post-commit snapshot update).
                // The second is only retried when the application
                // transactions tell whether this content landed.
                Err(e)
                    if attempt < COMMIT_RETRIES
                        && (is_delete_race(&e)
                            || (!txns.is_empty() && crate::lake::is_vanished_log_entry(&e))) =>
                {
                    let vanished = !is_delete_race(&e);
                    attempt += 1;
                    crate::lake::refresh_table(&mut table)
                        .await
                        .map_err(|e| Error::delta(self.table_name, e))?;
                    let app_ids: Vec<String> = txns.iter().map(|t| t.0.clone()).collect();
                    let versions = landed_versions(&mut table, &app_ids)
                        .await
                        .map_err(|e| Error::delta(self.table_name, e))?;
                    let (mut landed_any, mut landed_all) = (false, !txns.is_empty());
                    for ((_, version), landed) in txns.iter().zip(versions) {
                        let landed = landed.is_some_and(|v| v >= *version);
                        landed_any |= landed;
                        landed_all &= landed;
                    }
                    if vanished && landed_all {
                        // This commit (or one of the very same content) is
                        // in the table: the content is there exactly once.
                        let state = table
                            .snapshot()
                            .map_err(|e| Error::delta(self.table_name, e))?;
                        break state.version() as _;
                    }
                    if landed_any {
                        // Another load of (some of) the same content landed
                        // meanwhile: this one must not.
                        return Err(Error::Conflict(format!(
                            "table `{}`: the same content was committed by another load meanwhile",
                            self.table_name
                        )));
                    }
                }
                Err(e) => return Err(Error::delta(self.table_name, e)),
            }
        };
        Ok(AppendMetrics {
            rows: self.rows,
            version: Some(version as i64),
            suppressed,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, StringArray};
    use bytes::Bytes;
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::ReaderProperties;
    use parquet::file::reader::FileReader;
    use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};

    use super::*;

    #[test]
    fn days_with_external_ids_are_known_and_the_others_may_be_tagged() {
        use arrow::array::Date32Array;
        use arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![
            Field::new("context", DataType::Utf8, true),
            Field::new("event_date", DataType::Date32, true),
        ]));
        // 20393 = 2025-11-01, 20394 = 2025-11-02, 20395 = 2025-11-03.
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![
                    Some(r#"{"externalIds":[{"id":"1","type":"crm"}]}"#),
                    Some(r#"{"ip":"10.0.0.1"}"#),
                    None,
                    Some(r#"{"note":"externalIds"}"#),
                ])),
                Arc::new(Date32Array::from(vec![
                    Some(20393),
                    Some(20394),
                    Some(20395),
                    None,
                ])),
            ],
        )
        .unwrap();
        let mut seen = ExternalIdsSeen::default();
        seen.observe(&batch).unwrap();
        let on = |date: Option<&str>| {
            HashMap::from([("event_date".to_string(), date.map(str::to_string))])
        };
        assert!(seen.may_hold(&on(Some("2025-11-01"))));
        assert!(!seen.may_hold(&on(Some("2025-11-02"))));
        assert!(!seen.may_hold(&on(Some("2025-11-03"))));
        // A mention anywhere counts; so does an unreadable partition value.
        assert!(seen.may_hold(&on(None)));
        assert!(seen.may_hold(&on(Some("yesterday"))));
        assert!(seen.may_hold(&HashMap::new()));
    }

    /// Unique columns are written PLAIN (no dictionary page), the
    /// incompressible ones uncompressed; other columns keep a dictionary and
    /// Snappy.
    #[test]
    fn unique_columns_are_written_plain() {
        use parquet::basic::{Compression, Encoding};
        let rows = 1000;
        let column = |f: &dyn Fn(usize) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values((0..rows).map(f)))
        };
        let batch = RecordBatch::try_from_iter([
            (
                "profile_id",
                column(&|i| format!("{:08x}-7a3c-4e1d-9b2f-{i:012x}", i * 7919)),
            ),
            ("identifier", column(&|i| format!("person{i}@example.com"))),
            (
                "event",
                column(&|i| ["Page", "Order Completed"][i % 2].to_string()),
            ),
        ])
        .unwrap();
        let mut file = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut file, batch.schema(), Some(writer_properties())).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let reader = SerializedFileReader::new(Bytes::from(file)).unwrap();
        let group = reader.metadata().row_group(0);
        let chunk = |name: &str| {
            group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .unwrap()
        };
        for (name, compression, dictionary) in [
            ("profile_id", Compression::UNCOMPRESSED, false),
            ("identifier", Compression::SNAPPY, false),
            ("event", Compression::SNAPPY, true),
        ] {
            let c = chunk(name);
            assert_eq!(c.compression(), compression, "{name}");
            assert_eq!(c.dictionary_page_offset().is_some(), dictionary, "{name}");
            let encodings: Vec<Encoding> = c.encodings().collect();
            assert_eq!(
                encodings.contains(&Encoding::RLE_DICTIONARY),
                dictionary,
                "{name}: {encodings:?}"
            );
        }
    }

    /// Lookup columns carry a Bloom filter in every row group that answers
    /// "may hold" for each of its values and "does not hold" for the values
    /// of the other row groups; other columns carry none. Min/max are kept
    /// per row group, with no page-level column index.
    #[test]
    fn lookup_columns_have_bloom_filters_per_row_group() {
        let rows = ROW_GROUP_ROWS * 2;
        // Like `profiles`: 64 % of the rows have an email (the others are
        // anonymous visitors), so a row group's filter holds ≈ 10 500 values.
        let has_email = |i: usize| i % 25 < 16;
        let emails: ArrayRef = Arc::new(StringArray::from_iter(
            (0..rows).map(|i| has_email(i).then(|| format!("person{i}@example.com"))),
        ));
        let names: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..rows).map(|i| format!("name {i}")),
        ));
        let batch = RecordBatch::try_from_iter([("email", emails), ("name", names)]).unwrap();
        let mut file = Vec::new();
        let mut writer =
            ArrowWriter::try_new(&mut file, batch.schema(), Some(writer_properties())).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();

        let options = ReadOptionsBuilder::new()
            .with_reader_properties(
                ReaderProperties::builder()
                    .set_read_bloom_filter(true)
                    .build(),
            )
            .build();
        let file = Bytes::from(file);
        let reader = SerializedFileReader::new_with_options(file.clone(), options).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 2);
        // Min/max per row group, no page-level column index, an offset index.
        let indexed = SerializedFileReader::new_with_options(
            file,
            ReadOptionsBuilder::new().with_page_index().build(),
        )
        .unwrap();
        let meta = indexed.metadata();
        for group in meta.row_groups() {
            let stats = group.column(0).statistics().expect("row group statistics");
            assert!(stats.min_bytes_opt().is_some() && stats.max_bytes_opt().is_some());
        }
        let no_column_index = meta.column_index().is_none_or(|groups| {
            groups.iter().flatten().all(|c| {
                matches!(
                    c,
                    parquet::file::page_index::column_index::ColumnIndexMetaData::NONE
                )
            })
        });
        assert!(no_column_index, "no page-level statistics");
        assert!(meta.offset_index().is_some(), "pages can still be skipped");
        for (group, first) in [(0, 0), (1, ROW_GROUP_ROWS)] {
            let row_group = reader.get_row_group(group).unwrap();
            assert!(
                row_group.get_column_bloom_filter(1).is_none(),
                "name has none"
            );
            let bloom = row_group
                .get_column_bloom_filter(0)
                .expect("email has a Bloom filter");
            let inside = (first..first + ROW_GROUP_ROWS)
                .filter(|&i| has_email(i))
                .all(|i| bloom.check(&format!("person{i}@example.com").as_str()));
            assert!(inside, "row group {group}: a value it holds was refused");
            let other = if first == 0 { ROW_GROUP_ROWS } else { 0 };
            let absent: Vec<usize> = (other..other + ROW_GROUP_ROWS)
                .filter(|&i| has_email(i))
                .collect();
            let false_positives = absent
                .iter()
                .filter(|i| bloom.check(&format!("person{i}@example.com").as_str()))
                .count();
            // The filter stays at 32 KiB: almost none pass. Under 0.1 % leaves
            // room for chance but fails a filter folded to 16 KiB, as a 1 %
            // target left it (≈ 0.5 %), or one that says yes to everything.
            assert!(
                false_positives < absent.len() / 1000,
                "row group {group}: {false_positives} of {} absent values passed",
                absent.len()
            );
        }
    }
}
