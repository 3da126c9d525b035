//! The tables Keystone keeps in the lake.

use arrow::datatypes::SchemaRef;
use keystone_core::schema::{
    EVENT_DATE, events_schema, identities_schema, identity_audit_schema, profile_merges_schema,
    profiles_schema, quarantine_schema, segment_changes_schema, segment_membership_schema,
};

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

/// One row per identifier, with its profile (written by `keystone resolve`).
pub const IDENTITIES: TableSpec = TableSpec {
    name: "identities",
    schema: identities_schema,
    partition_columns: &[],
    description: "one row per identifier: type, value, profile, first and last seen, linking event",
};

/// One row per profile absorbed into an older one.
pub const PROFILE_MERGES: TableSpec = TableSpec {
    name: "profile_merges",
    schema: profile_merges_schema,
    partition_columns: &[],
    description: "one row per merge: the absorbed profile, the survivor, when, and the event",
};

/// One row per identifier a resolution rule cut.
pub const IDENTITY_AUDIT: TableSpec = TableSpec {
    name: "identity_audit",
    schema: identity_audit_schema,
    partition_columns: &[],
    description: "one row per identifier cut by a rule: identifier, event, rule",
};

/// One row per person: identifiers, counts, traits, computed traits, RFM.
pub const PROFILES: TableSpec = TableSpec {
    name: "profiles",
    schema: profiles_schema,
    partition_columns: &[],
    description: "one row per profile: identifiers, activity, latest traits, computed traits, RFM scores",
};

/// The members of each segment at each materialisation run.
pub const SEGMENT_MEMBERSHIP: TableSpec = TableSpec {
    name: "segment_membership",
    schema: segment_membership_schema,
    partition_columns: &["segment"],
    description: "one row per member of a segment at a run: segment, profile, run id, when",
};

/// Who entered or exited each segment at each materialisation run.
pub const SEGMENT_CHANGES: TableSpec = TableSpec {
    name: "segment_changes",
    schema: segment_changes_schema,
    partition_columns: &["segment"],
    description: "one row per profile that entered or exited a segment at a run",
};

/// Every table this version of Keystone writes.
pub const TABLES: &[TableSpec] = &[
    EVENTS,
    QUARANTINE,
    IDENTITIES,
    PROFILE_MERGES,
    IDENTITY_AUDIT,
    PROFILES,
    SEGMENT_MEMBERSHIP,
    SEGMENT_CHANGES,
];
