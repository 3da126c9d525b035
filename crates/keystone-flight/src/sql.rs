//! SQL text and results between Flight clients and DataFusion.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use tonic::Status;

/// Number JDBC/ODBC-style `?` placeholders as `$1, $2, …` (DataFusion's
/// form). Question marks inside strings, quoted names and comments are left
/// alone; SQL that does not tokenize is returned as is (the parser then
/// reports the error with its position).
pub fn number_placeholders(sql: &str) -> String {
    if !sql.contains('?') {
        return sql.to_string();
    }
    let dialect = GenericDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return sql.to_string();
    };
    if !tokens
        .iter()
        .any(|t| matches!(t, Token::Placeholder(p) if p == "?"))
    {
        return sql.to_string();
    }
    let mut n = 0;
    let mut out = String::with_capacity(sql.len() + 8);
    for token in tokens {
        match token {
            Token::Placeholder(p) if p == "?" => {
                n += 1;
                out.push_str(&format!("${n}"));
            }
            other => out.push_str(&other.to_string()),
        }
    }
    out
}

/// The gRPC status of a failed query: syntax → INVALID_ARGUMENT (with the
/// position), unknown table → NOT_FOUND, limits → RESOURCE_EXHAUSTED.
pub fn status_of(error: &DataFusionError) -> Status {
    let root = error.find_root();
    let text = root.to_string();
    match root {
        DataFusionError::SQL(..) => Status::invalid_argument(format!("syntax error: {text}")),
        DataFusionError::ResourcesExhausted(m) if m.contains("one function call may produce") => {
            Status::resource_exhausted(m.clone())
        }
        DataFusionError::ResourcesExhausted(m) => Status::resource_exhausted(format!(
            "the query needs more memory than a query may use ([flight] query_memory_limit_bytes): {m}"
        )),
        DataFusionError::Plan(m) if m.contains("table") && m.contains("not found") => {
            Status::not_found(text)
        }
        DataFusionError::Plan(_)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => Status::invalid_argument(text),
        DataFusionError::Execution(_) | DataFusionError::ArrowError(..) => {
            Status::invalid_argument(text)
        }
        _ => Status::internal(text),
    }
}

/// [`status_of`] for an error parsing `sql`: the parser gives no position
/// when the statement ends too early ("found: EOF"), so the end of the
/// statement is named, as line and column like the parser's own.
pub fn syntax_status(sql: &str, error: &DataFusionError) -> Status {
    let status = status_of(error);
    let message = status.message();
    if status.code() != tonic::Code::InvalidArgument
        || !message.contains("found: EOF")
        || message.contains("Line:")
    {
        return status;
    }
    let end = sql.trim_end();
    let line = end.lines().count().max(1);
    let column = end.lines().last().map_or(0, |l| l.chars().count()) + 1;
    Status::invalid_argument(format!(
        "{message} at Line: {line}, Column: {column} (the end of the statement)"
    ))
}

/// The schema a client is told about: the plan's schema with dictionaries
/// replaced by their values (what the Flight encoder sends) and string/binary
/// views sent as plain strings/binary.
///
/// Views: many Flight SQL clients (JDBC/ODBC drivers on older Arrow
/// libraries) cannot read them, and the IPC writer sends every data buffer a
/// view array references with each slice the encoder cuts from a batch, so a
/// scan's views can multiply the bytes on the wire several times over.
pub fn flight_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema.fields().iter().map(|f| plain_field(f)).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn plain_field(field: &Field) -> Field {
    Field::new(
        field.name(),
        plain_type(field.data_type()),
        field.is_nullable(),
    )
    .with_metadata(field.metadata().clone())
}

fn plain_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Dictionary(_, value) => plain_type(value),
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(item) => DataType::List(Arc::new(plain_field(item))),
        DataType::LargeList(item) => DataType::LargeList(Arc::new(plain_field(item))),
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| plain_field(f)).collect())
        }
        other => other.clone(),
    }
}

/// `batch` with exactly the announced `schema` (same types, names and
/// nullability), so DoGet streams what GetFlightInfo said.
pub fn conform(schema: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch, Status> {
    if batch.schema().as_ref() == schema.as_ref() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| -> Result<ArrayRef, Status> {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                cast(c, f.data_type()).map_err(|e| {
                    Status::internal(format!(
                        "column {}: cannot send as {}: {e}",
                        f.name(),
                        f.data_type()
                    ))
                })
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Status::internal(format!("result does not match its announced schema: {e}")))
}

/// The spellings of the lake's location that `EXPLAIN` output may carry,
/// longest first: the URL (`file:///srv/lake/`), its path (`/srv/lake/`) and
/// the object-store path DataFusion prints for files (`srv/lake/`).
///
/// A lake at the root of a bucket (`s3://bucket/`) has the path `/`: only
/// its URL is cut then, never every `/` of the plan.
pub fn lake_prefixes(root: &url::Url) -> Vec<String> {
    let path = root.path().to_string();
    let relative = path.trim_start_matches('/').to_string();
    [root.as_str().to_string(), path, relative]
        .into_iter()
        .filter(|p| !p.trim_matches('/').is_empty())
        .collect()
}

/// `batch` with every occurrence of `prefixes` removed from its text
/// columns: `EXPLAIN` then names files relative to the lake
/// (`events/event_date=…/part-….parquet`) and tells a client nothing about
/// where the server keeps its data.
pub fn without_prefixes(batch: RecordBatch, prefixes: &[String]) -> Result<RecordBatch, Status> {
    let columns = batch
        .columns()
        .iter()
        .map(|column| -> Result<ArrayRef, Status> {
            if !matches!(
                column.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ) {
                return Ok(column.clone());
            }
            let text =
                cast(column, &DataType::Utf8).map_err(|e| Status::internal(e.to_string()))?;
            let stripped: StringArray = text
                .as_string::<i32>()
                .iter()
                .map(|v| {
                    v.map(|v| {
                        prefixes
                            .iter()
                            .fold(v.to_string(), |v, prefix| v.replace(prefix.as_str(), ""))
                    })
                })
                .collect();
            cast(&stripped, column.data_type()).map_err(|e| Status::internal(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(batch.schema(), columns).map_err(|e| Status::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_status(sql: &str) -> Status {
        let state = datafusion::prelude::SessionContext::new().state();
        let e = state
            .sql_to_statement(sql, &datafusion::config::Dialect::Generic)
            .expect_err(sql);
        syntax_status(sql, &e)
    }

    #[test]
    fn a_statement_that_ends_too_early_is_told_where_it_ends() {
        for (sql, at) in [
            ("SELECT * FROM", "Line: 1, Column: 14"),
            ("SELECT (1", "Line: 1, Column: 10"),
            ("SELECT *\nFROM events\nWHERE   ", "Line: 3, Column: 6"),
        ] {
            let status = parse_status(sql);
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{sql}");
            assert!(
                status.message().contains("found: EOF")
                    && status
                        .message()
                        .contains(&format!("at {at} (the end of the statement)")),
                "{sql}: {}",
                status.message()
            );
        }
        // The parser's own position is kept when it gives one.
        let status = parse_status("SELECT * FROM events LIMT 5");
        assert!(
            status.message().contains("Line: 1, Column:")
                && !status.message().contains("the end of the statement"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn question_marks_become_numbered_outside_strings() {
        assert_eq!(
            number_placeholders("SELECT * FROM t WHERE a = ? AND b > ?"),
            "SELECT * FROM t WHERE a = $1 AND b > $2"
        );
        assert_eq!(
            number_placeholders("SELECT '?' AS q, \"?\" FROM t WHERE a = ? -- why?"),
            "SELECT '?' AS q, \"?\" FROM t WHERE a = $1 -- why?"
        );
        assert_eq!(number_placeholders("SELECT 1"), "SELECT 1");
        assert_eq!(number_placeholders("SELECT $1"), "SELECT $1");
    }

    #[test]
    fn errors_map_to_grpc_codes() {
        let ctx = datafusion::prelude::SessionContext::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let code = |sql: &str| {
            let err = rt.block_on(ctx.sql(sql)).expect_err(sql);
            status_of(&err)
        };
        let syntax = code("SELEC 1");
        assert_eq!(syntax.code(), tonic::Code::InvalidArgument);
        assert!(syntax.message().contains("Line: 1"), "{}", syntax.message());
        assert_eq!(code("SELECT * FROM nowhere").code(), tonic::Code::NotFound);
        assert_eq!(
            code("SELECT nope FROM (SELECT 1 AS a)").code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn views_are_announced_as_plain_strings_and_cast_to_them() {
        let schema = Schema::new(vec![
            Field::new("s", DataType::Utf8View, true),
            Field::new("b", DataType::BinaryView, false),
            Field::new(
                "l",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8View, true))),
                true,
            ),
        ]);
        let announced = flight_schema(&schema);
        assert_eq!(announced.field(0).data_type(), &DataType::Utf8);
        assert_eq!(announced.field(1).data_type(), &DataType::Binary);
        assert_eq!(
            announced.field(2).data_type(),
            &DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        );
        let views = arrow::array::StringViewArray::from(vec![
            Some("a string longer than twelve bytes"),
            None,
        ]);
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![schema.field(0).clone()])),
            vec![Arc::new(views)],
        )
        .unwrap();
        let one = flight_schema(&batch.schema());
        let sent = conform(&one, batch).unwrap();
        assert_eq!(sent.schema(), one);
        use arrow::array::Array;
        let strings = sent
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        assert_eq!(strings.value(0), "a string longer than twelve bytes");
        assert!(strings.is_null(1));
    }

    #[test]
    fn dictionaries_are_announced_as_values() {
        let schema = Schema::new(vec![Field::new(
            "d",
            DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8)),
            true,
        )]);
        assert_eq!(flight_schema(&schema).field(0).data_type(), &DataType::Utf8);
    }

    #[test]
    fn lake_locations_are_cut_from_text_columns_only() {
        let root = url::Url::parse("s3://bucket/data/lake/").unwrap();
        let prefixes = lake_prefixes(&root);
        assert_eq!(
            prefixes,
            ["s3://bucket/data/lake/", "/data/lake/", "data/lake/"]
        );
        let schema = Arc::new(Schema::new(vec![
            Field::new("plan", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let plan: ArrayRef = Arc::new(arrow::array::StringViewArray::from(vec![
            Some("files=[data/lake/events/a.parquet, s3://bucket/data/lake/profiles/b.parquet]"),
            None,
        ]));
        let n: ArrayRef = Arc::new(arrow::array::Int64Array::from(vec![1, 2]));
        let batch = RecordBatch::try_new(schema.clone(), vec![plan, n.clone()]).unwrap();
        let out = without_prefixes(batch, &prefixes).unwrap();
        let bucket_root = url::Url::parse("s3://bucket/").unwrap();
        assert_eq!(lake_prefixes(&bucket_root), ["s3://bucket/"]);
        let local = url::Url::parse("file:///srv/lake/").unwrap();
        assert_eq!(
            lake_prefixes(&local),
            ["file:///srv/lake/", "/srv/lake/", "srv/lake/"]
        );
        assert_eq!(out.schema(), schema);
        let plan = out.column(0).as_string_view();
        assert_eq!(
            plan.value(0),
            "files=[events/a.parquet, profiles/b.parquet]"
        );
        assert!(arrow::array::Array::is_null(plan, 1));
        assert_eq!(out.column(1), &n);
    }
}
