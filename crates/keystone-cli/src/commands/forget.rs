//! `keystone forget`: erase people, physically, and keep them out.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use keystone_engine::Engine;
use keystone_engine::forget::Subject;

use crate::config::Settings;

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// Identifiers of the people to erase: TYPE:VALUE (email:jane@example.org,
    /// phone:+33612345678, user_id:u-42, anonymous_id:…, device_id:…).
    subjects: Vec<String>,
    /// A file of identifiers, one TYPE:VALUE per line (or a CSV with columns
    /// type,value); blank lines and lines starting with # are skipped.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Print the audit record as JSON.
    #[arg(long)]
    json: bool,
}

fn read_file(path: &PathBuf) -> anyhow::Result<Vec<Subject>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.eq_ignore_ascii_case("type,value") {
            continue;
        }
        // `type,value` (CSV) when a comma comes before any colon.
        let spec = match (line.find(','), line.find(':')) {
            (Some(comma), colon) if colon.is_none_or(|c| comma < c) => {
                format!("{}:{}", &line[..comma], &line[comma + 1..])
            }
            _ => line.to_string(),
        };
        let subject = Subject::parse(&spec)
            .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        out.push(subject);
    }
    Ok(out)
}

pub async fn run(settings: &Settings, args: ForgetArgs) -> anyhow::Result<ExitCode> {
    let mut subjects = args
        .subjects
        .iter()
        .map(|s| Subject::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(file) = &args.file {
        subjects.extend(read_file(file)?);
    }
    if subjects.is_empty() {
        anyhow::bail!("nothing to forget: give TYPE:VALUE arguments or --file ids.csv");
    }
    let engine = Engine::open(settings.existing_lake()?).await?;
    let record = engine.forget(&subjects).await?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&record)?);
    } else if !settings.quiet {
        let removed: Vec<String> = record
            .removed
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        eprintln!(
            "forgot {} profile(s), {} identifier(s): removed {}; {} data file(s) deleted from storage, {} export(s) rewritten; future events with these identifiers are dropped ({:.1} s)",
            record.profiles,
            record.identifiers,
            if removed.is_empty() {
                "nothing".to_string()
            } else {
                removed.join(", ")
            },
            record.files_deleted,
            record.exports_rewritten,
            record.seconds
        );
    }
    if !record.exports_failed.is_empty() {
        // The erasure, suppression and audit are done; these files are not.
        anyhow::bail!(
            "{} export file(s) could not be rewritten and may still hold the people's rows (the people are erased everywhere else: remove their rows from these files by hand):\n  {}",
            record.exports_failed.len(),
            record.exports_failed.join("\n  ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
