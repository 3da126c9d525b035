//! `keystone tables`: what the lake holds.

use std::process::ExitCode;

use clap::Args;
use keystone_lake::TABLES;

use crate::config::Settings;

#[derive(Debug, Args)]
pub struct TablesArgs {}

pub async fn run(settings: &Settings, _args: TablesArgs) -> anyhow::Result<ExitCode> {
    let lake = settings.existing_lake()?;
    outln!("lake: {}", lake.root());
    for spec in TABLES {
        match lake.load(spec).await? {
            Some(t) => {
                let version = t.version().map_or_else(|| "-".into(), |v| v.to_string());
                let files = t.get_file_uris().map(|f| f.count()).unwrap_or(0);
                outln!(
                    "  {:<12} version {version:<6} {files:>6} files  {}",
                    spec.name,
                    spec.description
                );
            }
            None => outln!(
                "  {:<12} (not created yet)  {}",
                spec.name,
                spec.description
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
