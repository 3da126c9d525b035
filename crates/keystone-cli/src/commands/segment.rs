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
}

pub async fn run(settings: &Settings, args: SegmentArgs) -> anyhow::Result<ExitCode> {
    let engine = Engine::open(settings.lake()?).await?;
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
            println!("name\tcreated_at\tsql");
            for d in engine.refresh_segments().await? {
                println!("{}\t{}\t{}", d.name, d.created_at, d.sql.replace('\n', " "));
            }
        }
        SegmentCommand::Drop { name } => {
            engine.drop_segment(&name).await?;
            if !settings.quiet {
                eprintln!("dropped segment {name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
