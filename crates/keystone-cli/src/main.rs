//! `keystone`: the command line of the Keystone customer data platform.
//!
//! One file per command under `commands/`; this file parses the arguments,
//! resolves the lake and the config, and turns any error into one line on
//! standard error and a non-zero exit code.

/// `println!` to standard output, ending the process quietly when the reader
/// went away (`keystone tables | head -1`), as Unix tools do, instead of
/// panicking on the closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdout_line(format_args!($($arg)*))
    };
}

mod commands;
mod config;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;

/// mimalloc: DataFusion allocates and frees many short-lived buffers, and
/// glibc's allocator returns large ones to the system only to fault fresh
/// zeroed pages in again (see benches/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keystone: an open customer data platform on a Delta Lake.
#[derive(Debug, Parser)]
#[command(name = "keystone", version, about, long_about = None)]
pub struct Cli {
    /// Lake root: a folder (default ./keystone-lake), file:// or s3://bucket/prefix.
    #[arg(long, global = true, env = "KEYSTONE_LAKE")]
    lake: Option<String>,

    /// Config file (keystone.toml). Default: ./keystone.toml if it exists.
    #[arg(long, global = true, env = "KEYSTONE_CONFIG")]
    config: Option<PathBuf>,

    /// No progress bars and no summaries beyond the essential.
    #[arg(long, short, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate sample data, ingest it, and print a summary with queries to try.
    Demo(commands::demo::DemoArgs),
    /// Load NDJSON (Segment spec), CSV (with a mapping) or Parquet files into `events`.
    Ingest(commands::ingest::IngestArgs),
    /// Stitch identifiers into profiles (incremental), then rebuild `profiles`.
    Resolve(commands::resolve::ResolveArgs),
    /// Run the Segment-compatible HTTP collector and the Arrow Flight SQL service.
    Serve(commands::serve::ServeArgs),
    /// Define, list and drop segments (audiences as SQL; views segments.NAME).
    Segment(commands::segment::SegmentArgs),
    /// Erase people from the lake, physically, and drop their future events.
    Forget(commands::forget::ForgetArgs),
    /// Everything about a person as JSON (right of access).
    ExportSubject(commands::subject::ExportSubjectArgs),
    /// Apply retention, compact small files, checkpoint and vacuum every table.
    Maintain(commands::maintain::MaintainArgs),
    /// Create, list and revoke API keys (write keys for the collector, query keys).
    Keys(commands::keys::KeysArgs),
    /// Look at one profile: `keystone profile show email:jane@example.org [--explain]`.
    Profile(commands::profile::ProfileArgs),
    /// Run SQL over the lake: one query, statements from stdin, or a REPL.
    Sql(commands::sql::SqlArgs),
    /// Generate a realistic synthetic workload with ground truth.
    Gen(commands::gen_cmd::GenArgs),
    /// List the lake's tables with their versions and file counts.
    Tables(commands::tables::TablesArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&causes(&e)));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = Settings::resolve(cli.lake.as_deref(), cli.config.as_deref(), cli.quiet)?;
    match cli.command {
        Command::Demo(args) => commands::demo::run(&settings, args).await,
        Command::Ingest(args) => commands::ingest::run(&settings, args).await,
        Command::Resolve(args) => commands::resolve::run(&settings, args).await,
        Command::Serve(args) => commands::serve::run(&settings, args).await,
        Command::Keys(args) => commands::keys::run(&settings, args).await,
        Command::Forget(args) => commands::forget::run(&settings, args).await,
        Command::Maintain(args) => commands::maintain::run(&settings, args).await,
        Command::ExportSubject(args) => commands::subject::run(&settings, args).await,
        Command::Segment(args) => commands::segment::run(&settings, args).await,
        Command::Profile(args) => commands::profile::run(&settings, args).await,
        Command::Sql(args) => commands::sql::run(&settings, args).await,
        Command::Gen(args) => commands::gen_cmd::run(&settings, args),
        Command::Tables(args) => commands::tables::run(&settings, args).await,
    }
}

/// One line to standard output (see `outln!`): a closed pipe ends the
/// process with status 0; any other failure to write is reported and ends
/// it with status 1.
pub(crate) fn stdout_line(line: std::fmt::Arguments) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text
/// the message already holds (many errors repeat their source's text).
fn causes(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(text.trim()) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Errors are printed on one line: nested causes joined by `: `.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
