//! The `keystone ingest` operation.
//!
//! ```text
//!  files ─▶ sha256 of each ─▶ already loaded? (Delta txn "keystone-ingest-<sha>") ─▶ skip
//!                         └─▶ read + validate ─▶ events: ONE commit for every file,
//!                                                 tagged with each file's txn
//!                                            └─▶ quarantine: one commit, same txns
//! ```
//!
//! All the valid rows of an ingest become visible together or not at all: a
//! process killed before the commit leaves only unreferenced files. The
//! quarantine commit follows the events commit; if the process dies between
//! the two, the rejected rows of that run are not recorded (the events are).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use keystone_core::event::EventRow;
use keystone_core::schema::{EventBatchBuilder, QuarantineRow, quarantine_batch};
use keystone_lake::{Append, EVENTS, Lake, QUARANTINE};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::mapping::CsvMapping;
use crate::{Error, Result, RowSink, csv, ndjson, parquet};

/// Input formats `keystone ingest` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Segment-spec JSON, one message per line.
    Ndjson,
    /// CSV with a header and a column mapping.
    Csv,
    /// Parquet in the events schema.
    Parquet,
}

impl Format {
    /// Guess from the file extension: `.ndjson`, `.jsonl`, `.json`, `.csv`, `.parquet`.
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "ndjson" | "jsonl" | "json" => Some(Self::Ndjson),
            "csv" => Some(Self::Csv),
            "parquet" | "pq" => Some(Self::Parquet),
            _ => None,
        }
    }

    /// Name as given to `--format`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ndjson => "ndjson",
            Self::Csv => "csv",
            Self::Parquet => "parquet",
        }
    }
}

/// How to ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Force a format instead of guessing from each file's extension.
    pub format: Option<Format>,
    /// The `source` column; default: each file's name without extension.
    pub source: Option<String>,
    /// CSV mapping; default: `FILE.mapping.toml` beside each CSV file.
    pub mapping: Option<PathBuf>,
    /// Load files whose content was loaded before.
    pub force: bool,
    /// Rows per Arrow batch handed to the writer.
    pub batch_rows: usize,
    /// What to call the input in quarantine rows and the commit (default:
    /// its path), e.g. `flight ingest (key ks_1234abcd)`.
    pub label: Option<String>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            format: None,
            source: None,
            mapping: None,
            force: false,
            batch_rows: 64 * 1024,
            label: None,
        }
    }
}

/// What happened to one input file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileOutcome {
    pub path: PathBuf,
    pub sha256: String,
    pub format: Format,
    pub source: String,
    /// `None` when the file was skipped as already loaded.
    pub loaded: Option<(u64, u64)>,
}

impl FileOutcome {
    /// Events loaded from this file.
    pub fn events(&self) -> u64 {
        self.loaded.map_or(0, |l| l.0)
    }
    /// Rows of this file sent to quarantine.
    pub fn quarantined(&self) -> u64 {
        self.loaded.map_or(0, |l| l.1)
    }
}

/// The result of an ingest.
#[derive(Debug, Clone, Default)]
pub struct IngestMetrics {
    pub files: Vec<FileOutcome>,
    pub events: u64,
    pub quarantined: u64,
    /// Events dropped because they carry an erased person's identifier.
    pub suppressed: u64,
    /// Version of `events` created by this ingest.
    pub events_version: Option<i64>,
    /// Version of `quarantine` created by this ingest.
    pub quarantine_version: Option<i64>,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl IngestMetrics {
    /// Files skipped because their content was loaded before.
    pub fn skipped(&self) -> impl Iterator<Item = &FileOutcome> {
        self.files.iter().filter(|f| f.loaded.is_none())
    }
}

struct Planned {
    path: PathBuf,
    display: String,
    sha256: String,
    format: Format,
    source: String,
    /// `source` is `--source` (it overrides a Parquet file's own column).
    source_given: bool,
    mapping: Option<CsvMapping>,
    bytes: u64,
    txn_version: i64,
    skip: bool,
}

/// The application id recorded in Delta for a file's content.
pub fn txn_app_id(sha256: &str) -> String {
    format!("keystone-ingest-{sha256}")
}

/// Load `paths` into the lake's `events` table (bad rows into `quarantine`).
/// `progress(done_bytes, total_bytes)` is called as input is consumed.
pub async fn ingest_files(
    lake: &Lake,
    paths: &[PathBuf],
    opts: &IngestOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<IngestMetrics> {
    let started = Instant::now();
    let received_at = chrono::Utc::now().timestamp_micros();
    let mut plan = paths
        .iter()
        .map(|path| plan_file(path, opts))
        .collect::<Result<Vec<_>>>()?;
    let app_ids: Vec<String> = plan.iter().map(|p| txn_app_id(&p.sha256)).collect();
    let in_events = lake.transaction_versions(&EVENTS, &app_ids).await?;
    let in_quarantine = lake.transaction_versions(&QUARANTINE, &app_ids).await?;
    let mut seen = std::collections::HashSet::new();
    for (i, p) in plan.iter_mut().enumerate() {
        let previous = in_events[i].max(in_quarantine[i]);
        p.txn_version = previous.unwrap_or(0) + 1;
        p.skip = !seen.insert(p.sha256.clone()) || (previous.is_some() && !opts.force);
    }
    let total: u64 = plan.iter().filter(|p| !p.skip).map(|p| p.bytes).sum();

    let to_load: Vec<&Planned> = plan.iter().filter(|p| !p.skip).collect();
    let txns: Vec<(String, i64)> = to_load
        .iter()
        .map(|p| (txn_app_id(&p.sha256), p.txn_version))
        .collect();
    let describe = |counts: &HashMap<String, (u64, u64)>| -> HashMap<String, Value> {
        let files: Vec<Value> = to_load
            .iter()
            .map(|p| {
                let (e, q) = counts.get(&p.sha256).copied().unwrap_or_default();
                json!({"path": p.display, "sha256": p.sha256, "format": p.format.as_str(),
                       "source": p.source, "events": e, "quarantined": q})
            })
            .collect();
        HashMap::from([
            ("keystone.operation".to_string(), json!("ingest")),
            ("keystone.files".to_string(), Value::Array(files)),
        ])
    };

    let mut metrics = IngestMetrics::default();
    let mut counts = HashMap::new();
    if !to_load.is_empty() {
        let append = lake.append(&EVENTS, txns).await?;
        let mut sink = EventSink {
            builder: EventBatchBuilder::default(),
            append,
            batch_rows: opts.batch_rows.max(1),
            rejects: Vec::new(),
            events: 0,
            done: 0,
            total,
            progress,
        };
        for p in &to_load {
            let (events_before, rejects_before) = (sink.events, sink.rejects.len());
            read_file(p, received_at, &mut sink).await?;
            counts.insert(
                p.sha256.clone(),
                (
                    sink.events - events_before,
                    (sink.rejects.len() - rejects_before) as u64,
                ),
            );
        }
        sink.flush().await?;
        let EventSink {
            append, rejects, ..
        } = sink;
        let committed = append.commit(describe(&counts)).await?;
        metrics.events = committed.rows;
        metrics.suppressed = committed.suppressed;
        metrics.events_version = committed.version;
        if !rejects.is_empty() {
            let q_txns: Vec<(String, i64)> = to_load
                .iter()
                .filter(|p| counts.get(&p.sha256).is_some_and(|c| c.1 > 0))
                .map(|p| (txn_app_id(&p.sha256), p.txn_version))
                .collect();
            let mut q = lake.append(&QUARANTINE, q_txns).await?;
            for chunk in rejects.chunks(opts.batch_rows.max(1)) {
                q.write(quarantine_batch(chunk)?).await?;
            }
            let qm = q.commit(describe(&counts)).await?;
            metrics.quarantined = qm.rows;
            metrics.quarantine_version = qm.version;
        }
    }
    metrics.files = plan
        .iter()
        .map(|p| FileOutcome {
            path: p.path.clone(),
            sha256: p.sha256.clone(),
            format: p.format,
            source: p.source.clone(),
            loaded: (!p.skip).then(|| counts.get(&p.sha256).copied().unwrap_or_default()),
        })
        .collect();
    metrics.bytes = total;
    metrics.elapsed = started.elapsed();
    Ok(metrics)
}

fn plan_file(path: &Path, opts: &IngestOptions) -> Result<Planned> {
    let display = opts
        .label
        .clone()
        .unwrap_or_else(|| path.display().to_string());
    let io = |source: std::io::Error| Error::Io {
        path: display.clone(),
        source,
    };
    let format = match opts.format.or_else(|| Format::from_path(path)) {
        Some(f) => f,
        None => {
            return Err(Error::Format {
                path: display.clone(),
                reason: "unknown extension: pass --format ndjson|csv|parquet".into(),
            });
        }
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::other("not a regular file")));
    }
    let mut hasher = Sha256::new();
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(io)?);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let sha256 = hex::encode(hasher.finalize());
    let mapping = match format {
        Format::Csv => {
            let mapping_path = match &opts.mapping {
                Some(m) => m.clone(),
                None => path.with_extension("mapping.toml"),
            };
            if opts.mapping.is_some() && !mapping_path.exists() {
                return Err(Error::Mapping {
                    path: display,
                    reason: format!(
                        "the mapping file {} (--mapping) does not exist",
                        mapping_path.display()
                    ),
                });
            }
            if !mapping_path.exists() {
                return Err(Error::Mapping {
                    path: display,
                    reason: format!(
                        "a CSV file needs a column mapping: pass --mapping FILE or create {}",
                        mapping_path.display()
                    ),
                });
            }
            Some(CsvMapping::from_file(&mapping_path)?)
        }
        _ => None,
    };
    let source = opts.source.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "ingest".into())
    });
    Ok(Planned {
        path: path.to_path_buf(),
        display,
        sha256,
        format,
        source,
        source_given: opts.source.is_some(),
        mapping,
        bytes: meta.len(),
        txn_version: 1,
        skip: false,
    })
}

async fn read_file(p: &Planned, received_at: i64, sink: &mut EventSink<'_>) -> Result<()> {
    let io = |source: std::io::Error| Error::Io {
        path: p.display.clone(),
        source,
    };
    match (p.format, &p.mapping) {
        (Format::Ndjson, _) => {
            let f = BufReader::with_capacity(1 << 20, File::open(&p.path).map_err(io)?);
            ndjson::read_ndjson(f, &p.display, &p.source, received_at, sink).await
        }
        (Format::Csv, Some(mapping)) => {
            let f = BufReader::with_capacity(1 << 20, File::open(&p.path).map_err(io)?);
            csv::read_csv(f, &p.display, mapping, &p.source, received_at, sink).await
        }
        (Format::Csv, None) => Err(Error::Mapping {
            path: p.display.clone(),
            reason: "a CSV file needs a column mapping".into(),
        }),
        (Format::Parquet, _) => {
            parquet::read_parquet(
                &p.path,
                &p.display,
                &p.source,
                p.source_given,
                received_at,
                sink,
            )
            .await
        }
    }
}

struct EventSink<'a> {
    builder: EventBatchBuilder,
    append: Append,
    batch_rows: usize,
    rejects: Vec<QuarantineRow>,
    events: u64,
    done: u64,
    total: u64,
    progress: &'a mut dyn FnMut(u64, u64),
}

impl EventSink<'_> {
    async fn flush(&mut self) -> Result<()> {
        if !self.builder.is_empty() {
            let batch = self.builder.finish()?;
            self.append.write(batch).await?;
        }
        Ok(())
    }
}

impl RowSink for EventSink<'_> {
    async fn event(&mut self, row: EventRow) -> Result<()> {
        self.events += 1;
        self.builder.append(&row);
        if self.builder.len() >= self.batch_rows {
            self.flush().await?;
        }
        Ok(())
    }

    async fn batch(&mut self, batch: RecordBatch) -> Result<()> {
        self.flush().await?;
        self.events += batch.num_rows() as u64;
        self.append.write(batch).await?;
        Ok(())
    }

    fn reject(&mut self, row: QuarantineRow) {
        self.rejects.push(row);
    }

    fn progress(&mut self, bytes: u64) {
        self.done += bytes;
        (self.progress)(self.done.min(self.total), self.total);
    }
}
