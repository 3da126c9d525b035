//! `keystone segment`: define audiences as SQL over Keystone's tables; each
//! is the view `segments.<name>` in every SQL session (CLI and Flight SQL).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use keystone_engine::Engine;

use crate::config::Settings;

#[derive(Debug, Args)]
pub struct SegmentArgs {
    #[command(subcommand)]
    command: SegmentCommand,
}

#[derive(Debug, Subcommand)]
enum SegmentCommand {
    /// Define a segment: SQL over Keystone's tables that returns profile_id.
    Create {
        /// Lower-case letters, digits and _ (the view is segments.NAME).
        name: String,
        /// e.g. "SELECT profile_id FROM profiles WHERE revenue > 1000".
        #[arg(long)]
        sql: String,
    },
    /// List the segments: name, created, definition.
    List,
    /// Remove a segment's definition (refused while another segment uses it).
    Drop { name: String },
    /// Snapshot members into segment_membership and who entered/exited since
    /// the previous run into segment_changes (one run id for all).
    Materialize {
        /// Segments to materialise (default with --all: every segment).
        names: Vec<String>,
        /// Every defined segment.
        #[arg(long, conflicts_with = "names")]
        all: bool,
    },
    /// List the materialisation runs: run id, when, members/entered/exited.
    Runs,
    /// Write a segment's members to a Parquet or CSV file (local or s3://).
    Export {
        name: String,
        /// File path or URL, e.g. ./exports/vip.parquet or s3://bucket/vip.csv.
        #[arg(long)]
        to: String,
        /// Default: the extension of --to (.csv or .parquet), else parquet.
        #[arg(long, value_enum)]
        format: Option<Format>,
        /// email and phone as hex SHA-256 of the normalised value.
        #[arg(long)]
        hash_identifiers: bool,
        /// Only who entered or exited since this run (keystone segment runs).
        #[arg(long, value_name = "RUN")]
        changes_since: Option<i64>,
        /// Only profiles whose latest consent for this purpose is granted
        /// (e.g. marketing, advertising).
        #[arg(long)]
        purpose: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Parquet,
    Csv,
}

impl Format {
    /// The format a destination's extension names (Parquet otherwise).
    fn of(to: &str) -> Self {
        let path = to.split(['?', '#']).next().unwrap_or(to);
        if path.to_ascii_lowercase().ends_with(".csv") {
            Format::Csv
        } else {
            Format::Parquet
        }
    }
}

pub async fn run(settings: &Settings, args: SegmentArgs) -> anyhow::Result<ExitCode> {
    let engine = Engine::open(settings.existing_lake()?).await?;
    match args.command {
        SegmentCommand::Create { name, sql } => {
            let def = engine.create_segment(&name, &sql).await?;
            if !settings.quiet {
                let members = engine
                    .collect(&format!("SELECT count(*) FROM segments.{}", def.name))
                    .await?;
                let n = members
                    .first()
                    .and_then(|b| {
                        arrow::array::cast::AsArray::as_primitive_opt::<
                                arrow::datatypes::Int64Type,
                            >(b.column(0).as_ref())
                            .map(|a| a.value(0))
                    })
                    .unwrap_or(0);
                eprintln!(
                    "created segment {} ({n} profiles now); query it as segments.{}",
                    def.name, def.name
                );
            }
        }
        SegmentCommand::List => {
            outln!("name\tcreated_at\tsql");
            for d in engine.refresh_segments().await? {
                outln!("{}\t{}\t{}", d.name, d.created_at, d.sql.replace('\n', " "));
            }
        }
        SegmentCommand::Drop { name } => {
            engine.drop_segment(&name).await?;
            if !settings.quiet {
                eprintln!("dropped segment {name}");
            }
        }
        SegmentCommand::Materialize { names, all } => {
            if names.is_empty() && !all {
                anyhow::bail!("name the segments to materialise, or pass --all");
            }
            let quiet = settings.quiet;
            let report = engine
                .materialize_segments(&names, |t| {
                    if !quiet {
                        eprintln!(
                            "  {}: {} members, +{} entered, -{} exited ({:.2} s, changes {:.2} s)",
                            t.counts.segment,
                            t.counts.members,
                            t.counts.entered,
                            t.counts.exited,
                            t.evaluate.as_secs_f64(),
                            t.changes.as_secs_f64()
                        );
                    }
                })
                .await?;
            if report.discarded_rows > 0 && !quiet {
                eprintln!(
                    "removed {} rows left by an earlier run that did not finish",
                    report.discarded_rows
                );
            }
            if !quiet {
                eprintln!(
                    "materialised {} segment(s) as run {} (written in {:.2} s)",
                    report.run.segments.len(),
                    report.run.run_id,
                    report.write.as_secs_f64()
                );
            }
            outln!("{}", report.run.run_id);
            if !report.failed.is_empty() {
                for (_, why) in &report.failed {
                    eprintln!("error: {why}");
                }
                anyhow::bail!(
                    "{} segment(s) left out of run {}: {}",
                    report.failed.len(),
                    report.run.run_id,
                    report
                        .failed
                        .iter()
                        .map(|(name, _)| name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        SegmentCommand::Runs => {
            outln!("run_id\tmaterialized_at\tsegment\tmembers\tentered\texited");
            for run in keystone_engine::materialize::segment_runs(engine.lake()).await? {
                for s in &run.segments {
                    outln!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        run.run_id,
                        run.materialized_at,
                        s.segment,
                        s.members,
                        s.entered,
                        s.exited
                    );
                }
            }
        }
        SegmentCommand::Export {
            name,
            to,
            format,
            hash_identifiers,
            changes_since,
            purpose,
        } => {
            let format = format.unwrap_or_else(|| Format::of(&to));
            let opts = keystone_engine::export::ExportOptions {
                to,
                format: match format {
                    Format::Parquet => keystone_engine::export::ExportFormat::Parquet,
                    Format::Csv => keystone_engine::export::ExportFormat::Csv,
                },
                hash_identifiers,
                changes_since,
                purpose,
            };
            let record = engine.export_segment(&name, &opts).await?;
            if !settings.quiet {
                eprintln!(
                    "exported {} rows of segment {} to {}",
                    record.rows, record.segment, record.url
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
