//! Parquet files in the events schema (for example an export of another
//! Keystone lake, or a warehouse unload). Columns are matched by name and cast
//! to the events types; missing columns are null; a value that does not cast
//! (text `"abc"` in `revenue`) rejects its row, naming the column and value.
//! `received_at` is filled when null, `timestamp` too (the time of receipt,
//! Segment's rule, as for JSON); `source` is `--source` when given, else the
//! row's own `source`, else the file name; `event_date` is always derived
//! from `timestamp`.

use std::fs::File;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{Float64Type, TimestampMicrosecondType};
use keystone_core::event::{EventRow, EventType};
use keystone_core::identifier::{normalize_email, normalize_phone};
use keystone_core::schema::{EVENT_DATE, QuarantineRow, events_schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::{Error, Result, RowSink, content_message_id};

/// Read every row of a Parquet file into `sink`.
pub async fn read_parquet(
    path: &std::path::Path,
    file: &str,
    source: &str,
    source_given: bool,
    received_at: i64,
    sink: &mut impl RowSink,
) -> Result<()> {
    let format_err = |reason: String| Error::Format {
        path: file.to_string(),
        reason,
    };
    let f = File::open(path).map_err(|source| Error::Io {
        path: file.to_string(),
        source,
    })?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| format_err(format!("not a Parquet file: {e}")))?
        .with_batch_size(8192)
        .build()
        .map_err(|e| format_err(e.to_string()))?;
    let target = events_schema();
    let mut row_no: i64 = 0;
    for batch in reader {
        let batch = batch.map_err(|e| format_err(e.to_string()))?;
        sink.progress(batch.get_array_memory_size() as u64);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
        // The first value of each row that did not cast, as a reason.
        let mut uncast: Vec<Option<String>> = vec![None; batch.num_rows()];
        for field in target.fields() {
            let col = match batch.column_by_name(field.name()) {
                Some(c) => {
                    let typed = cast(c, field.data_type()).map_err(|e| {
                        format_err(format!(
                            "column `{}` cannot be read as {}: {e}",
                            field.name(),
                            field.data_type()
                        ))
                    })?;
                    note_uncast(field.name(), c, &typed, &mut uncast);
                    typed
                }
                None => new_null_array(field.data_type(), batch.num_rows()),
            };
            columns.push(col);
        }
        let typed =
            RecordBatch::try_new(target.clone(), columns).map_err(|e| format_err(e.to_string()))?;
        // The rows' own `source`, looked up once per batch (unless --source).
        let own_source = typed
            .column_by_name("source")
            .filter(|_| !source_given)
            .map(|c| c.as_string::<i32>());
        let source_of = |i: usize| -> String {
            match own_source {
                Some(c) if c.is_valid(i) => c.value(i).to_string(),
                _ => source.to_string(),
            }
        };
        for (i, uncast) in uncast.into_iter().enumerate() {
            row_no += 1;
            let row = match uncast {
                Some(reason) => Err(reason),
                None => row_from_batch(&typed, i, &source_of(i), received_at),
            };
            match row {
                Ok(row) => sink.event(row).await?,
                Err(reason) => sink.reject(QuarantineRow {
                    source: source.to_string(),
                    file: file.to_string(),
                    line: row_no,
                    raw: row_json(&typed, i),
                    reason: format!("row {row_no}: {reason}"),
                    received_at,
                }),
            }
        }
    }
    Ok(())
}

fn row_from_batch(
    b: &RecordBatch,
    i: usize,
    source: &str,
    received_at: i64,
) -> Result<EventRow, String> {
    let s = |name: &str| -> Option<String> {
        let col = b.column_by_name(name)?;
        (!col.is_null(i)).then(|| col.as_string::<i32>().value(i).to_string())
    };
    let t = |name: &str| -> Option<i64> {
        let col = b.column_by_name(name)?;
        (!col.is_null(i)).then(|| col.as_primitive::<TimestampMicrosecondType>().value(i))
    };
    let event_type = s("type").ok_or("`type` is missing")?;
    let parsed = EventType::parse(&event_type)
        .ok_or_else(|| format!("`type` is not a Segment type: {event_type:?}"))?;
    let timestamp = t("timestamp").unwrap_or(received_at);
    let row = EventRow {
        message_id: String::new(),
        event_type,
        event: s("event"),
        name: s("name"),
        anonymous_id: s("anonymous_id"),
        user_id: s("user_id"),
        previous_id: s("previous_id"),
        group_id: s("group_id"),
        timestamp,
        original_timestamp: t("original_timestamp"),
        sent_at: t("sent_at"),
        received_at: t("received_at").unwrap_or(received_at),
        source: source.to_string(),
        context: s("context"),
        properties: s("properties"),
        traits: s("traits"),
        integrations: s("integrations"),
        // Normalised as the JSON readers do, so the column means one thing.
        email: s("email")
            .map(|raw| normalize_email(&raw).unwrap_or_else(|| raw.trim().to_string())),
        phone: s("phone")
            .map(|raw| normalize_phone(&raw).unwrap_or_else(|| raw.trim().to_string())),
        revenue: b
            .column_by_name("revenue")
            .filter(|c| !c.is_null(i))
            .map(|c| c.as_primitive::<Float64Type>().value(i)),
        currency: s("currency"),
        order_id: s("order_id"),
        product_id: s("product_id"),
        category: s("category"),
        page_url: s("page_url"),
        page_path: s("page_path"),
        referrer: s("referrer"),
        utm_source: s("utm_source"),
        utm_medium: s("utm_medium"),
        utm_campaign: s("utm_campaign"),
        ip: s("ip"),
        user_agent: s("user_agent"),
        locale: s("locale"),
        device_id: s("device_id"),
    };
    if [&row.user_id, &row.anonymous_id, &row.email, &row.phone]
        .iter()
        .all(|v| v.is_none())
    {
        return Err("no identifier: user_id, anonymous_id, email and phone are all null".into());
    }
    if parsed == EventType::Track && row.event.is_none() {
        return Err("`event` is missing: a track row names its event".into());
    }
    let message_id =
        s("message_id").unwrap_or_else(|| content_message_id(source, row_json(b, i).as_bytes()));
    Ok(EventRow { message_id, ..row })
}

/// Mark the rows of `original` whose value `typed` (its cast) lost: present
/// before the cast, NULL after (text that is not a number or a time).
fn note_uncast(name: &str, original: &ArrayRef, typed: &ArrayRef, uncast: &mut [Option<String>]) {
    if original.data_type() == typed.data_type() || original.null_count() == typed.null_count() {
        return;
    }
    let Ok(shown) = arrow::util::display::ArrayFormatter::try_new(
        original.as_ref(),
        &arrow::util::display::FormatOptions::default(),
    ) else {
        return;
    };
    for (i, reason) in uncast.iter_mut().enumerate() {
        if reason.is_none() && original.is_valid(i) && typed.is_null(i) {
            let value: String = shown.value(i).to_string().chars().take(100).collect();
            *reason = Some(format!(
                "`{name}` cannot be read as {}: {value:?}",
                typed.data_type()
            ));
        }
    }
}

fn row_json(b: &RecordBatch, i: usize) -> String {
    let slice = b.slice(i, 1);
    let without_date: Vec<usize> = (0..slice.num_columns())
        .filter(|&c| slice.schema().field(c).name() != EVENT_DATE)
        .collect();
    let Ok(slice) = slice.project(&without_date) else {
        return String::new();
    };
    let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
    if w.write(&slice).is_err() || w.finish().is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&w.into_inner())
        .trim_end()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ndjson::tests::VecSink;
    use arrow::array::{StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;

    #[tokio::test]
    async fn parquet_rows_are_cast_and_validated() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("message_id", DataType::Utf8, true),
            Field::new("type", DataType::Utf8, true),
            Field::new("user_id", DataType::Utf8, true),
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("m1"), Some("m2"), None])),
                Arc::new(StringArray::from(vec![
                    Some("page"),
                    Some("hover"),
                    Some("identify"),
                ])),
                Arc::new(StringArray::from(vec![Some("u1"), Some("u2"), Some("u3")])),
                Arc::new(TimestampMillisecondArray::from(vec![
                    Some(86_400_000),
                    Some(0),
                    Some(1),
                ])),
            ],
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let mut w =
            parquet::arrow::ArrowWriter::try_new(File::create(&path).unwrap(), schema, None)
                .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let mut sink = VecSink::default();
        read_parquet(&path, "e.parquet", "wh", false, 7, &mut sink)
            .await
            .unwrap();
        assert_eq!(sink.events.len(), 2);
        assert_eq!(sink.events[0].timestamp, 86_400_000_000);
        assert_eq!(sink.events[0].event_date(), 1);
        assert_eq!(sink.events[0].received_at, 7);
        assert!(!sink.events[1].message_id.is_empty());
        assert_eq!(sink.rejects.len(), 1);
        assert_eq!(sink.rejects[0].line, 2);
        assert!(sink.rejects[0].reason.contains("\"hover\""));
        assert!(sink.rejects[0].raw.contains("\"m2\""));
    }

    /// Text columns where the events schema has numbers and times, as a
    /// warehouse unload may write them, and a `source` column.
    fn text_file(dir: &std::path::Path) -> std::path::PathBuf {
        let text = |v: Vec<Option<&str>>| Arc::new(StringArray::from(v)) as ArrayRef;
        let schema = Arc::new(Schema::new(
            [
                "message_id",
                "type",
                "user_id",
                "timestamp",
                "revenue",
                "source",
            ]
            .map(|n| Field::new(n, DataType::Utf8, true))
            .to_vec(),
        ));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                text(vec![Some("m1"), Some("m2"), Some("m3"), Some("m4")]),
                text(vec![Some("identify"); 4]),
                text(vec![Some("u1"), Some("u2"), Some("u3"), Some("u4")]),
                text(vec![
                    Some("2026-10-01T10:00:00Z"),
                    Some("notatime"),
                    None,
                    Some("2026-10-01T10:00:00Z"),
                ]),
                text(vec![Some("12.5"), None, None, Some("abc")]),
                text(vec![Some("store_purchases"), None, Some("pos_eu"), None]),
            ],
        )
        .unwrap();
        let path = dir.join("unload.parquet");
        let mut w =
            parquet::arrow::ArrowWriter::try_new(File::create(&path).unwrap(), schema, None)
                .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        path
    }

    #[tokio::test]
    async fn values_that_do_not_cast_reject_their_row_and_missing_times_are_the_receipt() {
        let dir = tempfile::tempdir().unwrap();
        let path = text_file(dir.path());
        let mut sink = VecSink::default();
        read_parquet(&path, "unload.parquet", "unload", false, 7, &mut sink)
            .await
            .unwrap();
        let ids: Vec<&str> = sink.events.iter().map(|e| e.message_id.as_str()).collect();
        assert_eq!(ids, ["m1", "m3"]);
        assert_eq!(sink.events[0].revenue, Some(12.5));
        assert_eq!(
            sink.events[1].timestamp, 7,
            "no timestamp: the time of receipt"
        );
        // Without --source, each row's own source, else the file's name.
        assert_eq!(sink.events[0].source, "store_purchases");
        assert_eq!(sink.events[1].source, "pos_eu");
        let reasons: Vec<&str> = sink.rejects.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "row 2: `timestamp` cannot be read as Timestamp(µs, \"UTC\"): \"notatime\"",
                "row 4: `revenue` cannot be read as Float64: \"abc\"",
            ]
        );
        assert!(
            sink.rejects[1].raw.contains("\"u4\""),
            "{}",
            sink.rejects[1].raw
        );

        // --source overrides the rows' own.
        let mut sink = VecSink::default();
        read_parquet(&path, "unload.parquet", "pos", true, 7, &mut sink)
            .await
            .unwrap();
        assert!(sink.events.iter().all(|e| e.source == "pos"));
    }

    #[tokio::test]
    async fn non_parquet_file_is_a_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        std::fs::write(&path, b"hello").unwrap();
        let err = read_parquet(&path, "x.parquet", "s", false, 0, &mut VecSink::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not a Parquet file"), "{err}");
    }
}
