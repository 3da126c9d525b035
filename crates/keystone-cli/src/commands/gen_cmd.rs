//! `keystone gen`: a deterministic synthetic workload with ground truth.

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::NaiveDate;
use clap::Args;
use keystone_gen::{GenConfig, generate};

use crate::config::Settings;
use crate::progress;

#[derive(Debug, Args)]
pub struct GenArgs {
    /// Number of people to simulate (≈ 10 events each).
    #[arg(long)]
    pub profiles: u64,
    /// Output folder (created if needed).
    #[arg(long)]
    pub out: PathBuf,
    /// Random seed: the same seed and dates give byte-identical files.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Last day of data (YYYY-MM-DD). Default: 2026-11-01.
    #[arg(long)]
    pub end: Option<NaiveDate>,
    /// Number of days covered, ending at --end.
    #[arg(long, default_value_t = 90)]
    pub days: u32,
}

pub fn run(settings: &Settings, args: GenArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = GenConfig::new(args.profiles);
    cfg.seed = args.seed;
    cfg.days = args.days;
    if let Some(end) = args.end {
        cfg.end = end;
    }
    let summary = run_config(&cfg, &args.out, settings.quiet)?;
    if !settings.quiet {
        outln!(
            "generated {} profiles: {} events, {} store purchases, {} ground-truth identifiers in {}",
            summary.profiles,
            summary.events,
            summary.store_purchases,
            summary.truth_rows,
            args.out.display()
        );
        for f in &summary.files {
            outln!("  {}", f.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Generate with a progress bar; shared with `demo`.
pub fn run_config(
    cfg: &GenConfig,
    out: &std::path::Path,
    quiet: bool,
) -> anyhow::Result<keystone_gen::GenSummary> {
    let pb = progress::count(cfg.profiles, quiet, "generating profiles");
    let summary = generate(cfg, out, &mut |done| pb.set_position(done))?;
    pb.finish_and_clear();
    Ok(summary)
}
