//! # keystone-ingest
//!
//! Turns files into rows of the `events` table, keeping every bad row in
//! `quarantine` with the file, line and reason.
//!
//! ```text
//!  FILE.ndjson ─┐                      ┌─▶ EventBatchBuilder ─▶ Append(events)     ┐ one commit,
//!  FILE.csv ────┼─ reader ─▶ parse_event ┤                                           │ txn per file
//!  FILE.parquet ┘   (mapping for CSV)  └─▶ QuarantineRow ────▶ Append(quarantine) ┘ (content hash)
//! ```
//!
//! * [`ndjson`] — Segment-spec JSON, one message per line;
//! * [`csv`] and [`mapping`] — offline data (store purchases, CRM exports)
//!   mapped onto the event model by a TOML column mapping;
//! * [`parquet`] — files already in the events schema;
//! * [`load`] — the `keystone ingest` operation: content hash, duplicate
//!   detection, one atomic commit, metrics;
//! * [`wal`] and [`flush`] — the collector's write-ahead log (group-committed
//!   fsync before the HTTP 200) and the flusher that lands its segments in the
//!   lake exactly once (a Delta application transaction per WAL).

pub mod csv;
pub mod error;
pub mod flush;
pub mod load;
pub mod mapping;
pub mod ndjson;
pub mod parquet;
pub mod wal;

pub use error::{Error, Result};
pub use load::{FileOutcome, Format, IngestMetrics, IngestOptions, ingest_files};

use arrow::array::RecordBatch;
use keystone_core::event::EventRow;
use keystone_core::schema::QuarantineRow;

/// Where a reader sends what it read: good rows and rejected ones.
pub trait RowSink {
    /// A valid event.
    fn event(&mut self, row: EventRow) -> impl std::future::Future<Output = Result<()>>;
    /// A batch of valid events in the events schema (readers that parse in parallel).
    fn batch(&mut self, batch: RecordBatch) -> impl std::future::Future<Output = Result<()>>;
    /// A rejected input row.
    fn reject(&mut self, row: QuarantineRow);
    /// `bytes` more of the input were consumed (for progress).
    fn progress(&mut self, _bytes: u64) {}
}

/// A stable message id for a row that has none: UUIDv5 of its source and content,
/// so loading the same row twice gives the same id.
pub fn content_message_id(source: &str, content: &[u8]) -> String {
    let ns = uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        b"https://keystone.invalid/ingest",
    );
    let mut buf = Vec::with_capacity(source.len() + 1 + content.len());
    buf.extend_from_slice(source.as_bytes());
    buf.push(0);
    buf.extend_from_slice(content);
    uuid::Uuid::new_v5(&ns, &buf).to_string()
}
