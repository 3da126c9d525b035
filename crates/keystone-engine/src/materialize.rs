//! `keystone segment materialize`: a snapshot of each segment's members, and
//! who entered or exited it since its previous snapshot.
//!
//! ```text
//!  run R:  members(S) = SELECT profile_id FROM segments.S (each profile once)
//!          previous   = segment_membership WHERE segment = S AND run_id = last run of S
//!          entered    = members − previous      exited = previous − members
//!  commit: segment_changes (+ entered/exited of every segment of the run)
//!          segment_membership (+ members of every segment of the run)
//!          _keystone/segment_runs.json (+ R)   ◀── the run counts from here
//! ```
//!
//! A run is committed when the run registry lists it. A run that fails before
//! that (an error, a crash, a lost connection) may have left rows in one or
//! both tables: the next run deletes every row of a run the registry does not
//! list before it starts, so the previous snapshot stays the current one and
//! no change is counted twice.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use keystone_lake::{Lake, SEGMENT_CHANGES, SEGMENT_MEMBERSHIP, SegmentDef};
use serde::{Deserialize, Serialize};

use crate::{Engine, Error, Result};

const RUNS_STATE: &str = "segment_runs.json";

/// Rows per written batch.
const BATCH_ROWS: usize = 64 * 1024;

/// One segment of one run, as recorded in the run registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentCounts {
    pub segment: String,
    pub members: u64,
    pub entered: u64,
    pub exited: u64,
}

/// One committed materialisation run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRun {
    pub run_id: i64,
    /// RFC 3339, microseconds (equal to `materialized_at` in the tables).
    pub materialized_at: String,
    pub segments: Vec<SegmentCounts>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RunsFile {
    runs: Vec<SegmentRun>,
}

/// What one segment of a run cost.
#[derive(Debug, Clone)]
pub struct SegmentTiming {
    pub counts: SegmentCounts,
    /// Running the definition.
    pub evaluate: Duration,
    /// Reading the previous snapshot and computing entered/exited.
    pub changes: Duration,
}

/// What a materialisation did.
#[derive(Debug, Clone)]
pub struct MaterializeReport {
    pub run: SegmentRun,
    pub timings: Vec<SegmentTiming>,
    /// Writing both tables and the registry.
    pub write: Duration,
    /// Rows of failed earlier runs removed before this one.
    pub discarded_rows: u64,
    /// Segments left out of this run, with why (a definition that fails on
    /// today's data, e.g. a cast of a trait value): the others are still
    /// materialised.
    pub failed: Vec<(String, String)>,
}

/// The committed materialisation runs, oldest first.
pub async fn segment_runs(lake: &Lake) -> Result<Vec<SegmentRun>> {
    let Some(bytes) = lake.read_state(RUNS_STATE).await? else {
        return Ok(Vec::new());
    };
    let file: RunsFile = serde_json::from_slice(&bytes).map_err(|e| {
        Error::Segment(format!(
            "_keystone/{RUNS_STATE} is not a segment run registry: {e}"
        ))
    })?;
    Ok(file.runs)
}

async fn write_runs(lake: &Lake, runs: Vec<SegmentRun>) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(&RunsFile { runs })
        .map_err(|e| Error::Segment(format!("segment run registry: {e}")))?;
    Ok(lake.write_state(RUNS_STATE, bytes).await?)
}

fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Engine {
    /// Materialise the segments named in `names` (every segment when empty)
    /// as run `last + 1`; `progress` is called after each segment. A segment
    /// whose definition fails is left out of the run and named in
    /// [`MaterializeReport::failed`]; when every chosen segment fails,
    /// nothing is written and the first error is returned.
    pub async fn materialize_segments(
        &self,
        names: &[String],
        mut progress: impl FnMut(&SegmentTiming),
    ) -> Result<MaterializeReport> {
        let defs = self.refresh_segments().await?;
        let chosen = choose(&defs, names)?;
        let mut runs = segment_runs(self.lake()).await?;
        let last = runs.last().map_or(0, |r| r.run_id);
        let discarded_rows = self.discard_runs_after(last).await?;
        let run_id = last + 1;
        let now = chrono::Utc::now();
        let at_micros = now.timestamp_micros();
        let materialized_at = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let snapshots_exist = self.lake().load(&SEGMENT_MEMBERSHIP).await?.is_some();

        let mut members_of: Vec<(String, Vec<String>)> = Vec::new();
        let mut changes_of: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
        let mut timings = Vec::new();
        let mut failed = Vec::new();
        let mut first_error = None;
        for def in chosen {
            let started = Instant::now();
            let members = match self.members(def).await {
                Ok(members) => members,
                Err(e) => {
                    failed.push((def.name.clone(), format!("segment {}: {e}", def.name)));
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            let evaluate = started.elapsed();
            let started = Instant::now();
            let previous = if snapshots_exist {
                self.previous_members(&def.name).await?
            } else {
                HashSet::new()
            };
            let current: HashSet<&str> = members.iter().map(String::as_str).collect();
            let entered: Vec<String> = members
                .iter()
                .filter(|p| !previous.contains(p.as_str()))
                .cloned()
                .collect();
            let mut exited: Vec<String> = previous
                .iter()
                .filter(|p| !current.contains(p.as_str()))
                .cloned()
                .collect();
            exited.sort_unstable();
            let changes = started.elapsed();
            let timing = SegmentTiming {
                counts: SegmentCounts {
                    segment: def.name.clone(),
                    members: members.len() as u64,
                    entered: entered.len() as u64,
                    exited: exited.len() as u64,
                },
                evaluate,
                changes,
            };
            progress(&timing);
            timings.push(timing);
            changes_of.push((def.name.clone(), entered, exited));
            members_of.push((def.name.clone(), members));
        }

        if members_of.is_empty()
            && let Some(e) = first_error
        {
            return Err(e);
        }
        let started = Instant::now();
        let meta = |what: &str| {
            HashMap::from([
                ("operation".to_string(), serde_json::json!(what)),
                ("run_id".to_string(), serde_json::json!(run_id)),
            ])
        };
        let mut append = self.lake().append(&SEGMENT_CHANGES, Vec::new()).await?;
        for (segment, entered, exited) in &changes_of {
            let rows = entered
                .iter()
                .map(|p| (p.as_str(), "entered"))
                .chain(exited.iter().map(|p| (p.as_str(), "exited")))
                .collect::<Vec<_>>();
            for chunk in rows.chunks(BATCH_ROWS) {
                append
                    .write(changes_batch(segment, chunk, run_id, at_micros)?)
                    .await?;
            }
        }
        append.commit(meta("segment changes")).await?;
        let mut append = self.lake().append(&SEGMENT_MEMBERSHIP, Vec::new()).await?;
        for (segment, members) in &members_of {
            for chunk in members.chunks(BATCH_ROWS) {
                append
                    .write(membership_batch(segment, chunk, run_id, at_micros)?)
                    .await?;
            }
        }
        append.commit(meta("segment materialize")).await?;
        let run = SegmentRun {
            run_id,
            materialized_at,
            segments: timings.iter().map(|t| t.counts.clone()).collect(),
        };
        runs.push(run.clone());
        write_runs(self.lake(), runs).await?;
        Ok(MaterializeReport {
            run,
            timings,
            write: started.elapsed(),
            discarded_rows,
            failed,
        })
    }

    /// The members of a segment now: the `profile_id`s of its view
    /// `segments.NAME` (profiles the definition returns, each once; a NULL
    /// or a repeated `profile_id` in the definition's rows adds nobody).
    pub(crate) async fn members(&self, def: &SegmentDef) -> Result<Vec<String>> {
        let sql = format!(
            "SELECT CAST(profile_id AS VARCHAR) AS profile_id FROM (\n{}\n) AS segment_view",
            crate::segments::view_sql(&def.sql)
        );
        let batches = self.collect(&sql).await?;
        let mut members = Vec::new();
        for batch in &batches {
            let column = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)?;
            members.extend(
                column
                    .as_string::<i32>()
                    .iter()
                    .flatten()
                    .map(str::to_string),
            );
        }
        members.sort_unstable();
        members.dedup();
        Ok(members)
    }

    /// Refuse to export the definition's own columns when it returns a
    /// profile more than once: which row's columns to write is ambiguous.
    pub(crate) async fn check_one_row_per_member(&self, name: &str, sql: &str) -> Result<()> {
        let batches = self
            .collect(&format!(
                "SELECT count(profile_id), count(DISTINCT CAST(profile_id AS VARCHAR)) \
                 FROM (\n{sql}\n) AS segment_definition"
            ))
            .await?;
        let count = |i: usize| {
            batches
                .first()
                .and_then(|b| {
                    b.column(i)
                        .as_primitive_opt::<arrow::datatypes::Int64Type>()
                })
                .map_or(0, |a| a.value(0))
        };
        let (rows, distinct) = (count(0), count(1));
        if rows != distinct {
            return Err(Error::Segment(format!(
                "segment {name}: its definition returns {rows} rows for {distinct} distinct profile_id, so its own columns cannot be exported (one row per profile: SELECT DISTINCT or GROUP BY profile_id)"
            )));
        }
        Ok(())
    }

    /// Members of `segment` at its last committed run (empty before one).
    async fn previous_members(&self, segment: &str) -> Result<HashSet<String>> {
        let name = sql_text(segment);
        let batches = self
            .collect(&format!(
                "SELECT profile_id FROM segment_membership WHERE segment = {name} AND run_id = \
                 (SELECT max(run_id) FROM segment_membership WHERE segment = {name})"
            ))
            .await?;
        let mut out = HashSet::new();
        for batch in &batches {
            let column = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)?;
            let column = column.as_string::<i32>();
            out.extend(column.iter().flatten().map(str::to_string));
        }
        Ok(out)
    }

    /// Delete the rows of runs after `last` (left by a run that failed before
    /// its registry entry); returns how many.
    async fn discard_runs_after(&self, last: i64) -> Result<u64> {
        let mut removed = 0;
        for spec in [&SEGMENT_CHANGES, &SEGMENT_MEMBERSHIP] {
            if self.lake().load(spec).await?.is_none() {
                continue;
            }
            let max = self
                .collect(&format!("SELECT max(run_id) FROM {}", spec.name))
                .await?;
            let max = max
                .first()
                .and_then(|b| {
                    b.column(0)
                        .as_primitive_opt::<arrow::datatypes::Int64Type>()
                })
                .and_then(|a| (!a.is_null(0)).then(|| a.value(0)));
            if max.is_some_and(|m| m > last) {
                removed += self
                    .lake()
                    .delete_where(spec, &format!("run_id > {last}"))
                    .await?;
            }
        }
        Ok(removed)
    }
}

fn choose<'a>(defs: &'a [SegmentDef], names: &[String]) -> Result<Vec<&'a SegmentDef>> {
    if defs.is_empty() {
        return Err(Error::Segment(
            "no segment is defined: keystone segment create NAME --sql \"SELECT profile_id FROM profiles WHERE ...\"".into(),
        ));
    }
    if names.is_empty() {
        return Ok(defs.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            defs.iter().find(|d| &d.name == n).ok_or_else(|| {
                Error::Segment(format!(
                    "segment {n} does not exist (keystone segment list shows them)"
                ))
            })
        })
        .collect()
}

fn membership_batch(
    segment: &str,
    members: &[String],
    run_id: i64,
    at: i64,
) -> Result<RecordBatch> {
    let n = members.len();
    Ok(RecordBatch::try_new(
        keystone_core::schema::segment_membership_schema(),
        vec![
            Arc::new(StringArray::from(vec![segment; n])),
            Arc::new(StringArray::from_iter_values(members)),
            Arc::new(Int64Array::from(vec![run_id; n])),
            Arc::new(TimestampMicrosecondArray::from(vec![at; n]).with_timezone("UTC")),
        ],
    )?)
}

fn changes_batch(
    segment: &str,
    rows: &[(&str, &str)],
    run_id: i64,
    at: i64,
) -> Result<RecordBatch> {
    let n = rows.len();
    Ok(RecordBatch::try_new(
        keystone_core::schema::segment_changes_schema(),
        vec![
            Arc::new(StringArray::from(vec![segment; n])),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(Int64Array::from(vec![run_id; n])),
            Arc::new(TimestampMicrosecondArray::from(vec![at; n]).with_timezone("UTC")),
        ],
    )?)
}
