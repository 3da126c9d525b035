//! `keystone segment export`: a segment's members as a plain Parquet or CSV
//! file (local or `s3://`) for activation tools.
//!
//! Columns: `profile_id`, `email`, `phone` (normalised: e-mail trimmed and
//! lower-cased, phone E.164 as resolved), then every column the segment's
//! definition selects besides `profile_id`. With hashing, `email` and `phone`
//! are the hex SHA-256 of the normalised value — what ad platforms'
//! customer-match uploads expect. With `changes_since`, only the profiles that
//! entered or exited since that materialisation run, with a `change` column.
//! With a consent `purpose`, only profiles whose latest consent for it is
//! granted (see [`crate::consent`]).

use std::sync::Arc;

use datafusion::dataframe::DataFrameWriteOptions;
use keystone_lake::SegmentDef;
use serde::{Deserialize, Serialize};

use crate::materialize::segment_runs;
use crate::{Engine, Error, Result};

const EXPORTS_STATE: &str = "exports.json";

/// File format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Parquet,
    Csv,
}

/// What to export and where.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// A file path or URL (`s3://bucket/key.parquet`).
    pub to: String,
    pub format: ExportFormat,
    pub hash_identifiers: bool,
    /// Only who entered or exited since this materialisation run.
    pub changes_since: Option<i64>,
    /// Only profiles whose latest consent for this purpose is granted.
    pub purpose: Option<String>,
}

/// One export Keystone wrote (kept in `_keystone/exports.json`, so erasure
/// can find past exports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRecord {
    pub segment: String,
    pub url: String,
    pub format: ExportFormat,
    pub rows: u64,
    pub hashed: bool,
    pub changes_since: Option<i64>,
    pub purpose: Option<String>,
    /// RFC 3339.
    pub at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ExportsFile {
    exports: Vec<ExportRecord>,
}

fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The object store and path of an export URL (`s3://…`), with the lake's
/// storage options, or the `AWS_*` environment when the lake is local.
pub(crate) fn object_store_for(
    url: &str,
    lake: &keystone_lake::Lake,
) -> std::result::Result<(Box<dyn object_store::ObjectStore>, object_store::path::Path), String> {
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    let options = if lake.storage_options().is_empty() {
        keystone_lake::storage_options_from_env()
    } else {
        lake.storage_options().clone()
    };
    object_store::parse_url_opts(&parsed, options).map_err(|e| e.to_string())
}

/// The past exports, oldest first.
pub async fn exports(lake: &keystone_lake::Lake) -> Result<Vec<ExportRecord>> {
    let Some(bytes) = lake.read_state(EXPORTS_STATE).await? else {
        return Ok(Vec::new());
    };
    let file: ExportsFile = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Segment(format!(
            "_keystone/{EXPORTS_STATE} is not an export log: {e}"
        ))
    })?;
    Ok(file.exports)
}

impl Engine {
    /// Write segment `name` to `opts.to`; returns what was written.
    pub async fn export_segment(&self, name: &str, opts: &ExportOptions) -> Result<ExportRecord> {
        let defs = self.refresh_segments().await?;
        let def = defs.iter().find(|d| d.name == name).ok_or_else(|| {
            Error::Segment(format!(
                "segment {name} does not exist (keystone segment list shows them)"
            ))
        })?;
        if let Some(purpose) = &opts.purpose
            && (purpose.is_empty() || purpose.len() > 64)
        {
            return Err(Error::Segment(format!(
                "consent purpose {purpose:?} must be 1 to 64 characters"
            )));
        }
        let sql = self.export_sql(def, opts).await?;
        let df = self.sql(&sql).await?;
        let url = self.register_destination(&opts.to)?;
        let write = DataFrameWriteOptions::new().with_single_file_output(true);
        let batches = match opts.format {
            ExportFormat::Parquet => df.write_parquet(&url, write, None).await?,
            ExportFormat::Csv => df.write_csv(&url, write, None).await?,
        };
        let rows = batches
            .first()
            .and_then(|b| {
                arrow::array::AsArray::as_primitive_opt::<arrow::datatypes::UInt64Type>(
                    b.column(0).as_ref(),
                )
                .map(|a| a.value(0))
            })
            .unwrap_or(0);
        let record = ExportRecord {
            segment: name.to_string(),
            url,
            format: opts.format,
            rows,
            hashed: opts.hash_identifiers,
            changes_since: opts.changes_since,
            purpose: opts.purpose.clone(),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let mut all = exports(self.lake()).await?;
        all.push(record.clone());
        let bytes = serde_json::to_vec_pretty(&ExportsFile { exports: all })
            .map_err(|e| Error::Segment(format!("export log: {e}")))?;
        self.lake().write_state(EXPORTS_STATE, bytes).await?;
        Ok(record)
    }

    /// The query an export runs.
    async fn export_sql(&self, def: &SegmentDef, opts: &ExportOptions) -> Result<String> {
        let identifier = |column: &str, value: &str| {
            if opts.hash_identifiers {
                format!("encode(sha256({value}), 'hex') AS {column}")
            } else {
                format!("{value} AS {column}")
            }
        };
        // The definition's own columns, after the identifiers.
        let schema = self.sql(&def.sql).await?.schema().clone();
        let extra: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| !matches!(n.as_str(), "profile_id" | "email" | "phone" | "change"))
            .collect();
        if !extra.is_empty() {
            self.check_one_row_per_member(&def.name, &def.sql).await?;
        }
        let extra_select: String = extra
            .iter()
            .map(|c| format!(", d.{}", quote_ident(c)))
            .collect();
        let consent = opts
            .purpose
            .as_deref()
            .map(|p| format!(" AND m.profile_id IN ({})", crate::consent::granted_sql(p)))
            .unwrap_or_default();
        let email = identifier("email", "lower(trim(p.email))");
        let phone = identifier("phone", "trim(p.phone)");
        let definition = format!("(SELECT * FROM (\n{}\n) AS segment_definition)", def.sql);
        let Some(since) = opts.changes_since else {
            return Ok(format!(
                "SELECT m.profile_id, {email}, {phone}{extra_select} \
                 FROM (SELECT DISTINCT CAST(profile_id AS VARCHAR) AS profile_id FROM {definition} AS s WHERE profile_id IS NOT NULL) AS m \
                 LEFT JOIN keystone.public.profiles p ON p.profile_id = m.profile_id \
                 LEFT JOIN {definition} AS d ON CAST(d.profile_id AS VARCHAR) = m.profile_id \
                 WHERE true{consent} ORDER BY m.profile_id"
            ));
        };
        // Entered/exited since run `since`: its snapshot against the latest.
        let runs = segment_runs(self.lake()).await?;
        let of_segment =
            |r: &&crate::materialize::SegmentRun| r.segments.iter().any(|s| s.segment == def.name);
        if !runs.iter().any(|r| r.run_id == since) {
            return Err(Error::Segment(format!(
                "run {since} does not exist: keystone segment runs lists the materialisation runs"
            )));
        }
        let Some(latest) = runs.iter().filter(of_segment).map(|r| r.run_id).max() else {
            return Err(Error::Segment(format!(
                "segment {} was never materialised: run keystone segment materialize {} first",
                def.name, def.name
            )));
        };
        let before = runs
            .iter()
            .filter(of_segment)
            .map(|r| r.run_id)
            .filter(|r| *r <= since)
            .max()
            .unwrap_or(0);
        let name = sql_text(&def.name);
        let snapshot = |run: i64| {
            format!(
                "(SELECT profile_id FROM keystone.public.segment_membership WHERE segment = {name} AND run_id = {run})"
            )
        };
        let (then, now) = (snapshot(before), snapshot(latest));
        Ok(format!(
            "SELECT m.profile_id, m.change, {email}, {phone}{extra_select} \
             FROM (SELECT profile_id, 'entered' AS change FROM {now} AS n WHERE profile_id NOT IN {then} \
                   UNION ALL \
                   SELECT profile_id, 'exited' AS change FROM {then} AS t WHERE profile_id NOT IN {now}) AS m \
             LEFT JOIN keystone.public.profiles p ON p.profile_id = m.profile_id \
             LEFT JOIN {definition} AS d ON CAST(d.profile_id AS VARCHAR) = m.profile_id AND m.change = 'entered' \
             WHERE true{consent} ORDER BY m.change, m.profile_id"
        ))
    }

    /// The URL to write `to`, with its object store registered (local paths:
    /// the parent folder is created).
    fn register_destination(&self, to: &str) -> Result<String> {
        if to.contains("://") && !to.starts_with("file://") {
            let url = url::Url::parse(to)
                .map_err(|e| Error::Segment(format!("export destination {to}: {e}")))?;
            let (store, _) = object_store_for(to, self.lake())
                .map_err(|e| Error::Segment(format!("export destination {to}: {e}")))?;
            let base = url::Url::parse(&format!("{}://{}", url.scheme(), url.authority()))
                .map_err(|e| Error::Segment(format!("export destination {to}: {e}")))?;
            self.context()
                .runtime_env()
                .register_object_store(&base, Arc::from(store));
            return Ok(to.to_string());
        }
        let path = std::path::PathBuf::from(to.trim_start_matches("file://"));
        if to.ends_with('/') || path.is_dir() {
            return Err(Error::Segment(format!(
                "export destination {to} is a folder: name the file (e.g. {}vip.parquet)",
                if to.ends_with('/') {
                    to.to_string()
                } else {
                    format!("{to}/")
                }
            )));
        }
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        let absolute = std::path::absolute(&path)?;
        Ok(absolute.display().to_string())
    }
}
