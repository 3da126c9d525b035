//! `keystone export-subject`: everything about a person (right of access).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use keystone_engine::Engine;
use keystone_engine::forget::Subject;

use crate::config::Settings;

#[derive(Debug, Args)]
pub struct ExportSubjectArgs {
    /// Identifiers of the person: TYPE:VALUE (email:jane@example.org, user_id:u-42, …).
    #[arg(required = true)]
    subjects: Vec<String>,
    /// Write the JSON document here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub async fn run(settings: &Settings, args: ExportSubjectArgs) -> anyhow::Result<ExitCode> {
    let subjects = args
        .subjects
        .iter()
        .map(|s| Subject::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let engine = Engine::open(settings.existing_lake()?).await?;
    let doc = engine.export_subject(&subjects).await?;
    let text = serde_json::to_string_pretty(&doc)?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, text + "\n")
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
            if !settings.quiet {
                let n = |k: &str| doc[k].as_array().map_or(0, Vec::len);
                eprintln!(
                    "wrote {}: {} profile(s), {} identifier(s), {} event(s)",
                    path.display(),
                    n("profiles"),
                    n("identities"),
                    n("events")
                );
            }
        }
        None => outln!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
