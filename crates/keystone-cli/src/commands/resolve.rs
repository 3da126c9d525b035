//! `keystone resolve`: incremental identity resolution, then the profile rebuild.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use indicatif::ProgressBar;
use keystone_engine::resolve::{Mode, Progress, ResolveOptions, ResolveReport, resolve};
use keystone_lake::Lake;
use serde_json::json;

use crate::config::Settings;
use crate::progress;

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// Print the result as one JSON object (for scripts).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(settings: &Settings, args: ResolveArgs) -> anyhow::Result<ExitCode> {
    let lake = settings.existing_lake()?;
    let report = resolve_with_progress(&lake, settings).await?;
    if args.json {
        outln!("{}", report_json(&report));
    } else if !settings.quiet {
        print_summary(&report);
    }
    Ok(ExitCode::SUCCESS)
}

/// Run `resolve` with a spinner naming the phase on a terminal.
pub async fn resolve_with_progress(
    lake: &Lake,
    settings: &Settings,
) -> anyhow::Result<ResolveReport> {
    let opts = ResolveOptions {
        rules: settings.rules.clone(),
        traits: settings.traits.clone(),
        profile_refresh_secs: settings.profile_refresh_secs,
    };
    let bar = progress::spinner(settings.quiet);
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut phase = String::new();
    let mut on_progress = |p: Progress<'_>| update(&bar, &mut phase, p);
    let report = resolve(lake, &opts, &mut on_progress).await;
    bar.finish_and_clear();
    Ok(report?)
}

fn update(bar: &ProgressBar, phase: &mut String, p: Progress<'_>) {
    match p {
        Progress::Phase(name) => {
            *phase = name.to_string();
            bar.set_message(name.to_string());
        }
        Progress::EventsRead(n) => bar.set_message(format!("{phase}: {n} events")),
    }
}

fn mode_text(mode: &Mode) -> String {
    match mode {
        Mode::UpToDate => "up to date".into(),
        Mode::ProfilesOnly => "profiles rebuilt (computed traits changed)".into(),
        Mode::Incremental => "incremental".into(),
        Mode::Full(why) => format!("full rebuild: {why}"),
    }
}

/// Print what a run did, for people.
pub fn print_summary(r: &ResolveReport) {
    if r.mode == Mode::UpToDate {
        outln!(
            "nothing new: events version {} is already resolved",
            r.events_version
        );
        return;
    }
    let total = r.total_secs;
    outln!(
        "{} (events version {}) in {total:.1}s",
        mode_text(&r.mode),
        r.events_version
    );
    if let Some(from) = &r.graph_loaded_from {
        outln!(
            "  previous identity graph loaded from the {from} in {:.1}s",
            r.load_secs
        );
    }
    outln!(
        "  read {} events from {} files in {:.1}s",
        r.events_read,
        r.files_read,
        r.read_secs
    );
    outln!(
        "  {} identifiers in {} profiles; {} merges, {} identifiers cut by a rule (see identity_audit); graph {:.1}s",
        r.identifiers,
        r.profiles,
        r.merges,
        r.cuts,
        r.graph_secs
    );
    let how = match &r.profiles_full {
        None => "updated from the new events".to_string(),
        Some(why) => format!("built from every event ({why})"),
    };
    outln!(
        "  profiles {how} in {:.1}s; identities committed in {:.1}s (while the profiles were built)",
        r.profile_secs,
        r.commit_secs
    );
}

fn report_json(r: &ResolveReport) -> serde_json::Value {
    let (mode, reason) = match &r.mode {
        Mode::UpToDate => ("up_to_date", None),
        Mode::ProfilesOnly => ("profiles_only", None),
        Mode::Incremental => ("incremental", None),
        Mode::Full(why) => ("full", Some(why.clone())),
    };
    json!({
        "mode": mode,
        "reason": reason,
        "events_version": r.events_version,
        "files_read": r.files_read,
        "files_read_without_context": r.files_read_without_context,
        "events_read": r.events_read,
        "identifiers": r.identifiers,
        "profiles": r.profiles,
        "merges": r.merges,
        "cuts": r.cuts,
        "profiles_mode": match (&r.mode, &r.profiles_full) {
            (Mode::UpToDate, _) => None,
            (_, None) => Some("incremental"),
            (_, Some(_)) => Some("full"),
        },
        "profiles_reason": r.profiles_full,
        "graph_loaded_from": r.graph_loaded_from,
        "seconds": {
            "total": r.total_secs,
            "load": r.load_secs,
            "read": r.read_secs,
            "graph": r.graph_secs,
            "profiles": r.profile_secs,
            "commit": r.commit_secs,
        },
    })
}
