//! The tables Keystone keeps in the lake.

use arrow::datatypes::SchemaRef;
use keystone_core::schema::{EVENT_DATE, events_schema, quarantine_schema};

/// Name, schema and partition columns of one lake table.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: &'static str,
    pub schema: fn() -> SchemaRef,
    pub partition_columns: &'static [&'static str],
    pub description: &'static str,
}

/// One row per event (Segment spec plus promoted columns).
pub const EVENTS: TableSpec = TableSpec {
    name: "events",
    schema: events_schema,
    partition_columns: &[EVENT_DATE],
    description: "one row per event: Segment fields, JSON objects as text, promoted typed columns",
};

/// One row per rejected input row, with the reason.
pub const QUARANTINE: TableSpec = TableSpec {
    name: "quarantine",
    schema: quarantine_schema,
    partition_columns: &[EVENT_DATE],
    description: "one row per rejected input row: file, line, raw text and reason",
};

/// Every table this version of Keystone writes.
pub const TABLES: &[TableSpec] = &[EVENTS, QUARANTINE];
