//! `keystone ingest FILE...`: load files into `events`, bad rows into `quarantine`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use keystone_ingest::{Format, IngestMetrics, IngestOptions, ingest_files};
use keystone_lake::Lake;

use crate::config::Settings;
use crate::progress;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Ndjson,
    Csv,
    Parquet,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files to load (all in one atomic commit).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Input format; default: from each file's extension.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Value of the `source` column; default: each file's name without extension.
    #[arg(long)]
    pub source: Option<String>,
    /// Column mapping for CSV files; default: FILE.mapping.toml beside each CSV.
    #[arg(long)]
    pub mapping: Option<PathBuf>,
    /// Load files even if the same content was loaded before.
    #[arg(long)]
    pub force: bool,
    /// Print the result as one JSON object (for scripts).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(settings: &Settings, args: IngestArgs) -> anyhow::Result<ExitCode> {
    let lake = settings.lake()?;
    let opts = IngestOptions {
        format: args.format.map(|f| match f {
            FormatArg::Ndjson => Format::Ndjson,
            FormatArg::Csv => Format::Csv,
            FormatArg::Parquet => Format::Parquet,
        }),
        source: args.source,
        mapping: args.mapping,
        force: args.force,
        batch_rows: settings.batch_rows,
        label: None,
    };
    let metrics = ingest_with_progress(&lake, &args.files, &opts, settings.quiet).await?;
    if args.json {
        outln!("{}", metrics_json(&metrics));
    } else if !settings.quiet {
        print_summary(&metrics);
    }
    exit_code(&metrics)
}

/// Ingest with a progress bar; shared with `demo`.
pub async fn ingest_with_progress(
    lake: &Lake,
    files: &[PathBuf],
    opts: &IngestOptions,
    quiet: bool,
) -> anyhow::Result<IngestMetrics> {
    let pb = progress::bytes(0, quiet, "ingesting");
    let metrics = ingest_files(lake, files, opts, &mut |done, total| {
        pb.set_length(total);
        pb.set_position(done);
    })
    .await?;
    pb.finish_and_clear();
    Ok(metrics)
}

/// Per-file lines and totals, for people.
pub fn print_summary(m: &IngestMetrics) {
    for f in &m.files {
        match f.loaded {
            Some((events, quarantined)) => outln!(
                "{}: {events} events loaded, {quarantined} quarantined (source {:?}, {})",
                f.path.display(),
                f.source,
                f.format.as_str()
            ),
            None => outln!(
                "{}: skipped, this content was already loaded (sha256 {}…); use --force to load it again",
                f.path.display(),
                &f.sha256[..12]
            ),
        }
    }
    let secs = m.elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        m.events as f64 / secs
    } else {
        0.0
    };
    outln!(
        "loaded {} events, quarantined {} rows in {secs:.2}s ({rate:.0} events/s){}",
        m.events,
        m.quarantined,
        m.events_version
            .map(|v| format!(", events table version {v}"))
            .unwrap_or_default()
    );
    if m.quarantined > 0 {
        outln!(
            "see why: keystone sql \"SELECT file, line, reason FROM quarantine ORDER BY received_at DESC, line LIMIT 20\""
        );
    }
}

fn metrics_json(m: &IngestMetrics) -> serde_json::Value {
    serde_json::json!({
        "events": m.events,
        "quarantined": m.quarantined,
        "suppressed": m.suppressed,
        "events_version": m.events_version,
        "quarantine_version": m.quarantine_version,
        "seconds": m.elapsed.as_secs_f64(),
        "files": m.files.iter().map(|f| serde_json::json!({
            "path": f.path.display().to_string(),
            "sha256": f.sha256,
            "format": f.format.as_str(),
            "source": f.source,
            "skipped": f.loaded.is_none(),
            "events": f.events(),
            "quarantined": f.quarantined(),
        })).collect::<Vec<_>>(),
    })
}

/// Non-zero only when something was to be loaded and nothing could be.
fn exit_code(m: &IngestMetrics) -> anyhow::Result<ExitCode> {
    let attempted = m.files.iter().any(|f| f.loaded.is_some());
    if attempted && m.events == 0 && m.suppressed == 0 {
        anyhow::bail!(
            "nothing could be loaded: {} rows quarantined, 0 valid events",
            m.quarantined
        );
    }
    Ok(ExitCode::SUCCESS)
}
