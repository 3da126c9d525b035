//! What each role may run and read.
//!
//! | role | statements | tables |
//! |---|---|---|
//! | `admin` | queries | every table and view |
//! | `analyst` | queries | every table and view; personal columns masked without the `pii` grant |
//! | `activation` | queries | `segments.*`, `profiles`, `segment_membership`, `segment_changes`; masked without `pii` |
//! | `collector` | none (bulk ingest into `events` only) | — |
//!
//! Only read-only statements reach the planner: a query, `EXPLAIN` of one,
//! `SHOW TABLES`, `SHOW COLUMNS`. `COPY`, `CREATE EXTERNAL TABLE`, DDL, DML
//! and `SET` are refused, so SQL cannot read or write the server's files or
//! change the lake.

use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use keystone_engine::{CATALOG, PUBLIC, SEGMENTS};
use keystone_lake::Role;
use tonic::Status;

use crate::auth::Principal;

/// The schema of DataFusion's metadata views.
pub const INFORMATION_SCHEMA: &str = "information_schema";

/// Refuse everything but read-only statements.
pub fn check_statement(statement: &DfStatement) -> Result<(), Status> {
    let kind = match statement {
        DfStatement::Statement(s) => match s.as_ref() {
            Statement::Query(_) | Statement::ShowTables { .. } | Statement::ShowColumns { .. } => {
                return Ok(());
            }
            other => statement_kind(other),
        },
        DfStatement::Explain(explain) => return check_statement(&explain.statement),
        DfStatement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE".to_string(),
        DfStatement::CopyTo(_) => "COPY".to_string(),
        DfStatement::Reset(_) => "RESET".to_string(),
    };
    Err(Status::permission_denied(format!(
        "{kind} is not allowed: Keystone's SQL service runs read-only queries (SELECT, EXPLAIN, SHOW)"
    )))
}

fn statement_kind(s: &Statement) -> String {
    let text = s.to_string();
    let words: Vec<&str> = text.split_whitespace().take(2).collect();
    match words.as_slice() {
        [first, second, ..]
            if matches!(
                first.to_ascii_uppercase().as_str(),
                "CREATE" | "DROP" | "ALTER" | "SHOW"
            ) =>
        {
            format!(
                "{} {}",
                first.to_ascii_uppercase(),
                second.to_ascii_uppercase()
            )
        }
        [first, ..] => first.to_ascii_uppercase(),
        [] => "this statement".to_string(),
    }
}

/// May `principal` run queries at all?
pub fn check_can_query(principal: &Principal) -> Result<(), Status> {
    if principal.role == Role::Collector {
        return Err(Status::permission_denied(format!(
            "key {} has role collector: it can send events (collector, bulk ingest) but not run queries",
            principal.key_id
        )));
    }
    Ok(())
}

/// May `role` read `schema.table` of Keystone's catalog?
pub fn can_read(role: Role, schema: &str, table: &str) -> bool {
    match role {
        Role::Admin | Role::Analyst => true,
        // Not information_schema: it lists every table and column (and the
        // SQL of views), which GetTables hides from this role.
        Role::Activation => {
            schema == SEGMENTS
                || (schema == PUBLIC
                    && matches!(table, "profiles" | "segment_membership" | "segment_changes"))
        }
        Role::Collector => false,
    }
}

/// Refuse a table `principal` may not read, naming it.
pub fn check_table(principal: &Principal, schema: &str, table: &str) -> Result<(), Status> {
    if can_read(principal.role, schema, table) {
        return Ok(());
    }
    let allowed = match principal.role {
        Role::Activation => {
            "activation keys read segments.*, profiles, segment_membership and segment_changes"
        }
        _ => "this key reads no table",
    };
    Err(Status::permission_denied(format!(
        "permission denied for table {CATALOG}.{schema}.{table}: {allowed} (key {})",
        principal.key_id
    )))
}

/// May `role` bulk-ingest events?
pub fn check_can_ingest(principal: &Principal) -> Result<(), Status> {
    match principal.role {
        Role::Admin | Role::Collector => Ok(()),
        other => Err(Status::permission_denied(format!(
            "key {} has role {}: bulk ingest needs a collector or admin key",
            principal.key_id,
            other.as_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    fn parse(sql: &str) -> DfStatement {
        DFParser::parse_sql(sql)
            .expect("parses")
            .pop_front()
            .expect("one statement")
    }

    #[test]
    fn read_only_statements_pass() {
        for sql in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT * FROM events",
            "SHOW TABLES",
            "SHOW COLUMNS FROM events",
        ] {
            check_statement(&parse(sql)).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    #[test]
    fn writes_and_file_access_are_refused_by_name() {
        for (sql, named) in [
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
            (
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
                "CREATE EXTERNAL TABLE",
            ),
            ("CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
            ("DROP TABLE events", "DROP TABLE"),
            ("INSERT INTO events VALUES (1)", "INSERT"),
            ("DELETE FROM events", "DELETE"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("EXPLAIN COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
        ] {
            let err = check_statement(&parse(sql)).expect_err(sql);
            assert_eq!(err.code(), tonic::Code::PermissionDenied, "{sql}");
            assert!(err.message().starts_with(named), "{sql}: {}", err.message());
        }
    }

    #[test]
    fn activation_reads_segments_and_profiles_only() {
        assert!(can_read(Role::Activation, SEGMENTS, "vip"));
        assert!(can_read(Role::Activation, PUBLIC, "profiles"));
        assert!(can_read(Role::Activation, PUBLIC, "segment_changes"));
        assert!(!can_read(Role::Activation, PUBLIC, "events"));
        assert!(!can_read(Role::Activation, PUBLIC, "identities"));
        assert!(!can_read(Role::Activation, INFORMATION_SCHEMA, "columns"));
        assert!(can_read(Role::Analyst, INFORMATION_SCHEMA, "columns"));
        assert!(can_read(Role::Analyst, PUBLIC, "events"));
        assert!(!can_read(Role::Collector, PUBLIC, "profiles"));
    }
}
