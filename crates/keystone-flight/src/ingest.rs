//! Bulk ingest: the client's Arrow stream staged as a Parquet file, then
//! loaded by the same code as `keystone ingest` (same validation, quarantine,
//! content-hash duplicate detection and single atomic commit).

use arrow::array::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use tempfile::NamedTempFile;
use tonic::Status;

/// Write the stream to a temporary Parquet file; `None` when it holds no row.
/// More than `max_bytes` of Arrow data → RESOURCE_EXHAUSTED, nothing kept.
pub async fn stage(
    mut stream: FlightRecordBatchStream,
    max_bytes: u64,
) -> Result<Option<NamedTempFile>, Status> {
    let file = NamedTempFile::new()
        .map_err(|e| Status::internal(format!("cannot stage the ingest: {e}")))?;
    let mut writer: Option<ArrowWriter<std::fs::File>> = None;
    let mut bytes: u64 = 0;
    let mut rows: usize = 0;
    while let Some(batch) = stream.next().await {
        let batch: RecordBatch = batch.map_err(Status::from)?;
        bytes += batch.get_array_memory_size() as u64;
        if bytes > max_bytes {
            return Err(Status::resource_exhausted(format!(
                "bulk ingest larger than [flight] max_ingest_bytes = {max_bytes}: nothing was loaded; split it"
            )));
        }
        rows += batch.num_rows();
        if writer.is_none() {
            let handle = file
                .reopen()
                .map_err(|e| Status::internal(format!("cannot stage the ingest: {e}")))?;
            writer = Some(
                ArrowWriter::try_new(handle, batch.schema(), None)
                    .map_err(|e| Status::invalid_argument(format!("bulk ingest: {e}")))?,
            );
        }
        if let Some(w) = writer.as_mut() {
            tokio::task::block_in_place(|| w.write(&batch))
                .map_err(|e| Status::invalid_argument(format!("bulk ingest: {e}")))?;
        }
    }
    let Some(writer) = writer else {
        return Ok(None);
    };
    tokio::task::block_in_place(|| writer.close())
        .map_err(|e| Status::internal(format!("cannot stage the ingest: {e}")))?;
    Ok((rows > 0).then_some(file))
}
