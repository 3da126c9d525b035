//! `keystone sql`: one query, statements from standard input, or a REPL.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use clap::Args;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, WriteOp};
use datafusion::sql::parser::DFParser;
use keystone_engine::Engine;
use keystone_engine::output::{OutputFormat, write_stream};

use crate::config::Settings;

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// SQL to run (several statements separated by `;`). Without it: a REPL on a
    /// terminal, or the statements read from standard input.
    pub query: Option<String>,
    /// Output format: table (aligned), csv (header line, then rows) or json (one object per row).
    #[arg(long, default_value = "table")]
    pub format: OutputFormat,
}

pub async fn run(settings: &Settings, args: SqlArgs) -> anyhow::Result<ExitCode> {
    let engine = Engine::open(settings.existing_lake()?).await?;
    match args.query {
        Some(q) => run_statements(&engine, &q, args.format).await?,
        None if std::io::stdin().is_terminal() => repl(&engine, args.format).await?,
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            run_statements(&engine, &text, args.format).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Run each statement of `text` in order, printing results; stops at the first error.
pub async fn run_statements(
    engine: &Engine,
    text: &str,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let dialect = datafusion::sql::sqlparser::dialect::GenericDialect {};
    let statements = DFParser::parse_sql_with_dialect(text, &dialect)?;
    if statements.is_empty() {
        anyhow::bail!("no SQL statement given");
    }
    let mut stdout = std::io::stdout().lock();
    for statement in statements {
        let state = engine.context().state();
        let plan = state.statement_to_plan(statement).await?;
        if let Some(refusal) = writes_tables(&plan) {
            anyhow::bail!("{refusal}");
        }
        let df = engine.context().execute_logical_plan(plan).await?;
        let stream = df.execute_stream().await?;
        write_stream(stream, format, &mut stdout).await?;
    }
    Ok(())
}

/// Why `plan` is refused: statements that would change or define tables.
/// Keystone's tables change only through its commands, which keep them
/// consistent with each other (an event deleted by SQL would stay in
/// `identities` and `profiles`; `forget` erases it everywhere).
fn writes_tables(plan: &LogicalPlan) -> Option<String> {
    let what = match plan {
        LogicalPlan::Dml(dml) => {
            let op = match &dml.op {
                WriteOp::Insert(_) => "INSERT INTO",
                WriteOp::Delete => "DELETE FROM",
                WriteOp::Update => "UPDATE",
                WriteOp::Truncate => "TRUNCATE",
                WriteOp::Ctas => "CREATE TABLE",
                WriteOp::MergeInto(_) => "MERGE INTO",
                other => other.name(),
            };
            format!("{op} {}", dml.table_name)
        }
        LogicalPlan::Ddl(ddl) => match ddl {
            DdlStatement::DropTable(d) => format!("DROP TABLE {}", d.name),
            DdlStatement::DropView(d) => format!("DROP VIEW {}", d.name),
            DdlStatement::CreateMemoryTable(c) => format!("CREATE TABLE {}", c.name),
            DdlStatement::CreateView(c) => format!("CREATE VIEW {}", c.name),
            DdlStatement::CreateExternalTable(c) => format!("CREATE EXTERNAL TABLE {}", c.name),
            other => other.name().to_string(),
        },
        _ => return None,
    };
    Some(format!(
        "{what} is not allowed: Keystone's tables are read-only in SQL and change through its \
         commands — `keystone ingest` (or the collector) adds events, `keystone forget` erases a \
         person, `keystone resolve` rebuilds identities and profiles, `keystone segment \
         create`/`drop` define segments"
    ))
}

const LIST_TABLES: &str = "SELECT table_schema, table_name, table_type FROM information_schema.tables \
     WHERE table_schema <> 'information_schema' ORDER BY table_schema, table_name";

async fn repl(engine: &Engine, format: OutputFormat) -> anyhow::Result<()> {
    let mut rl = rustyline::DefaultEditor::new()?;
    let history =
        std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".keystone_history"));
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    outln!(
        "Keystone SQL on {} — end statements with ';', \\d lists tables, \\q quits.",
        engine.lake().root()
    );
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "keystone> "
        } else {
            "      ... "
        };
        let line = match rl.readline(prompt) {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if buffer.is_empty() {
            match trimmed {
                "" => continue,
                "\\q" | "quit" | "exit" => break,
                "\\d" => {
                    let _ = rl.add_history_entry(trimmed);
                    report(run_statements(engine, LIST_TABLES, format).await);
                    continue;
                }
                _ => {}
            }
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if trimmed.ends_with(';') {
            let _ = rl.add_history_entry(buffer.trim());
            let started = std::time::Instant::now();
            report(run_statements(engine, &buffer, format).await);
            eprintln!("({:.3}s)", started.elapsed().as_secs_f64());
            buffer.clear();
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    Ok(())
}

fn report(result: anyhow::Result<()>) {
    if let Err(e) = result {
        eprintln!("error: {e}");
    }
    let _ = std::io::stdout().flush();
}
