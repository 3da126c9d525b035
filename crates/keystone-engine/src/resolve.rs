//! `keystone resolve`: feed new events to the identity graph, then rewrite
//! `identities`, append `profile_merges` and `identity_audit`, and rebuild
//! `profiles`.
//!
//! ```text
//!  events (Delta v) ── files added since the watermark ──▶ extract + intern ──▶ sort (timestamp, message_id)
//!                                                                    │
//!  identities + profile_merges + identity_audit ──restore──▶ IdentityGraph ──observe──▶ merges, cuts
//!                                                                    │
//!  commit order: identity_audit, profile_merges, identities (carries the watermark),
//!                then profiles, built from the committed identities
//! ```
//!
//! The watermark is the `events` version read, stored as the application
//! transaction `keystone-resolve` of the `identities` commit, so it moves
//! exactly when the graph does. A run killed before that commit leaves the
//! previous identities in force; the audit and merge rows it may have
//! appended carry its `run_id` and are removed by the next run. Killed
//! between the `identities` and `profiles` commits, it leaves profiles one
//! version behind (their transaction says so), and the next run rebuilds
//! only them.
//!
//! Incremental runs give the same grouping as one run over all events as long
//! as new events come after the ones already resolved. A new event older than
//! the watermark's latest timestamp that carries an identifier already seen
//! could have changed earlier decisions: the run then rebuilds from all events
//! (and says so). The same happens when the rules change or when files were
//! removed from `events` (compaction, erasure).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{SessionContext, col, lit};
use futures::StreamExt;
use keystone_core::schema::{
    EVENT_DATE, events_schema, identities_schema, identity_audit_schema, profile_merges_schema,
};
use keystone_identity::{
    CutRule, GraphRestore, Identifier, IdentityGraph, IdentityRef, Rules, extract_with,
};
use keystone_lake::deltalake::delta_datafusion::engine::AsObjectStoreUrl;
use keystone_lake::{EVENTS, IDENTITIES, IDENTITY_AUDIT, Lake, PROFILE_MERGES, PROFILES};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::profiles::{
    ComputedTrait, ProfileInput, build_profiles, events_resolved_sql, events_resolved_sql_over,
    validate_traits,
};
use crate::udf::{
    IDENTITY_KEY_ARGS, StrCol, event_ids, identity_key_udf, latest_consents_udaf,
    latest_traits_udaf, most_frequent_udaf,
};
use crate::{Error, Result};

/// Application id of the transactions `resolve` records.
pub const RESOLVE_APP_ID: &str = "keystone-resolve";
/// State file with the rules and traits of the last run.
pub const RESOLVE_STATE: &str = "identity.json";

/// What `resolve` needs to know.
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    pub rules: Rules,
    /// Computed traits of `profiles`, in column order.
    pub traits: Vec<ComputedTrait>,
    /// Rebuild `profiles` from every event when the last such build is older
    /// than this (seconds; `None`: [`DEFAULT_PROFILE_REFRESH_SECS`], `0`:
    /// at every run). In between, runs update profiles from new events only.
    pub profile_refresh_secs: Option<u64>,
}

/// A day: how long computed traits with a time window (`now()`) may go
/// without a rebuild from all events.
pub const DEFAULT_PROFILE_REFRESH_SECS: u64 = 24 * 3600;

/// The aggregate states of the last profile build (`_keystone/profile_state.arrow`).
pub const PROFILE_STATE: &str = "profile_state.arrow";
/// Where earlier builds kept them, as Parquet.
pub(crate) const LEGACY_PROFILE_STATE: &str = "profile_state.parquet";

/// The identity graph as the last run left it (`_keystone/identity_graph.bin`).
pub const GRAPH_SNAPSHOT: &str = "identity_graph.bin";
/// First bytes of [`GRAPH_SNAPSHOT`], before the events and identities versions.
const SNAPSHOT_MAGIC: &[u8; 8] = b"KSGRAPH\0";
/// The magic, then the events and the identities version (little-endian).
const SNAPSHOT_HEADER: usize = 24;

/// Rules and traits in force, saved after each run (`_keystone/identity.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolveState {
    pub rules: Rules,
    pub traits: Vec<ComputedTrait>,
    pub events_version: i64,
}

impl ResolveState {
    /// The saved state, if a run finished.
    pub async fn load(lake: &Lake) -> Result<Option<Self>> {
        let Some(bytes) = lake.read_state(RESOLVE_STATE).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Resolve(format!("_keystone/{RESOLVE_STATE}: {e}")))
    }
}

/// How a run went about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Nothing new since the last run.
    UpToDate,
    /// Only the profiles were rebuilt (the computed traits changed).
    ProfilesOnly,
    /// New events added to the saved graph.
    Incremental,
    /// Everything rebuilt from all events, and why.
    Full(String),
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct ResolveReport {
    pub mode: Mode,
    /// The `events` version now resolved.
    pub events_version: i64,
    pub files_read: usize,
    /// Of those, files whose `context` was not read (tagged as holding no
    /// `externalIds`, and no configured path reads `context`).
    pub files_read_without_context: usize,
    pub events_read: u64,
    pub identifiers: u64,
    pub profiles: u64,
    pub merges: u64,
    pub cuts: u64,
    /// Why `profiles` was rebuilt from every event; `None` when it was
    /// updated from the new events and the saved aggregate states.
    pub profiles_full: Option<String>,
    /// Where the previous runs' graph came from: the snapshot, or the
    /// tables and why not the snapshot; `None` when the graph was rebuilt.
    pub graph_loaded_from: Option<String>,
    /// Seconds spent loading the previous graph, reading events, resolving,
    /// building profiles, committing.
    pub load_secs: f64,
    pub read_secs: f64,
    pub graph_secs: f64,
    pub profile_secs: f64,
    pub commit_secs: f64,
    /// Wall time of the whole run (the identities commit overlaps the
    /// profile build, so the phases add up to more).
    pub total_secs: f64,
}

/// Progress of a run, for a bar or a log line.
pub enum Progress<'a> {
    Phase(&'a str),
    EventsRead(u64),
}

/// Events as read: timestamps, message ids and interned identifiers, flat.
#[derive(Default)]
struct Events {
    ts: Vec<i64>,
    mids: String,
    mid_ends: Vec<u64>,
    ids: Vec<u32>,
    id_ends: Vec<u64>,
}

impl Events {
    fn len(&self) -> usize {
        self.ts.len()
    }
    fn mid(&self, i: usize) -> &str {
        let start = if i == 0 {
            0
        } else {
            self.mid_ends[i - 1] as usize
        };
        &self.mids[start..self.mid_ends[i] as usize]
    }
    fn ids(&self, i: usize) -> &[u32] {
        let start = if i == 0 {
            0
        } else {
            self.id_ends[i - 1] as usize
        };
        &self.ids[start..self.id_ends[i] as usize]
    }
}

struct AuditRow {
    kind: String,
    value: String,
    message_id: String,
    rule: CutRule,
    ts: i64,
}

/// Run identity resolution and rebuild profiles; see the module docs.
pub async fn resolve(
    lake: &Lake,
    opts: &ResolveOptions,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<ResolveReport> {
    opts.rules.validate().map_err(Error::Resolve)?;
    let started = Instant::now();
    // One snapshot of events for the whole run: the files read, the version
    // recorded and the table the profiles are built from all agree.
    let Some(events_table) = lake.load(&EVENTS).await? else {
        return Err(Error::Resolve(
            "no events table yet: load events with `keystone ingest` first".into(),
        ));
    };
    let events_version = events_table.version().unwrap_or_default() as i64;
    let files: Vec<String> = events_table
        .get_file_uris()
        .map_err(|e| keystone_lake::Error::delta(EVENTS.name, e))?
        .collect();
    let watermark = lake
        .transaction_versions(&IDENTITIES, &[RESOLVE_APP_ID.to_string()])
        .await?
        .pop()
        .flatten();
    let saved = ResolveState::load(lake).await?;
    let mut report = ResolveReport {
        mode: Mode::UpToDate,
        events_version,
        files_read: 0,
        files_read_without_context: 0,
        events_read: 0,
        identifiers: 0,
        profiles: 0,
        merges: 0,
        cuts: 0,
        profiles_full: None,
        graph_loaded_from: None,
        load_secs: 0.0,
        read_secs: 0.0,
        total_secs: 0.0,
        graph_secs: 0.0,
        profile_secs: 0.0,
        commit_secs: 0.0,
    };

    // Decide between nothing, profiles only, incremental and full.
    let rules_same = saved.as_ref().is_some_and(|s| s.rules == opts.rules);
    let traits_same = saved.as_ref().is_some_and(|s| s.traits == opts.traits);
    let mut full_reason = match (watermark, &saved) {
        (None, _) => Some("first run".to_string()),
        (Some(_), None) => Some("no saved rules (an earlier run was interrupted)".to_string()),
        (Some(_), Some(_)) if !rules_same => Some("the identity rules changed".to_string()),
        _ => None,
    };
    let mut new_files = files.clone();
    if full_reason.is_none()
        && let Some(w) = watermark
    {
        if w == events_version {
            let profiles_at = lake
                .transaction_versions(&PROFILES, &[RESOLVE_APP_ID.to_string()])
                .await?
                .pop()
                .flatten();
            // Profiles lag behind identities when a run stopped between the two commits.
            if traits_same && profiles_at == Some(w) {
                return Ok(report);
            }
            report.mode = Mode::ProfilesOnly;
        } else {
            // An erasure removes the log before its checkpoint: the
            // watermark's version may be gone, and with it the diff.
            let old: Option<BTreeSet<String>> = lake
                .file_uris(&EVENTS, Some(w))
                .await
                .ok()
                .map(|v| v.map(|(_, f)| f.into_iter().collect()).unwrap_or_default());
            let now: BTreeSet<&String> = files.iter().collect();
            if let Some(old) = &old
                && old.iter().all(|f| now.contains(f))
            {
                new_files = files
                    .iter()
                    .filter(|f| !old.contains(*f))
                    .cloned()
                    .collect();
            } else if old.is_none() {
                full_reason = Some(format!(
                    "the events history of version {w} was erased (forget)"
                ));
            } else {
                full_reason =
                    Some("files were removed from events (compaction or erasure)".to_string());
            }
        }
    }

    let ctx = SessionContext::new_with_config(crate::engine::session_config()?);
    let store_url = events_table.log_store().root_url().as_object_store_url();
    ctx.runtime_env().register_object_store(
        store_url.as_ref(),
        events_table.log_store().root_object_store(None),
    );

    // Computed traits are checked before anything is written.
    let empty = MemTable::try_new(identities_schema(), vec![vec![]])?;
    prepare_session(&ctx, &events_table, Arc::new(empty), &opts.rules).await?;
    validate_traits(&ctx, &opts.traits).await?;

    if report.mode == Mode::ProfilesOnly {
        let why = if traits_same {
            "the last run stopped before its profiles commit"
        } else {
            "the computed traits changed"
        };
        let mut report = build_and_commit_profiles(
            lake,
            &ctx,
            &events_table,
            None,
            std::future::ready(Ok(0.0)),
            Err(why.to_string()),
            opts,
            events_version,
            report,
        )
        .await?;
        report.total_secs = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    // Restore the graph, or start afresh.
    let t = Instant::now();
    let mut graph = match (full_reason.is_none(), watermark) {
        (true, Some(w)) => {
            progress(Progress::Phase("loading the identity graph"));
            match load_snapshot(lake, w, &opts.rules).await? {
                Ok(graph) => {
                    report.graph_loaded_from = Some("snapshot".to_string());
                    graph
                }
                Err(why) => {
                    report.graph_loaded_from = Some(format!("tables ({why})"));
                    restore_graph(lake, &ctx, &opts.rules).await?
                }
            }
        }
        _ => IdentityGraph::new(opts.rules.clone()),
    };
    report.load_secs = t.elapsed().as_secs_f64();
    let run_id = events_version;
    let mut audit: Vec<AuditRow> = Vec::new();
    let mut events = Events::default();
    {
        let t = Instant::now();
        progress(Progress::Phase("reading events"));
        let mut into = ReadInto {
            graph: &mut graph,
            events: &mut events,
            audit: &mut audit,
            check_late: full_reason.is_none(),
            progress: &mut *progress,
        };
        let (late, mut without_context) =
            read_events(&ctx, &events_table, &new_files, &mut into).await?;
        if late > 0 {
            full_reason = Some(format!(
                "{late} new events are older than events already resolved and carry known identifiers"
            ));
            graph = IdentityGraph::new(opts.rules.clone());
            report.graph_loaded_from = None;
            events = Events::default();
            audit.clear();
            new_files = files.clone();
            progress(Progress::Phase("reading all events (rebuild)"));
            let mut into = ReadInto {
                graph: &mut graph,
                events: &mut events,
                audit: &mut audit,
                check_late: false,
                progress: &mut *progress,
            };
            (_, without_context) = read_events(&ctx, &events_table, &new_files, &mut into).await?;
        }
        report.files_read = new_files.len();
        report.files_read_without_context = without_context;
        report.events_read = events.len() as u64;
        report.read_secs = t.elapsed().as_secs_f64();
        report.mode = match &full_reason {
            Some(r) => Mode::Full(r.clone()),
            None => Mode::Incremental,
        };
    }

    // Observe in (timestamp, message_id) order.
    let t = Instant::now();
    progress(Progress::Phase("resolving identities"));
    let mut order: Vec<u32> = (0..events.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        let (a, b) = (a as usize, b as usize);
        events.ts[a]
            .cmp(&events.ts[b])
            .then_with(|| events.mid(a).cmp(events.mid(b)))
    });
    let mut merges = Vec::new();
    let mut scratch = Vec::with_capacity(8);
    for &i in &order {
        let i = i as usize;
        scratch.clear();
        scratch.extend_from_slice(events.ids(i));
        let res = graph.observe_interned(events.ts[i], events.mid(i), &mut scratch);
        merges.extend(res.merges);
        for cut in res.cuts {
            audit.push(AuditRow {
                kind: cut.identifier.kind,
                value: cut.identifier.value,
                message_id: cut.message_id,
                rule: cut.rule,
                ts: events.ts[i],
            });
        }
    }
    drop(events);
    let order = graph.identity_order();
    let identifiers = order.len();
    // The rows and the snapshot both walk the whole graph: one core each.
    // The header's versions are filled in once identities are committed.
    let mut snapshot = vec![0u8; SNAPSHOT_HEADER];
    let identity_batches = std::thread::scope(|scope| {
        let rows = scope.spawn(|| identity_batches(&graph, &order));
        graph.snapshot_into(&order, &mut snapshot);
        rows.join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    drop(order);
    report.identifiers = identifiers as u64;
    report.merges = merges.len() as u64;
    report.cuts = audit.len() as u64;
    report.graph_secs = t.elapsed().as_secs_f64();
    drop(graph);

    // Commit: audit, merges, then identities with the watermark.
    let t = Instant::now();
    progress(Progress::Phase("committing identities"));
    let txns = vec![(RESOLVE_APP_ID.to_string(), events_version)];
    let full = matches!(report.mode, Mode::Full(_));
    let audit_batch = audit_batch(&audit, run_id)?;
    let merge_batch = merge_batch(&merges, run_id)?;
    for (spec, batch) in [
        (&IDENTITY_AUDIT, audit_batch),
        (&PROFILE_MERGES, merge_batch),
    ] {
        if full {
            lake.overwrite(
                spec,
                vec![batch],
                txns.clone(),
                meta(events_version, "rebuild"),
            )
            .await?;
        } else {
            // Rows of an interrupted run (after the watermark) go first.
            let left = lake
                .transaction_versions(spec, &[RESOLVE_APP_ID.to_string()])
                .await?
                .pop()
                .flatten();
            if let (Some(left), Some(w)) = (left, watermark)
                && left > w
            {
                lake.delete_where(spec, &format!("run_id > {w}")).await?;
            }
            let mut append = lake.append(spec, txns.clone()).await?;
            append.write(batch).await?;
            append.commit(meta(events_version, "incremental")).await?;
        }
    }
    let mut identity_meta = meta(events_version, "identities");
    identity_meta.insert("mode".into(), Value::from(format!("{:?}", report.mode)));
    report.commit_secs = t.elapsed().as_secs_f64();
    // Identities are encoded and written (one task) while the profiles are
    // built from them in memory; the profiles commit waits for them.
    let written = identity_batches.clone();
    let commit_identities = async move {
        let t = Instant::now();
        let identities_version = lake
            .overwrite(&IDENTITIES, written, txns, identity_meta)
            .await?;
        save_snapshot(lake, snapshot, events_version, identities_version).await?;
        Ok(t.elapsed().as_secs_f64())
    };
    let update = match (&report.mode, watermark) {
        (Mode::Incremental, Some(w)) => Ok(ProfileUpdate {
            since: w,
            new_files,
            merged: survivors(&merges),
        }),
        (Mode::Full(why), _) => Err(format!("identities rebuilt: {why}")),
        _ => Err("identities rebuilt".to_string()),
    };
    let mut report = build_and_commit_profiles(
        lake,
        &ctx,
        &events_table,
        Some(identity_batches),
        commit_identities,
        update,
        opts,
        events_version,
        report,
    )
    .await?;
    report.total_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What an incremental profile update needs: the events version the saved
/// states are at, the files added since, and this run's merges.
struct ProfileUpdate {
    since: i64,
    new_files: Vec<String>,
    merged: HashMap<String, String>,
}

/// Each profile absorbed by `merges` mapped to the profile that holds it now
/// (following chains: A into B, then B into C, gives A → C).
fn survivors(merges: &[keystone_identity::Merge]) -> HashMap<String, String> {
    let into: HashMap<&str, &str> = merges
        .iter()
        .map(|m| (m.from.as_str(), m.into.as_str()))
        .collect();
    into.keys()
        .map(|from| (from.to_string(), chain_end(&into, from).to_string()))
        .collect()
}

/// Where the chain of merges from `from` ends: the profile that absorbed it
/// last. A cycle (never written by a resolve) stops after as many hops as
/// there are merges.
fn chain_end<'a, T: Eq + std::hash::Hash>(into: &'a HashMap<T, T>, from: &'a T) -> &'a T {
    let mut at = from;
    for _ in 0..=into.len() {
        match into.get(at) {
            Some(next) => at = next,
            None => break,
        }
    }
    at
}

/// Aggregate states saved by a profile build, and what they are valid for.
struct SavedStates {
    events_version: i64,
    traits: String,
    /// When the profiles were last built from every event (Unix seconds).
    full_at: i64,
    batches: Vec<RecordBatch>,
}

const STATE_VERSION: &str = "keystone.events_version";
const STATE_TRAITS: &str = "keystone.traits";
const STATE_FULL_AT: &str = "keystone.full_build_at";

async fn load_states(lake: &Lake) -> Result<Option<SavedStates>> {
    use arrow::ipc::reader::FileReader;
    let Some(bytes) = lake.read_state(PROFILE_STATE).await? else {
        return Ok(None);
    };
    let bad = |e: &dyn std::fmt::Display| Error::Resolve(format!("_keystone/{PROFILE_STATE}: {e}"));
    let reader = FileReader::try_new(std::io::Cursor::new(bytes), None).map_err(|e| bad(&e))?;
    let kv = reader.schema().metadata().clone();
    let number = |key: &str| -> Result<i64> {
        kv.get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(&format!("no {key}")))
    };
    let (events_version, full_at) = (number(STATE_VERSION)?, number(STATE_FULL_AT)?);
    let traits = kv.get(STATE_TRAITS).cloned().unwrap_or_default();
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    Ok(Some(SavedStates {
        events_version,
        traits,
        full_at,
        batches,
    }))
}

/// Save the aggregate states of `built` as an Arrow IPC file (LZ4): read
/// back whole at the next run, so a format without decoding work.
async fn save_states(
    lake: &Lake,
    built: &crate::profiles::BuiltProfiles,
    events_version: i64,
    traits: &str,
    full_at: i64,
) -> Result<()> {
    use arrow::ipc::CompressionType;
    use arrow::ipc::writer::{FileWriter, IpcWriteOptions};
    let bad =
        |e: arrow::error::ArrowError| Error::Resolve(format!("_keystone/{PROFILE_STATE}: {e}"));
    let schema = built
        .state_schema
        .as_ref()
        .clone()
        .with_metadata(HashMap::from([
            (STATE_VERSION.to_string(), events_version.to_string()),
            (STATE_TRAITS.to_string(), traits.to_string()),
            (STATE_FULL_AT.to_string(), full_at.to_string()),
        ]));
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::LZ4_FRAME))
        .map_err(bad)?;
    let mut bytes = Vec::new();
    let mut writer = FileWriter::try_new_with_options(&mut bytes, &schema, options).map_err(bad)?;
    for b in &built.states {
        writer.write(b).map_err(bad)?;
    }
    writer.finish().map_err(bad)?;
    drop(writer);
    lake.write_state(PROFILE_STATE, bytes).await?;
    // Where the states were kept before they were Arrow IPC: never read again.
    lake.delete_state(LEGACY_PROFILE_STATE).await?;
    Ok(())
}

fn meta(events_version: i64, what: &str) -> HashMap<String, Value> {
    HashMap::from([
        (
            "operation".to_string(),
            Value::from(format!("keystone resolve: {what}")),
        ),
        ("events_version".to_string(), Value::from(events_version)),
    ])
}

/// Register `events`, `identities`, Keystone's functions and the
/// `events_resolved` view in `ctx` (replacing earlier registrations).
async fn prepare_session(
    ctx: &SessionContext,
    events: &keystone_lake::deltalake::DeltaTable,
    identities: Arc<dyn datafusion::catalog::TableProvider>,
    rules: &Rules,
) -> Result<()> {
    for name in ["events", "identities", "events_resolved"] {
        ctx.deregister_table(name)?;
    }
    ctx.register_table("events", events.table_provider().await?)?;
    ctx.register_table("identities", identities)?;
    ctx.register_udf(identity_key_udf(rules.clone()));
    ctx.register_udaf(most_frequent_udaf());
    ctx.register_udaf(latest_traits_udaf());
    ctx.register_udaf(latest_consents_udaf());
    datafusion_functions_json::register_all(&mut ctx.clone())?;
    ctx.register_table(
        "events_resolved",
        ctx.sql(&events_resolved_sql()).await?.into_view(),
    )?;
    Ok(())
}

/// Build `profiles` from the committed `identities` (`batches`, or read
/// back from the lake when `None`) — from the saved aggregate states and the
/// new events when `update` allows it and the states match, else from every
/// event (`update` is then why) — commit it with the watermark's
/// transaction, save the new states, then the rules and traits in force.
/// Identities are held in memory for the build: it is the small side of the
/// join, and an in-memory table's exact statistics make the planner build
/// its hash table from it rather than from `events`.
#[allow(clippy::too_many_arguments)]
async fn build_and_commit_profiles(
    lake: &Lake,
    ctx: &SessionContext,
    events: &keystone_lake::deltalake::DeltaTable,
    batches: Option<Vec<RecordBatch>>,
    identities_commit: impl std::future::Future<Output = Result<f64>>,
    update: std::result::Result<ProfileUpdate, String>,
    opts: &ResolveOptions,
    events_version: i64,
    mut report: ResolveReport,
) -> Result<ResolveReport> {
    let t = Instant::now();
    let build = build_profiles_from(lake, ctx, events, batches, update, opts);
    let (commit_secs, (built, full_at, profiles_full)) =
        futures::try_join!(identities_commit, build)?;
    report.commit_secs += commit_secs;
    report.profiles_full = profiles_full;
    // The identities held for the build (and the views over them) are not
    // needed to write: freed before the two writes below add their buffers.
    for name in ["identities", "events_resolved", "events_resolved_new"] {
        ctx.deregister_table(name)?;
    }
    let traits_text = crate::profiles::state_fingerprint(&opts.traits);
    report.profiles = built.profiles.iter().map(|b| b.num_rows() as u64).sum();
    let txns = vec![(RESOLVE_APP_ID.to_string(), events_version)];
    // The states depend only on the events and identities of this run, not
    // on whether the profiles commit lands: both are written at once.
    futures::try_join!(
        async {
            lake.overwrite(
                &PROFILES,
                built.profiles.clone(),
                txns,
                meta(events_version, "profiles"),
            )
            .await
            .map_err(Error::from)
        },
        save_states(lake, &built, events_version, &traits_text, full_at),
    )?;
    let state = ResolveState {
        rules: opts.rules.clone(),
        traits: opts.traits.clone(),
        events_version,
    };
    let bytes = serde_json::to_vec_pretty(&state).map_err(|e| Error::Resolve(e.to_string()))?;
    lake.write_state(RESOLVE_STATE, bytes).await?;
    report.profile_secs = t.elapsed().as_secs_f64();
    Ok(report)
}

/// The build of [`build_and_commit_profiles`]: the profiles, when the last
/// build from every event was, and why this one was from every event.
async fn build_profiles_from(
    lake: &Lake,
    ctx: &SessionContext,
    events: &keystone_lake::deltalake::DeltaTable,
    batches: Option<Vec<RecordBatch>>,
    update: std::result::Result<ProfileUpdate, String>,
    opts: &ResolveOptions,
) -> Result<(crate::profiles::BuiltProfiles, i64, Option<String>)> {
    let mut profiles_full = None;
    let batches = match batches {
        Some(b) => b,
        None => {
            let table = lake
                .load(&IDENTITIES)
                .await?
                .ok_or_else(|| Error::Resolve("identities table vanished".into()))?;
            ctx.read_table(table.table_provider().await?)?
                .collect()
                .await?
        }
    };
    let schema = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(identities_schema);
    let mem = MemTable::try_new(schema, vec![batches])?;
    prepare_session(ctx, events, Arc::new(mem), &opts.rules).await?;

    let now = chrono::Utc::now().timestamp();
    let traits_text = crate::profiles::state_fingerprint(&opts.traits);
    let refresh = i64::try_from(
        opts.profile_refresh_secs
            .unwrap_or(DEFAULT_PROFILE_REFRESH_SECS),
    )
    .unwrap_or(i64::MAX);
    // Incremental only from states of the previous run, for the same
    // traits, and while the last build from every event is recent enough.
    let plan = match update {
        Err(why) => Err(why),
        Ok(update) => match load_states(lake).await {
            Err(e) => Err(format!("saved profile states unreadable ({e})")),
            Ok(None) => Err("no saved profile states".to_string()),
            Ok(Some(saved)) if saved.events_version != update.since => Err(format!(
                "saved profile states are of events version {}, not {}",
                saved.events_version, update.since
            )),
            Ok(Some(saved)) if saved.traits != traits_text => Err(
                "saved profile states are of other computed traits or another version".to_string(),
            ),
            // A clock that went back also calls for a rebuild.
            Ok(Some(saved)) if now < saved.full_at || now - saved.full_at >= refresh => {
                Err(format!(
                    "the last build from every event is {} h old (refresh every {} h)",
                    (now - saved.full_at) / 3600,
                    refresh / 3600
                ))
            }
            Ok(Some(saved)) => Ok((update, saved)),
        },
    };
    let (built, full_at) = match plan {
        Ok((update, saved)) => {
            ctx.deregister_table("events_new")?;
            ctx.deregister_table("events_resolved_new")?;
            // A commit may add no file (metadata only): no new events then.
            let new: Arc<dyn datafusion::catalog::TableProvider> = if update.new_files.is_empty() {
                Arc::new(MemTable::try_new(events_schema(), vec![vec![]])?)
            } else {
                events
                    .table_provider()
                    .with_file_paths(update.new_files)
                    .await?
            };
            ctx.register_table("events_new", new)?;
            ctx.register_table(
                "events_resolved_new",
                ctx.sql(&events_resolved_sql_over("events_new"))
                    .await?
                    .into_view(),
            )?;
            let input = ProfileInput::Incremental {
                states: saved.batches,
                merged: update.merged,
            };
            match build_profiles(ctx, &opts.traits, input).await {
                Ok(built) => (built, saved.full_at),
                // States of another layout (e.g. another DataFusion): rebuild.
                Err(Error::Resolve(e)) if e.starts_with("saved profile states") => {
                    profiles_full = Some(e);
                    (
                        build_profiles(ctx, &opts.traits, ProfileInput::All).await?,
                        now,
                    )
                }
                Err(e) => return Err(e),
            }
        }
        Err(why) => {
            profiles_full = Some(why);
            (
                build_profiles(ctx, &opts.traits, ProfileInput::All).await?,
                now,
            )
        }
    };
    Ok((built, full_at, profiles_full))
}

/// Read `files` of `events`, interning admitted identifiers and auditing the
/// others. With `check_late`, returns how many events are older than the
/// graph's high-water mark and carry an identifier of an earlier run (and
/// stops reading at the first).
///
/// `context` is read only from the files of `files` that `table` tags as
/// holding no `externalIds` (see [`files_without_external_ids`]) unless a
/// configured property path reads it; `properties` and `traits` only when a
/// configured property path reads them. Elsewhere they are NULL, which is
/// what extraction would have made of them. Also returns how many files
/// were read without `context`.
async fn read_events(
    ctx: &SessionContext,
    table: &keystone_lake::deltalake::DeltaTable,
    files: &[String],
    into: &mut ReadInto<'_>,
) -> Result<(u64, usize)> {
    let rules = into.graph.rules().clone();
    let read_by_paths = |object: &str| paths_read(&rules, object);
    let (whole, without_context): (Vec<String>, Vec<String>) = if read_by_paths("context") {
        (files.to_vec(), Vec::new())
    } else {
        let lean = files_without_external_ids(table, files)?;
        files.iter().cloned().partition(|f| !lean.contains(f))
    };
    let skipped = without_context.len();
    let mut late = 0;
    for (group, context) in [(whole, true), (without_context, false)] {
        let read = |object: &str| match object {
            "context" => context,
            other => read_by_paths(other),
        };
        late += read_files(ctx, &group, &read, into).await?;
        if late > 0 {
            break;
        }
    }
    Ok((late, skipped))
}

/// Does a configured property path read the event's `object` (`context`,
/// `properties` or `traits`)?
fn paths_read(rules: &Rules, object: &str) -> bool {
    rules
        .property_ids
        .values()
        .any(|path| path.split('.').next() == Some(object))
}

/// Those of `files` (URIs of `table`'s files at its loaded version) whose
/// writer tagged them as holding no event with `externalIds` in its
/// `context`. Only the files asked about have their log entry rebuilt.
fn files_without_external_ids(
    table: &keystone_lake::deltalake::DeltaTable,
    files: &[String],
) -> Result<HashSet<String>> {
    let wanted: HashSet<&str> = files.iter().map(String::as_str).collect();
    let snapshot = table
        .snapshot()
        .map_err(|e| keystone_lake::Error::delta(EVENTS.name, e))?;
    let store = table.log_store();
    Ok(snapshot
        .log_data()
        .iter()
        .filter_map(|file| {
            let uri = store.to_uri(&file.object_store_path());
            if !wanted.contains(uri.as_str()) {
                return None;
            }
            // The only way delta-rs 1.1 exposes a file's tags.
            #[allow(deprecated)]
            let add = file.add_action();
            add.tags
                .as_ref()
                .is_some_and(|t| t.contains_key(keystone_lake::NO_EXTERNAL_IDS_TAG))
                .then_some(uri)
        })
        .collect())
}

/// Where [`read_events`] puts what it reads.
struct ReadInto<'a> {
    graph: &'a mut IdentityGraph,
    events: &'a mut Events,
    audit: &'a mut Vec<AuditRow>,
    /// Count (and stop at) events that rewrite what earlier runs decided.
    check_late: bool,
    progress: &'a mut (dyn FnMut(Progress<'_>) + Send),
}

/// [`read_events`] of `files`, reading the identity columns `read` says
/// (the others NULL).
async fn read_files(
    ctx: &SessionContext,
    files: &[String],
    read: &dyn Fn(&str) -> bool,
    into: &mut ReadInto<'_>,
) -> Result<u64> {
    let ReadInto {
        graph,
        events,
        audit,
        check_late,
        progress,
    } = into;
    let check_late = *check_late;
    if files.is_empty() {
        return Ok(0);
    }
    let urls = files
        .iter()
        .map(ListingTableUrl::parse)
        .collect::<datafusion::error::Result<Vec<_>>>()?;
    let file_schema = Arc::new(arrow::datatypes::Schema::new(
        events_schema()
            .fields()
            .iter()
            .filter(|f| f.name() != EVENT_DATE)
            .cloned()
            .collect::<Vec<_>>(),
    ));
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(file_schema);
    let table = ListingTable::try_new(config)?;
    let mut columns = vec![col("timestamp"), col("message_id")];
    for name in IDENTITY_KEY_ARGS {
        columns.push(match *name {
            "context" | "properties" | "traits" if !read(name) => {
                lit(datafusion::scalar::ScalarValue::Utf8(None)).alias(*name)
            }
            _ => col(*name),
        });
    }
    let df = ctx.read_table(Arc::new(table))?.select(columns)?;
    let mut stream = df.execute_stream().await?;
    let rules = graph.rules().clone();
    let mut late = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let ts = batch.column(0);
        let ts = match ts.data_type() {
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                ts.as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            }
            other => return Err(Error::Resolve(format!("events.timestamp has type {other}"))),
        };
        let mids = StrCol::new(batch.column(1).as_ref())?;
        let cols = (2..batch.num_columns())
            .map(|c| StrCol::new(batch.column(c).as_ref()))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        for row in 0..batch.num_rows() {
            let t = if ts.is_valid(row) { ts.value(row) } else { 0 };
            let mid = mids.get(row).unwrap_or_default();
            let first_id = events.ids.len();
            extract_with(
                &event_ids(&cols, row),
                &rules,
                &mut |kind, value, verdict| match verdict {
                    Ok(()) => {
                        let k = graph.kind_index(kind);
                        events.ids.push(graph.intern(k, &value));
                    }
                    Err(rule) => audit.push(AuditRow {
                        kind: kind.to_string(),
                        value: audit_value(value.into_owned()),
                        message_id: mid.to_string(),
                        rule,
                        ts: t,
                    }),
                },
            );
            if check_late && graph.rewrites_history(t, &events.ids[first_id..]) {
                late += 1;
            }
            events.ts.push(t);
            events.mids.push_str(mid);
            events.mid_ends.push(events.mids.len() as u64);
            events.id_ends.push(events.ids.len() as u64);
        }
        progress(Progress::EventsRead(events.len() as u64));
        if late > 0 {
            return Ok(late);
        }
    }
    Ok(late)
}

/// Audit rows keep at most 1 KiB of a value (an over-long one is the reason
/// it is there): what `identity_audit.identifier` holds for `value`.
pub(crate) fn audit_value(mut value: String) -> String {
    if value.len() > 1024 {
        let mut end = 1024;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
        value.push('…');
    }
    value
}

/// Save the graph snapshot `bytes` (its first [`SNAPSHOT_HEADER`] bytes
/// left for the header) of the run that resolved `events_version` and
/// committed `identities_version` (both checked when it is loaded).
async fn save_snapshot(
    lake: &Lake,
    mut bytes: Vec<u8>,
    events_version: i64,
    identities_version: i64,
) -> Result<()> {
    bytes[..8].copy_from_slice(SNAPSHOT_MAGIC);
    bytes[8..16].copy_from_slice(&events_version.to_le_bytes());
    bytes[16..SNAPSHOT_HEADER].copy_from_slice(&identities_version.to_le_bytes());
    lake.write_state(GRAPH_SNAPSHOT, bytes).await?;
    Ok(())
}

/// The graph of the last run from its snapshot, or why the snapshot cannot
/// stand for the tables (then they are read): missing, damaged, of another
/// run than the watermark's, or `identities` changed since (an erasure).
async fn load_snapshot(
    lake: &Lake,
    watermark: i64,
    rules: &Rules,
) -> Result<std::result::Result<IdentityGraph, String>> {
    let Some(bytes) = lake.read_state(GRAPH_SNAPSHOT).await? else {
        return Ok(Err("no graph snapshot".to_string()));
    };
    let Some((head, body)) = bytes.split_at_checked(SNAPSHOT_HEADER) else {
        return Ok(Err("graph snapshot truncated".to_string()));
    };
    let version = |at: usize| i64::from_le_bytes(head[at..at + 8].try_into().unwrap_or_default());
    if &head[..8] != SNAPSHOT_MAGIC {
        return Ok(Err("graph snapshot of an unknown format".to_string()));
    }
    let (events_version, identities_version) = (version(8), version(16));
    if events_version != watermark {
        return Ok(Err(format!(
            "graph snapshot of events version {events_version}, the last run resolved {watermark}"
        )));
    }
    let now = match lake.load(&IDENTITIES).await? {
        Some(table) => table.version().unwrap_or_default() as i64,
        None => return Ok(Err("no identities table".to_string())),
    };
    if now != identities_version {
        return Ok(Err(format!(
            "identities changed since the graph snapshot (version {now}, not {identities_version})"
        )));
    }
    Ok(IdentityGraph::from_snapshot(rules.clone(), body)
        .map_err(|e| format!("graph snapshot unreadable: {e}")))
}

/// Rebuild the graph saved by earlier runs.
async fn restore_graph(lake: &Lake, ctx: &SessionContext, rules: &Rules) -> Result<IdentityGraph> {
    // Merges absorbed per live profile: follow each chain to its end.
    let mut into: HashMap<String, String> = HashMap::new();
    if let Some(table) = lake.load(&PROFILE_MERGES).await? {
        let df = ctx.read_table(table.table_provider().await?)?;
        for batch in df.collect().await? {
            let from = StrCol::new(batch.column(0).as_ref())?;
            let to = StrCol::new(batch.column(1).as_ref())?;
            for i in 0..batch.num_rows() {
                if let (Some(f), Some(t)) = (from.get(i), to.get(i)) {
                    into.insert(f.to_string(), t.to_string());
                }
            }
        }
    }
    let mut merges: HashMap<String, u32> = HashMap::new();
    for from in into.keys() {
        *merges.entry(chain_end(&into, from).clone()).or_default() += 1;
    }
    let mut restore =
        GraphRestore::new(rules.clone(), |p: &str| merges.get(p).copied().unwrap_or(0));
    if let Some(table) = lake.load(&IDENTITIES).await? {
        let df = ctx.read_table(table.table_provider().await?)?;
        let mut stream = df.execute_stream().await?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let c = |n: &str| -> Result<StrCol<'_>> {
                Ok(StrCol::new(
                    batch
                        .column_by_name(n)
                        .ok_or_else(|| Error::Resolve(format!("identities has no column {n}")))?
                        .as_ref(),
                )?)
            };
            let (kind, value, profile, linked) = (
                c("identifier_type")?,
                c("identifier")?,
                c("profile_id")?,
                c("linked_by")?,
            );
            let ts = |n: &str| -> Result<&arrow::array::TimestampMicrosecondArray> {
                Ok(batch
                    .column_by_name(n)
                    .ok_or_else(|| Error::Resolve(format!("identities has no column {n}")))?
                    .as_primitive::<arrow::datatypes::TimestampMicrosecondType>())
            };
            let (first, last) = (ts("first_seen")?, ts("last_seen")?);
            for i in 0..batch.num_rows() {
                restore.add(IdentityRef {
                    kind: kind.get(i).unwrap_or_default(),
                    value: value.get(i).unwrap_or_default(),
                    profile_id: profile.get(i).unwrap_or_default(),
                    first_seen: first.value(i),
                    last_seen: last.value(i),
                    linked_by: linked.get(i).unwrap_or_default(),
                });
            }
        }
    }
    // Identifiers a limit or cap cut: seen, though in no profile.
    let mut unlinked = Vec::new();
    if let Some(table) = lake.load(&IDENTITY_AUDIT).await? {
        let df = ctx
            .read_table(table.table_provider().await?)?
            .filter(
                datafusion::prelude::col("rule").in_list(
                    [
                        CutRule::TypeLimit,
                        CutRule::MergeCap,
                        CutRule::IdentifierCap,
                    ]
                    .iter()
                    .map(|r| datafusion::prelude::lit(r.as_str()))
                    .collect(),
                    false,
                ),
            )?
            .select_columns(&["identifier_type", "identifier"])?
            .distinct()?;
        for batch in df.collect().await? {
            let k = StrCol::new(batch.column(0).as_ref())?;
            let v = StrCol::new(batch.column(1).as_ref())?;
            for i in 0..batch.num_rows() {
                if let (Some(k), Some(v)) = (k.get(i), v.get(i)) {
                    unlinked.push(Identifier::new(k, v));
                }
            }
        }
    }
    Ok(restore.finish(unlinked))
}

const BATCH_ROWS: usize = 64 * 1024;

/// The graph's identities (in `order`, see [`IdentityGraph::identity_order`])
/// as batches of `identities`.
fn identity_batches(graph: &IdentityGraph, order: &[u32]) -> Result<Vec<RecordBatch>> {
    struct Builders {
        kind: StringBuilder,
        value: StringBuilder,
        profile: StringBuilder,
        first: TimestampMicrosecondBuilder,
        last: TimestampMicrosecondBuilder,
        linked: StringBuilder,
    }
    impl Builders {
        fn new() -> Self {
            let ts = || TimestampMicrosecondBuilder::with_capacity(BATCH_ROWS).with_timezone("UTC");
            Self {
                kind: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 8),
                value: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 24),
                profile: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 36),
                first: ts(),
                last: ts(),
                linked: StringBuilder::with_capacity(BATCH_ROWS, BATCH_ROWS * 36),
            }
        }
        fn rows(&self) -> usize {
            arrow::array::ArrayBuilder::len(&self.kind)
        }
        fn finish(&mut self, schema: &arrow::datatypes::SchemaRef) -> Result<RecordBatch> {
            let columns: Vec<ArrayRef> = vec![
                Arc::new(self.kind.finish()),
                Arc::new(self.value.finish()),
                Arc::new(self.profile.finish()),
                Arc::new(self.first.finish()),
                Arc::new(self.last.finish()),
                Arc::new(self.linked.finish()),
            ];
            Ok(RecordBatch::try_new(schema.clone(), columns)?)
        }
    }
    let schema = identities_schema();
    let mut out = Vec::new();
    let mut b = Builders::new();
    let mut failed = None;
    graph.for_each_identity_in(order, |r| {
        b.kind.append_value(r.kind);
        b.value.append_value(r.value);
        b.profile.append_value(r.profile_id);
        b.first.append_value(r.first_seen);
        b.last.append_value(r.last_seen);
        b.linked.append_value(r.linked_by);
        if b.rows() == BATCH_ROWS {
            // Fresh builders, sized for a batch: a finished builder starts
            // again from nothing and would grow by copies.
            match std::mem::replace(&mut b, Builders::new()).finish(&schema) {
                Ok(batch) => out.push(batch),
                Err(e) => failed = Some(e),
            }
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    if b.rows() > 0 || out.is_empty() {
        out.push(b.finish(&schema)?);
    }
    Ok(out)
}

fn audit_batch(rows: &[AuditRow], run_id: i64) -> Result<RecordBatch> {
    let mut kind = StringBuilder::new();
    let mut value = StringBuilder::new();
    let mut mid = StringBuilder::new();
    let mut rule = StringBuilder::new();
    let mut ts = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut run = Int64Builder::new();
    for r in rows {
        kind.append_value(&r.kind);
        value.append_value(&r.value);
        mid.append_value(&r.message_id);
        rule.append_value(r.rule.as_str());
        ts.append_value(r.ts);
        run.append_value(run_id);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(kind.finish()),
        Arc::new(value.finish()),
        Arc::new(mid.finish()),
        Arc::new(rule.finish()),
        Arc::new(ts.finish()),
        Arc::new(run.finish()),
    ];
    Ok(RecordBatch::try_new(identity_audit_schema(), columns)?)
}

fn merge_batch(rows: &[keystone_identity::Merge], run_id: i64) -> Result<RecordBatch> {
    let mut from = StringBuilder::new();
    let mut into = StringBuilder::new();
    let mut at = TimestampMicrosecondBuilder::new().with_timezone("UTC");
    let mut reason = StringBuilder::new();
    let mut mid = StringBuilder::new();
    let mut run = Int64Builder::new();
    for m in rows {
        from.append_value(&m.from);
        into.append_value(&m.into);
        at.append_value(m.at);
        reason.append_value(format!("linked by {}", m.linked_by));
        mid.append_value(&m.message_id);
        run.append_value(run_id);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(from.finish()),
        Arc::new(into.finish()),
        Arc::new(at.finish()),
        Arc::new(reason.finish()),
        Arc::new(mid.finish()),
        Arc::new(run.finish()),
    ];
    Ok(RecordBatch::try_new(profile_merges_schema(), columns)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_chains_end_at_the_last_survivor() {
        let merge = |from: &str, into: &str| keystone_identity::Merge {
            from: from.into(),
            into: into.into(),
            message_id: String::new(),
            at: 0,
            linked_by: "user_id".into(),
        };
        // A into B, then B into C; D into C directly.
        let got = survivors(&[merge("A", "B"), merge("B", "C"), merge("D", "C")]);
        let want: HashMap<String, String> = [("A", "C"), ("B", "C"), ("D", "C")]
            .into_iter()
            .map(|(f, t)| (f.to_string(), t.to_string()))
            .collect();
        assert_eq!(got, want);
        // A cycle (never written) ends instead of looping.
        let cycle: HashMap<&str, &str> = [("x", "y"), ("y", "x")].into_iter().collect();
        assert!(["x", "y"].contains(chain_end(&cycle, &"x")));
    }
}
