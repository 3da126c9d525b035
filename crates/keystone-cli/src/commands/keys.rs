//! `keystone keys`: API keys, stored hashed in the lake.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use keystone_lake::Role;

use crate::config::Settings;

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print it (alone, once) on standard output.
    Create {
        /// collector (sends events), analyst, activation or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A name; for collector keys it is the `source` of their events.
        #[arg(long)]
        name: Option<String>,
        /// Extra grants, e.g. `--grant pii` (repeatable).
        #[arg(long = "grant")]
        grants: Vec<String>,
    },
    /// List the keys (id, name, role, created; never the key itself).
    List,
    /// Revoke a key by its id (the `ks_…` prefix shown by `keys list`).
    Revoke { id: String },
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| {
        let all: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
        format!("unknown role {s:?} (expected one of: {})", all.join(", "))
    })
}

pub async fn run(settings: &Settings, args: KeysArgs) -> anyhow::Result<ExitCode> {
    let lake = settings.lake()?;
    match args.command {
        KeysCommand::Create { role, name, grants } => {
            let (key, record) = lake.create_key(role, name.as_deref(), &grants).await?;
            outln!("{key}");
            if !settings.quiet {
                eprintln!(
                    "created {} key {} named {:?}: store it now, it is not shown again",
                    role.as_str(),
                    record.id,
                    record.name
                );
            }
        }
        KeysCommand::List => {
            let ring = lake.keys().await?;
            outln!("id\tname\trole\tgrants\tcreated_at\tstatus");
            for k in ring.records() {
                outln!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    k.id,
                    k.name,
                    k.role.as_str(),
                    k.grants.join(","),
                    k.created_at,
                    if k.revoked { "revoked" } else { "active" }
                );
            }
        }
        KeysCommand::Revoke { id } => {
            let already = lake
                .keys()
                .await?
                .records()
                .iter()
                .any(|k| k.id == id && k.revoked);
            if !lake.revoke_key(&id).await? {
                anyhow::bail!("no key with id {id:?} (see `keystone keys list`)");
            }
            if !settings.quiet {
                if already {
                    eprintln!("key {id} was already revoked");
                } else {
                    eprintln!("revoked key {id}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
