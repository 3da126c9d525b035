//! Arrow schemas of the lake tables, and builders that fill them.
//!
//! Every column is nullable: validation happens when an event is parsed (see
//! [`crate::event`]), and nullable columns keep the schema identical for
//! every reader (Delta, DataFusion, Flight clients).

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Date32Builder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::Result;
use crate::event::EventRow;

/// Name of the partition column of `events` and `quarantine`.
pub const EVENT_DATE: &str = "event_date";

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}

/// The `events` table: Segment fields, JSON objects as text, promoted columns,
/// and the `event_date` partition.
pub fn events_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            utf8("message_id"),
            utf8("type"),
            utf8("event"),
            utf8("name"),
            utf8("anonymous_id"),
            utf8("user_id"),
            utf8("previous_id"),
            utf8("group_id"),
            Field::new("timestamp", ts(), true),
            Field::new("original_timestamp", ts(), true),
            Field::new("sent_at", ts(), true),
            Field::new("received_at", ts(), true),
            utf8("source"),
            utf8("context"),
            utf8("properties"),
            utf8("traits"),
            utf8("integrations"),
            utf8("email"),
            utf8("phone"),
            Field::new("revenue", DataType::Float64, true),
            utf8("currency"),
            utf8("order_id"),
            utf8("product_id"),
            utf8("category"),
            utf8("page_url"),
            utf8("page_path"),
            utf8("referrer"),
            utf8("utm_source"),
            utf8("utm_medium"),
            utf8("utm_campaign"),
            utf8("ip"),
            utf8("user_agent"),
            utf8("locale"),
            utf8("device_id"),
            Field::new(EVENT_DATE, DataType::Date32, true),
        ]))
    });
    SCHEMA.clone()
}

/// The `identities` table: one identifier and the profile it belongs to.
/// `linked_by` is the message id of the event that attached it.
pub fn identities_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            utf8("identifier_type"),
            utf8("identifier"),
            utf8("profile_id"),
            Field::new("first_seen", ts(), true),
            Field::new("last_seen", ts(), true),
            utf8("linked_by"),
        ]))
    });
    SCHEMA.clone()
}

/// The `profile_merges` table: one profile absorbed into an older one.
pub fn profile_merges_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            utf8("from_profile_id"),
            utf8("into_profile_id"),
            Field::new("merged_at", ts(), true),
            utf8("reason"),
            utf8("message_id"),
            Field::new("run_id", DataType::Int64, true),
        ]))
    });
    SCHEMA.clone()
}

/// The `segment_membership` table: the members of a segment at one
/// materialisation run (one full snapshot per segment and run).
pub fn segment_membership_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("segment", DataType::Utf8, false),
            Field::new("profile_id", DataType::Utf8, false),
            Field::new("run_id", DataType::Int64, false),
            Field::new("materialized_at", ts(), false),
        ]))
    });
    SCHEMA.clone()
}

/// The `segment_changes` table: who entered or exited a segment at a run,
/// against the segment's previous run.
pub fn segment_changes_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("segment", DataType::Utf8, false),
            Field::new("profile_id", DataType::Utf8, false),
            Field::new("change", DataType::Utf8, false),
            Field::new("run_id", DataType::Int64, false),
            Field::new("at", ts(), false),
        ]))
    });
    SCHEMA.clone()
}

/// The `identity_audit` table: one identifier an event carried that a rule cut.
pub fn identity_audit_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            utf8("identifier_type"),
            utf8("identifier"),
            utf8("message_id"),
            utf8("rule"),
            Field::new("event_timestamp", ts(), true),
            Field::new("run_id", DataType::Int64, true),
        ]))
    });
    SCHEMA.clone()
}

/// The fixed columns of `profiles` (computed traits and RFM scores follow).
pub fn profiles_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            utf8("profile_id"),
            utf8("user_id"),
            utf8("email"),
            utf8("phone"),
            Field::new("first_seen", ts(), true),
            Field::new("last_seen", ts(), true),
            Field::new("event_count", DataType::Int64, true),
            Field::new("order_count", DataType::Int64, true),
            Field::new("revenue", DataType::Float64, true),
            Field::new("last_order_at", ts(), true),
            utf8("traits"),
            utf8("consents"),
        ]))
    });
    SCHEMA.clone()
}

/// The `quarantine` table: one rejected input row.
pub fn quarantine_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            utf8("source"),
            utf8("file"),
            Field::new("line", DataType::Int64, true),
            utf8("raw"),
            utf8("reason"),
            Field::new("received_at", ts(), true),
            Field::new(EVENT_DATE, DataType::Date32, true),
        ]))
    });
    SCHEMA.clone()
}

macro_rules! string_columns {
    ($($field:ident),* $(,)?) => {
        /// Column builders for the string columns of `events`.
        #[derive(Default)]
        struct StringColumns { $($field: StringBuilder,)* }
        impl StringColumns {
            fn append(&mut self, row: &EventRow) { $(self.$field.append_option(row.$field.as_deref());)* }
        }
    };
}
string_columns!(
    event,
    name,
    anonymous_id,
    user_id,
    previous_id,
    group_id,
    context,
    properties,
    traits,
    integrations,
    email,
    phone,
    currency,
    order_id,
    product_id,
    category,
    page_url,
    page_path,
    referrer,
    utm_source,
    utm_medium,
    utm_campaign,
    ip,
    user_agent,
    locale,
    device_id,
);

/// Accumulates [`EventRow`]s and emits record batches of [`events_schema`].
///
/// ```
/// use keystone_core::schema::EventBatchBuilder;
/// let mut b = EventBatchBuilder::default();
/// assert_eq!(b.len(), 0);
/// let batch = b.finish().unwrap();
/// assert_eq!(batch.num_rows(), 0);
/// ```
#[derive(Default)]
pub struct EventBatchBuilder {
    len: usize,
    message_id: StringBuilder,
    event_type: StringBuilder,
    source: StringBuilder,
    strings: StringColumns,
    timestamp: TimestampMicrosecondBuilder,
    original_timestamp: TimestampMicrosecondBuilder,
    sent_at: TimestampMicrosecondBuilder,
    received_at: TimestampMicrosecondBuilder,
    revenue: Float64Builder,
    event_date: Date32Builder,
}

impl EventBatchBuilder {
    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no row is buffered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append one row.
    pub fn append(&mut self, row: &EventRow) {
        self.len += 1;
        self.message_id.append_value(&row.message_id);
        self.event_type.append_value(&row.event_type);
        self.source.append_value(&row.source);
        self.strings.append(row);
        self.timestamp.append_value(row.timestamp);
        self.original_timestamp
            .append_option(row.original_timestamp);
        self.sent_at.append_option(row.sent_at);
        self.received_at.append_value(row.received_at);
        self.revenue.append_option(row.revenue);
        self.event_date.append_value(row.event_date());
    }

    /// Emit the buffered rows as a batch and start a new one.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        self.len = 0;
        let s = &mut self.strings;
        let tz = |b: &mut TimestampMicrosecondBuilder| -> ArrayRef {
            Arc::new(b.finish().with_timezone("UTC"))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.message_id.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(s.event.finish()),
            Arc::new(s.name.finish()),
            Arc::new(s.anonymous_id.finish()),
            Arc::new(s.user_id.finish()),
            Arc::new(s.previous_id.finish()),
            Arc::new(s.group_id.finish()),
            tz(&mut self.timestamp),
            tz(&mut self.original_timestamp),
            tz(&mut self.sent_at),
            tz(&mut self.received_at),
            Arc::new(self.source.finish()),
            Arc::new(s.context.finish()),
            Arc::new(s.properties.finish()),
            Arc::new(s.traits.finish()),
            Arc::new(s.integrations.finish()),
            Arc::new(s.email.finish()),
            Arc::new(s.phone.finish()),
            Arc::new(self.revenue.finish()),
            Arc::new(s.currency.finish()),
            Arc::new(s.order_id.finish()),
            Arc::new(s.product_id.finish()),
            Arc::new(s.category.finish()),
            Arc::new(s.page_url.finish()),
            Arc::new(s.page_path.finish()),
            Arc::new(s.referrer.finish()),
            Arc::new(s.utm_source.finish()),
            Arc::new(s.utm_medium.finish()),
            Arc::new(s.utm_campaign.finish()),
            Arc::new(s.ip.finish()),
            Arc::new(s.user_agent.finish()),
            Arc::new(s.locale.finish()),
            Arc::new(s.device_id.finish()),
            Arc::new(self.event_date.finish()),
        ];
        Ok(RecordBatch::try_new(events_schema(), columns)?)
    }
}

/// One rejected input row, for the `quarantine` table.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineRow {
    pub source: String,
    pub file: String,
    /// 1-based line (NDJSON) or record number (CSV, Parquet row + 1).
    pub line: i64,
    pub raw: String,
    pub reason: String,
    pub received_at: i64,
}

/// Build a `quarantine` batch from rows.
pub fn quarantine_batch(rows: &[QuarantineRow]) -> Result<RecordBatch> {
    let mut source = StringBuilder::new();
    let mut file = StringBuilder::new();
    let mut line = Int64Builder::new();
    let mut raw = StringBuilder::new();
    let mut reason = StringBuilder::new();
    let mut received = TimestampMicrosecondBuilder::new();
    let mut date = Date32Builder::new();
    for r in rows {
        source.append_value(&r.source);
        file.append_value(&r.file);
        line.append_value(r.line);
        raw.append_value(&r.raw);
        reason.append_value(&r.reason);
        received.append_value(r.received_at);
        date.append_value(i32::try_from(r.received_at.div_euclid(86_400_000_000)).unwrap_or(0));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(source.finish()),
        Arc::new(file.finish()),
        Arc::new(line.finish()),
        Arc::new(raw.finish()),
        Arc::new(reason.finish()),
        Arc::new(received.finish().with_timezone("UTC")),
        Arc::new(date.finish()),
    ];
    Ok(RecordBatch::try_new(quarantine_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ParseOptions, parse_event_str};

    #[test]
    fn builder_output_matches_events_schema() {
        let opts = ParseOptions::new("s", 0, &|| "m".into());
        let row = parse_event_str(
            r#"{"type":"track","event":"Order Completed","userId":"u","properties":{"revenue":3}}"#,
            &opts,
        )
        .unwrap();
        let mut b = EventBatchBuilder::default();
        b.append(&row);
        b.append(&row);
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), events_schema());
        assert!(b.is_empty());
    }

    #[test]
    fn quarantine_batch_has_one_row_per_rejection() {
        let row = QuarantineRow {
            source: "s".into(),
            file: "f.ndjson".into(),
            line: 3,
            raw: "{".into(),
            reason: "invalid JSON".into(),
            received_at: 86_400_000_000,
        };
        let batch = quarantine_batch(&[row.clone(), row]).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), quarantine_schema());
    }
}
