//! `keystone serve`: the Segment-compatible HTTP collector and the Arrow
//! Flight SQL service, side by side on one lake.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use keystone_collect::{ServeOptions, serve};
use keystone_engine::Engine;
use keystone_flight::KeystoneFlight;
use tokio::sync::watch;

use crate::config::Settings;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the HTTP collector.
    #[arg(long, default_value = "127.0.0.1:8088")]
    http: String,
    /// Address of the Arrow Flight SQL service.
    #[arg(long, default_value = "127.0.0.1:50051")]
    flight: String,
    /// Run the collector alone, without Flight SQL.
    #[arg(long)]
    no_flight: bool,
    /// Write-ahead log folder on local disk (default ./keystone-wal).
    #[arg(long, env = "KEYSTONE_WAL")]
    wal: Option<PathBuf>,
}

pub async fn run(settings: &Settings, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let lake = settings.lake()?;
    let wal_dir = args.wal.unwrap_or_else(|| PathBuf::from("keystone-wal"));
    let quiet = settings.quiet;
    let (stop_tx, stop_rx) = watch::channel(false);
    let on_signal = stop_tx.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = on_signal.send(true);
    });

    // Flight SQL first: `/health` answers 200 only once both listen.
    let mut flight_task = None;
    let mut flight_shown = String::from("off (--no-flight)");
    if !args.no_flight {
        settings
            .flight
            .validate()
            .map_err(|e| anyhow::anyhow!("config: {e}"))?;
        let listener = tokio::net::TcpListener::bind(&args.flight)
            .await
            .with_context(|| format!("cannot listen on {} (Flight SQL)", args.flight))?;
        let scheme = if settings.flight.tls_cert.is_some() {
            "grpc+tls"
        } else {
            "grpc"
        };
        flight_shown = format!("on {scheme}://{}", listener.local_addr()?);
        let engine = Arc::new(Engine::open(lake.clone()).await?);
        let service = KeystoneFlight::new(engine, settings.flight.clone()).await?;
        let config = settings.flight.clone();
        // Certificate problems are reported now, not after start-up.
        keystone_flight::server(&config)?;
        let mut rx = stop_rx.clone();
        let stop_all = stop_tx.clone();
        flight_task = Some(tokio::spawn(async move {
            let result = keystone_flight::serve(service, &config, listener, async move {
                let _ = rx.wait_for(|stop| *stop).await;
            })
            .await;
            if result.is_err() {
                // The collector stops too: a half-up server is worse than none.
                let _ = stop_all.send(true);
            }
            result
        }));
    }

    // Scheduled maintenance: retention, compaction, checkpoints, vacuum.
    if settings.maintain.interval_minutes > 0 {
        let every = std::time::Duration::from_secs(settings.maintain.interval_minutes * 60);
        let (lake, retention, config) = (
            lake.clone(),
            settings.retention.clone(),
            settings.maintain.clone(),
        );
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = rx.wait_for(|stop| *stop) => break,
                }
                let today = chrono::Utc::now().date_naive();
                let result = match Engine::open(lake.clone()).await {
                    Ok(engine) => engine
                        .maintain(&retention, &config, today, |_| {})
                        .await
                        .map(|r| r.seconds),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(secs) if !quiet => eprintln!("maintenance done in {secs:.1} s"),
                    Ok(_) => {}
                    Err(e) => eprintln!("maintenance failed (retried at the next interval): {e}"),
                }
            }
        });
    }

    let listener = tokio::net::TcpListener::bind(&args.http)
        .await
        .with_context(|| format!("cannot listen on {}", args.http))?;
    let wal_shown = wal_dir.display().to_string();
    let lake_shown = lake.root().to_string();
    let mut rx = stop_rx.clone();
    let report = serve(
        ServeOptions {
            lake,
            config: settings.collector.clone(),
            wal_dir,
        },
        listener,
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        },
        move |addr| {
            if !quiet {
                eprintln!(
                    "keystone collector on http://{addr} (WAL {wal_shown}), Flight SQL {flight_shown}, lake {lake_shown}; SIGTERM or Ctrl-C stops it"
                );
            }
        },
    )
    .await?;
    if let Some(task) = flight_task {
        task.await.context("Flight SQL service")??;
    }
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
