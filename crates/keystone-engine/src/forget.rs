//! `keystone forget`: erase people (GDPR art. 17), physically.
//!
//! ```text
//!  TYPE:VALUE ─▶ normalised like resolve ─▶ profiles holding it (identities)
//!     └─▶ every identifier of those profiles, and the profiles they absorbed
//!  delete: events (their identifiers' columns, and events resolved to them),
//!          identities, profiles, profile_merges, identity_audit,
//!          segment_membership, segment_changes, quarantine (raw text),
//!          rows of past exports Keystone wrote (local files and s3:// objects)
//!  then, per touched table: VACUUM with zero retention (the files the
//!  deletes rewrote are deleted from storage), a checkpoint, and the log entries before it
//!  removed (their file statistics may hold the erased values)
//!  suppress: SHA-256 of each identifier in _keystone/suppressions.json, so
//!  ingest and the collector drop the person's future events
//!  audit: counts only, identifiers hashed, in _keystone/erasures.json
//! ```
//!
//! Zero-retention vacuum ends time travel to versions before the erasure:
//! that is the point. A reader holding an older snapshot while it runs may
//! fail to read files that are gone and must re-open the table.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, AsArray, RecordBatch};
use keystone_lake::{
    EVENTS, IDENTITIES, IDENTITY_AUDIT, Lake, PROFILE_MERGES, PROFILES, QUARANTINE,
    SEGMENT_CHANGES, SEGMENT_MEMBERSHIP, TableSpec,
};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use crate::resolve::ResolveState;
use crate::{Engine, Error, Result};

const ERASURES_STATE: &str = "erasures.json";

/// Identifier types whose values are event columns (deleted by value even
/// before `resolve` has linked the events).
const EVENT_COLUMNS: &[(&str, &str)] = &[
    ("user_id", "user_id"),
    ("anonymous_id", "anonymous_id"),
    ("email", "email"),
    ("phone", "phone"),
    ("device_id", "device_id"),
];

/// One identifier to erase, as given (`email:jane@example.org`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subject {
    pub kind: String,
    pub value: String,
}

impl Subject {
    /// Parse `TYPE:VALUE`.
    pub fn parse(s: &str) -> Result<Self> {
        let (kind, value) = s.split_once(':').ok_or_else(|| {
            Error::Forget(format!(
                "{s:?}: expected TYPE:VALUE, e.g. email:jane@example.org or user_id:u-42"
            ))
        })?;
        let kind = kind.trim().to_ascii_lowercase();
        let value = value.trim();
        if kind.is_empty() || value.is_empty() {
            return Err(Error::Forget(format!(
                "{s:?}: both the type and the value are needed (TYPE:VALUE)"
            )));
        }
        Ok(Self {
            kind,
            value: value.to_string(),
        })
    }
}

/// The hex SHA-256 of `type:value` (a suppression entry, an audit entry).
pub fn identifier_digest(kind: &str, value: &str) -> String {
    keystone_lake::suppression_digest(kind, value)
}

/// One erasure, as audited (no personal data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErasureRecord {
    /// RFC 3339.
    pub at: String,
    /// `type:sha256(type:value)` of each identifier asked for.
    pub requested: Vec<String>,
    pub profiles: u64,
    pub identifiers: u64,
    /// Rows removed, per table.
    pub removed: BTreeMap<String, u64>,
    /// Export files rewritten without the people.
    pub exports_rewritten: u64,
    /// Export files that could not be rewritten (URL and error): the
    /// people's rows may still be in them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports_failed: Vec<String>,
    /// Data files deleted from storage by the vacuum.
    pub files_deleted: u64,
    pub seconds: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ErasuresFile {
    erasures: Vec<ErasureRecord>,
}

fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn in_list<'a>(values: impl IntoIterator<Item = &'a String>) -> String {
    let items: Vec<String> = values.into_iter().map(|v| sql_text(v)).collect();
    items.join(", ")
}

fn strings(batches: &[arrow::array::RecordBatch], col: usize) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for b in batches {
        let c = arrow::compute::cast(b.column(col), &arrow::datatypes::DataType::Utf8)?;
        let c = c.as_string::<i32>();
        for i in 0..c.len() {
            if !c.is_null(i) {
                out.push(c.value(i).to_string());
            }
        }
    }
    Ok(out)
}

/// The erasures done so far.
pub async fn erasures(lake: &Lake) -> Result<Vec<ErasureRecord>> {
    let Some(bytes) = lake.read_state(ERASURES_STATE).await? else {
        return Ok(Vec::new());
    };
    let file: ErasuresFile = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Forget(format!("_keystone/{ERASURES_STATE}: {e}")))?;
    Ok(file.erasures)
}

impl Engine {
    /// Erase the people holding `subjects`; see the module docs.
    pub async fn forget(&self, subjects: &[Subject]) -> Result<ErasureRecord> {
        let started = Instant::now();
        if subjects.is_empty() {
            return Err(Error::Forget(
                "nothing to forget: give TYPE:VALUE or --file".into(),
            ));
        }
        self.check_identifier_types(subjects).await?;
        let Person {
            asked,
            profiles,
            identifiers,
            all_profiles,
        } = self.find_person(subjects).await?;

        // The saved aggregate states of the profile build hold traits and
        // consents (of any profile the person's events reached), also in
        // the Parquet file of earlier versions if no run replaced it, and
        // the identity graph's snapshot holds the person's identifiers:
        // dropped first, so the next resolve rebuilds from what remains.
        for state in [
            crate::resolve::PROFILE_STATE,
            crate::resolve::LEGACY_PROFILE_STATE,
            crate::resolve::GRAPH_SNAPSHOT,
        ] {
            self.lake().delete_state(state).await?;
        }
        let mut removed = BTreeMap::new();
        let mut touched: Vec<&TableSpec> = Vec::new();
        // Events: by identifier columns, and any other event resolved to them.
        let by_columns = column_predicates(&identifiers);
        let mut event_predicate = by_columns.clone();
        if !profiles.is_empty() && self.has(&IDENTITIES).await? && self.has(&EVENTS).await? {
            let not_columns = if by_columns.is_empty() {
                String::new()
            } else {
                format!(" AND NOT coalesce({}, false)", by_columns.join(" OR "))
            };
            let rest = self
                .collect(&format!(
                    "SELECT message_id FROM events_resolved WHERE profile_id IN ({}){not_columns}",
                    in_list(&profiles)
                ))
                .await?;
            let rest = strings(&rest, 0)?;
            if !rest.is_empty() {
                event_predicate.push(format!("message_id IN ({})", in_list(&rest)));
            }
        }
        if !event_predicate.is_empty() {
            self.delete(
                &EVENTS,
                &event_predicate.join(" OR "),
                &mut removed,
                &mut touched,
            )
            .await?;
        }
        if !all_profiles.is_empty() {
            let ids = in_list(&all_profiles);
            for spec in [
                &IDENTITIES,
                &PROFILES,
                &SEGMENT_MEMBERSHIP,
                &SEGMENT_CHANGES,
            ] {
                self.delete(
                    spec,
                    &format!("profile_id IN ({ids})"),
                    &mut removed,
                    &mut touched,
                )
                .await?;
            }
            self.delete(
                &PROFILE_MERGES,
                &format!("from_profile_id IN ({ids}) OR into_profile_id IN ({ids})"),
                &mut removed,
                &mut touched,
            )
            .await?;
        }
        let values: BTreeSet<&String> = identifiers.iter().map(|(_, v)| v).collect();
        // An over-long value was cut by a rule and audited shortened.
        let audited: BTreeSet<String> = values
            .iter()
            .map(|v| crate::resolve::audit_value(v.to_string()))
            .chain(values.iter().map(|v| v.to_string()))
            .collect();
        self.delete(
            &IDENTITY_AUDIT,
            &format!("identifier IN ({})", in_list(audited.iter())),
            &mut removed,
            &mut touched,
        )
        .await?;
        // Quarantine keeps raw input: any row whose text holds a value.
        let raw: Vec<String> = values
            .iter()
            .filter(|v| v.chars().count() >= 4)
            .map(|v| {
                let escaped = v.to_lowercase().replace('\'', "''");
                format!("strpos(lower(raw), '{escaped}') > 0")
            })
            .collect();
        if !raw.is_empty() {
            self.delete(&QUARANTINE, &raw.join(" OR "), &mut removed, &mut touched)
                .await?;
        }

        // An unreachable export must not stop the erasure before the
        // suppression and the audit: its failure is recorded instead.
        let (exports_rewritten, exports_failed) = self.forget_in_exports(&all_profiles).await;

        let mut files_deleted = 0;
        for spec in &touched {
            files_deleted += self.lake().erase_history(spec).await?;
        }

        // Suppress the identifiers for future events, then audit.
        let digests: Vec<String> = identifiers
            .iter()
            .map(|(k, v)| identifier_digest(k, v))
            .collect();
        self.lake().add_suppressions(&digests).await?;
        let record = ErasureRecord {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            requested: asked
                .iter()
                .map(|(k, v)| format!("{k}:{}", identifier_digest(k, v)))
                .collect(),
            profiles: profiles.len() as u64,
            identifiers: identifiers.len() as u64,
            removed,
            exports_rewritten,
            exports_failed,
            files_deleted,
            seconds: started.elapsed().as_secs_f64(),
        };
        let mut all = erasures(self.lake()).await?;
        all.push(record.clone());
        let bytes = serde_json::to_vec_pretty(&ErasuresFile { erasures: all })
            .map_err(|e| Error::Forget(e.to_string()))?;
        self.lake().write_state(ERASURES_STATE, bytes).await?;
        Ok(record)
    }

    /// Refuse a type this lake has never seen (`emial:…` would erase
    /// nothing and suppress nothing real, yet report success): the event
    /// columns' types and those `identities` or `identity_audit` hold.
    async fn check_identifier_types(&self, subjects: &[Subject]) -> Result<()> {
        let mut known: BTreeSet<String> =
            EVENT_COLUMNS.iter().map(|(k, _)| k.to_string()).collect();
        for spec in [&IDENTITIES, &IDENTITY_AUDIT] {
            if self.has(spec).await? {
                let types = self
                    .collect(&format!(
                        "SELECT DISTINCT identifier_type FROM {}",
                        spec.name
                    ))
                    .await?;
                known.extend(strings(&types, 0)?);
            }
        }
        if let Some(unknown) = subjects.iter().find(|s| !known.contains(&s.kind)) {
            return Err(Error::Forget(format!(
                "{}:{}: unknown identifier type {:?}; this lake knows {}",
                unknown.kind,
                unknown.value,
                unknown.kind,
                known.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(())
    }

    async fn has(&self, spec: &TableSpec) -> Result<bool> {
        Ok(self.lake().load(spec).await?.is_some())
    }

    async fn delete<'a>(
        &self,
        spec: &'a TableSpec,
        predicate: &str,
        removed: &mut BTreeMap<String, u64>,
        touched: &mut Vec<&'a TableSpec>,
    ) -> Result<()> {
        if self.lake().load(spec).await?.is_none() {
            return Ok(());
        }
        let n = self.lake().delete_where(spec, predicate).await?;
        *removed.entry(spec.name.to_string()).or_default() += n;
        if n > 0 {
            touched.push(spec);
        }
        Ok(())
    }

    /// Rewrite the export files Keystone wrote (local or in object storage)
    /// without `profiles`: how many changed, and the files that could not
    /// be rewritten (each with its error). A file since deleted or replaced
    /// by one without a `profile_id` column is left alone.
    async fn forget_in_exports(&self, profiles: &BTreeSet<String>) -> (u64, Vec<String>) {
        if profiles.is_empty() {
            return (0, Vec::new());
        }
        let exports = match crate::export::exports(self.lake()).await {
            Ok(exports) => exports,
            Err(e) => return (0, vec![e.to_string()]),
        };
        let (mut rewritten, mut failed) = (0, Vec::new());
        let mut seen = BTreeSet::new();
        for export in exports {
            if !seen.insert(export.url.clone()) {
                continue;
            }
            match self.forget_in_export(&export, profiles).await {
                Ok(true) => rewritten += 1,
                Ok(false) => {}
                Err(e) => failed.push(e.to_string()),
            }
        }
        (rewritten, failed)
    }

    /// Rewrite one export without `profiles`; `false` when nothing changed.
    async fn forget_in_export(
        &self,
        export: &crate::export::ExportRecord,
        profiles: &BTreeSet<String>,
    ) -> Result<bool> {
        let file = ExportFile::locate(&export.url, self.lake())?;
        let Some(bytes) = file.read().await? else {
            return Ok(false);
        };
        let Some(kept) = without_profiles(&bytes, export.format, profiles, &export.url)? else {
            return Ok(false);
        };
        file.write(kept).await?;
        Ok(true)
    }
}

/// Where an export file lives.
enum ExportFile {
    Local(std::path::PathBuf),
    Remote {
        store: Box<dyn object_store::ObjectStore>,
        path: object_store::path::Path,
        url: String,
    },
}

impl ExportFile {
    fn locate(url: &str, lake: &keystone_lake::Lake) -> Result<Self> {
        if !url.contains("://") || url.starts_with("file://") {
            return Ok(Self::Local(url.trim_start_matches("file://").into()));
        }
        let (store, path) = crate::export::object_store_for(url, lake)
            .map_err(|e| Error::Forget(format!("export {url}: {e}")))?;
        Ok(Self::Remote {
            store,
            path,
            url: url.to_string(),
        })
    }

    /// The file's bytes, or `None` when it no longer exists.
    async fn read(&self) -> Result<Option<bytes::Bytes>> {
        match self {
            Self::Local(path) => match std::fs::read(path) {
                Ok(b) => Ok(Some(b.into())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::Forget(format!("export {}: {e}", path.display()))),
            },
            Self::Remote { store, path, url } => match store.get(path).await {
                Ok(got) => {
                    Ok(Some(got.bytes().await.map_err(|e| {
                        Error::Forget(format!("export {url}: {e}"))
                    })?))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(Error::Forget(format!("export {url}: {e}"))),
            },
        }
    }

    /// Replace the file whole (a local file through a rename, an object by
    /// one put: readers see the old or the new file, never a part).
    async fn write(&self, bytes: Vec<u8>) -> Result<()> {
        match self {
            Self::Local(path) => {
                let tmp = path.with_extension("keystone-forget.tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, path)?;
            }
            Self::Remote { store, path, url } => {
                store
                    .put(path, bytes.into())
                    .await
                    .map_err(|e| Error::Forget(format!("export {url}: {e}")))?;
            }
        }
        Ok(())
    }
}

/// A person to erase or to report on: what was asked (normalised), the
/// profiles holding it, every identifier of those profiles, and those
/// profiles with the ones they absorbed.
#[derive(Debug, Clone, Default)]
pub struct Person {
    pub asked: BTreeSet<(String, String)>,
    pub profiles: BTreeSet<String>,
    pub identifiers: BTreeSet<(String, String)>,
    pub all_profiles: BTreeSet<String>,
}

impl Engine {
    /// Find the person holding `subjects` (see [`Person`]).
    pub async fn find_person(&self, subjects: &[Subject]) -> Result<Person> {
        let region = ResolveState::load(self.lake())
            .await?
            .and_then(|s| s.rules.default_region);
        let asked: BTreeSet<(String, String)> = subjects
            .iter()
            .map(|s| {
                (
                    s.kind.clone(),
                    normalise(&s.kind, &s.value, region.as_deref()),
                )
            })
            .collect();

        // The profiles, every identifier they hold, and the profiles they absorbed.
        let mut profiles: BTreeSet<String> = BTreeSet::new();
        let mut identifiers: BTreeSet<(String, String)> = asked.clone();
        if self.has(&IDENTITIES).await? {
            let wanted: Vec<String> = asked
                .iter()
                .map(|(k, v)| {
                    format!(
                        "(identifier_type = {} AND identifier = {})",
                        sql_text(k),
                        sql_text(v)
                    )
                })
                .collect();
            let found = self
                .collect(&format!(
                    "SELECT DISTINCT profile_id FROM identities WHERE {}",
                    wanted.join(" OR ")
                ))
                .await?;
            profiles.extend(strings(&found, 0)?);
            if !profiles.is_empty() {
                let held = self
                    .collect(&format!(
                        "SELECT identifier_type, identifier FROM identities WHERE profile_id IN ({})",
                        in_list(&profiles)
                    ))
                    .await?;
                let kinds = strings(&held, 0)?;
                let values = strings(&held, 1)?;
                identifiers.extend(kinds.into_iter().zip(values));
            }
        }
        let mut all_profiles = profiles.clone();
        if !profiles.is_empty() && self.has(&PROFILE_MERGES).await? {
            let absorbed = self
                .collect(&format!(
                    "SELECT from_profile_id FROM profile_merges WHERE into_profile_id IN ({})",
                    in_list(&profiles)
                ))
                .await?;
            all_profiles.extend(strings(&absorbed, 0)?);
        }

        Ok(Person {
            asked,
            profiles,
            identifiers,
            all_profiles,
        })
    }

    /// Everything Keystone holds about the person holding `subjects` (right
    /// of access): profiles, identifiers, merges, segment memberships and
    /// every event, as one JSON document.
    pub async fn export_subject(&self, subjects: &[Subject]) -> Result<serde_json::Value> {
        let person = self.find_person(subjects).await?;
        let ids = in_list(&person.all_profiles);
        let none = "NULL";
        let ids = if ids.is_empty() {
            none.to_string()
        } else {
            ids
        };
        let by_columns = column_predicates(&person.identifiers);
        let mut doc = serde_json::Map::new();
        doc.insert(
            "asked".into(),
            serde_json::json!(
                person
                    .asked
                    .iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect::<Vec<_>>()
            ),
        );
        let queries: Vec<(&str, &TableSpec, String)> = vec![
            (
                "profiles",
                &PROFILES,
                format!("SELECT * FROM profiles WHERE profile_id IN ({ids})"),
            ),
            (
                "identities",
                &IDENTITIES,
                format!(
                    "SELECT * FROM identities WHERE profile_id IN ({ids}) ORDER BY identifier_type, identifier"
                ),
            ),
            (
                "profile_merges",
                &PROFILE_MERGES,
                format!(
                    "SELECT * FROM profile_merges WHERE from_profile_id IN ({ids}) OR into_profile_id IN ({ids})"
                ),
            ),
            (
                "segment_membership",
                &SEGMENT_MEMBERSHIP,
                format!(
                    "SELECT segment, run_id, materialized_at FROM segment_membership WHERE profile_id IN ({ids}) ORDER BY run_id, segment"
                ),
            ),
            ("events", &EVENTS, {
                let mut preds = by_columns.clone();
                if !person.profiles.is_empty() && self.has(&IDENTITIES).await? {
                    preds.push(format!("message_id IN (SELECT message_id FROM events_resolved WHERE profile_id IN ({ids}))"));
                }
                let preds = if preds.is_empty() {
                    "false".to_string()
                } else {
                    preds.join(" OR ")
                };
                format!("SELECT * FROM events WHERE {preds} ORDER BY \"timestamp\", message_id")
            }),
        ];
        for (name, spec, sql) in queries {
            let rows = if self.has(spec).await? {
                let batches = self.collect(&sql).await?;
                let mut writer = arrow::json::ArrayWriter::new(Vec::new());
                for b in &batches {
                    writer.write(b)?;
                }
                writer.finish()?;
                let bytes = writer.into_inner();
                if bytes.is_empty() {
                    serde_json::Value::Array(Vec::new())
                } else {
                    serde_json::from_slice(&bytes).map_err(|e| Error::Output(e.to_string()))?
                }
            } else {
                serde_json::Value::Array(Vec::new())
            };
            doc.insert(name.to_string(), rows);
        }
        Ok(serde_json::Value::Object(doc))
    }
}

/// The export file `bytes` without the rows of `profiles`, or `None` when
/// it holds none of them (or has no `profile_id` column). CSV columns are
/// read and written back as text, so the other rows keep their values.
fn without_profiles(
    bytes: &bytes::Bytes,
    format: crate::export::ExportFormat,
    profiles: &BTreeSet<String>,
    location: &str,
) -> Result<Option<Vec<u8>>> {
    let fail = |e: &dyn std::fmt::Display| Error::Forget(format!("export {location}: {e}"));
    let batches: Vec<RecordBatch> = match format {
        crate::export::ExportFormat::Parquet => {
            datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                bytes.clone(),
            )
            .map_err(|e| fail(&e))?
            .build()
            .map_err(|e| fail(&e))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| fail(&e))?
        }
        crate::export::ExportFormat::Csv => {
            let mut header = csv_header(bytes).map_err(|e| fail(&e))?;
            let fields: Vec<arrow::datatypes::Field> = header
                .drain(..)
                .map(|name| {
                    arrow::datatypes::Field::new(name, arrow::datatypes::DataType::Utf8, true)
                })
                .collect();
            arrow::csv::ReaderBuilder::new(Arc::new(arrow::datatypes::Schema::new(fields)))
                .with_header(true)
                .build(std::io::Cursor::new(bytes.clone()))
                .map_err(|e| fail(&e))?
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| fail(&e))?
        }
    };
    let mut kept = Vec::new();
    let mut dropped = 0usize;
    for batch in &batches {
        let Ok(idx) = batch.schema().index_of("profile_id") else {
            return Ok(None);
        };
        let ids = arrow::compute::cast(batch.column(idx), &arrow::datatypes::DataType::Utf8)?;
        let ids = ids.as_string::<i32>();
        let keep: arrow::array::BooleanArray = (0..ids.len())
            .map(|i| Some(ids.is_null(i) || !profiles.contains(ids.value(i))))
            .collect();
        dropped += keep.false_count();
        kept.push(arrow::compute::filter_record_batch(batch, &keep)?);
    }
    if dropped == 0 {
        return Ok(None);
    }
    let mut out = Vec::new();
    match format {
        crate::export::ExportFormat::Parquet => {
            let schema = kept
                .first()
                .map(|b| b.schema())
                .ok_or_else(|| fail(&"no rows"))?;
            let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(&mut out, schema, None)
                .map_err(|e| fail(&e))?;
            for b in &kept {
                w.write(b).map_err(|e| fail(&e))?;
            }
            w.close().map_err(|e| fail(&e))?;
        }
        crate::export::ExportFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in &kept {
                w.write(b)?;
            }
        }
    }
    Ok(Some(out))
}

/// The column names of a CSV file's header line.
fn csv_header(bytes: &[u8]) -> std::result::Result<Vec<String>, String> {
    let mut reader = arrow::csv::reader::Format::default().with_header(true);
    reader = reader.with_quote(b'"');
    let (schema, _) = reader
        .infer_schema(std::io::Cursor::new(bytes), Some(0))
        .map_err(|e| e.to_string())?;
    Ok(schema.fields().iter().map(|f| f.name().clone()).collect())
}

/// `column IN (…)` for each event column holding one of `identifiers`.
fn column_predicates(identifiers: &BTreeSet<(String, String)>) -> Vec<String> {
    EVENT_COLUMNS
        .iter()
        .filter_map(|(kind, column)| {
            let values: Vec<&String> = identifiers
                .iter()
                .filter(|(k, _)| k == kind)
                .map(|(_, v)| v)
                .collect();
            (!values.is_empty()).then(|| format!("{column} IN ({})", in_list(values)))
        })
        .collect()
}

/// An identifier value as `resolve` stores it.
fn normalise(kind: &str, value: &str, region: Option<&str>) -> String {
    match kind {
        "email" => keystone_core::identifier::normalize_email(value)
            .unwrap_or_else(|| value.trim().to_lowercase()),
        "phone" => keystone_identity::extract::to_e164(value, region),
        _ => value.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_parse_and_normalise() {
        let s = Subject::parse(" Email: Jane@Example.org ").unwrap();
        assert_eq!(s.kind, "email");
        assert_eq!(normalise(&s.kind, &s.value, None), "jane@example.org");
        assert_eq!(
            normalise("phone", "06 12 34 56 78", Some("FR")),
            "+33612345678"
        );
        assert!(Subject::parse("jane@example.org").is_err());
        assert!(Subject::parse("email:").is_err());
        assert_eq!(identifier_digest("email", "a@b.c").len(), 64);
    }
}
