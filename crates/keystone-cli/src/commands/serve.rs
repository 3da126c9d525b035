//! `keystone serve`: the Segment-compatible HTTP collector.
//!
//! The Flight SQL listener (`--flight`) is not built yet: the flag is
//! accepted and refused with a clear message so scripts fail loudly.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use keystone_collect::{ServeOptions, serve};

use crate::config::Settings;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTP collector.
    #[arg(long, default_value = "127.0.0.1:8088")]
    http: String,
    /// Address of the Flight SQL service (not available yet).
    #[arg(long)]
    flight: Option<String>,
    /// Write-ahead log folder on local disk (default ./keystone-wal).
    #[arg(long, env = "KEYSTONE_WAL")]
    wal: Option<PathBuf>,
}

pub async fn run(settings: &Settings, args: ServeArgs) -> anyhow::Result<ExitCode> {
    if let Some(addr) = &args.flight {
        anyhow::bail!("--flight {addr}: the Flight SQL service is not built yet (issue #5)");
    }
    let lake = settings.lake()?;
    let wal_dir = args.wal.unwrap_or_else(|| PathBuf::from("keystone-wal"));
    let listener = tokio::net::TcpListener::bind(&args.http)
        .await
        .with_context(|| format!("cannot listen on {}", args.http))?;
    let quiet = settings.quiet;
    let wal_shown = wal_dir.display().to_string();
    let lake_shown = lake.root().to_string();
    let report = serve(
        ServeOptions {
            lake,
            config: settings.collector.clone(),
            wal_dir,
        },
        listener,
        shutdown_signal(),
        move |addr| {
            if !quiet {
                eprintln!(
                    "keystone collector listening on http://{addr} (WAL {wal_shown}, lake {lake_shown}); SIGTERM or Ctrl-C stops it"
                );
            }
        },
    )
    .await?;
    if !report.unflushed.is_empty() {
        eprintln!(
            "warning: {} WAL segment(s) could not reach the lake before stopping; they are kept and flushed at the next start",
            report.unflushed.len()
        );
    } else if !quiet {
        eprintln!(
            "stopped: {} events accepted, {} flushed to the lake",
            report.accepted, report.flushed
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
