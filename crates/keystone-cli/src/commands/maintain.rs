//! `keystone maintain`: retention, compaction, checkpoints, vacuum.

use std::process::ExitCode;

use clap::Args;
use keystone_engine::Engine;

use crate::config::Settings;

#[derive(Debug, Args)]
pub struct MaintainArgs {
    /// Apply retention as of this day (YYYY-MM-DD) instead of today (UTC).
    #[arg(long)]
    today: Option<chrono::NaiveDate>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(settings: &Settings, args: MaintainArgs) -> anyhow::Result<ExitCode> {
    let engine = Engine::open(settings.existing_lake()?).await?;
    let today = args
        .today
        .unwrap_or_else(|| chrono::Utc::now().date_naive());
    let quiet = settings.quiet || args.json;
    let report = engine
        .maintain(&settings.retention, &settings.maintain, today, |t| {
            if !quiet {
                eprintln!(
                    "  {}: {} rows expired, {} → {} files, {} old files deleted ({:.1} s)",
                    t.table,
                    t.rows_expired,
                    t.files_before,
                    t.files_after,
                    t.files_vacuumed,
                    t.seconds
                );
            }
        })
        .await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else if !settings.quiet {
        eprintln!(
            "maintained {} tables in {:.1} s",
            report.tables.len(),
            report.seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}
