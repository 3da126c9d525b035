use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use keystone_engine::Engine;
use keystone_engine::profiles::ComputedTrait;
use keystone_engine::resolve::{ResolveOptions, resolve};
use keystone_ingest::{IngestOptions, ingest_files};
use keystone_lake::Lake;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

struct KeystoneDb {
    engine: Engine,
}

#[derive(Debug)]
struct DbError(String);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for DbError {}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            DefaultColumnType::Integer
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            DefaultColumnType::Integer
        }
        DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => {
            DefaultColumnType::FloatingPoint
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, DbError> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| DbError(e.to_string()))?;
        for i in 0..b.num_rows() {
            out.push(
                formatters
                    .iter()
                    .map(|f| {
                        let s = f.value(i).to_string();
                        if s.is_empty() {
                            "(empty)".to_string()
                        } else {
                            s
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl AsyncDB for KeystoneDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let df = self
            .engine
            .sql(sql)
            .await
            .map_err(|e| DbError(e.to_string()))?;
        let schema = df.schema().as_arrow().clone();
        let batches = df.collect().await.map_err(|e| DbError(e.to_string()))?;
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows {
            types: schema
                .fields()
                .iter()
                .map(|f| column_type(f.data_type()))
                .collect(),
            rows: rows(&batches)?,
        })
    }

    async fn shutdown(&mut self) {}
}

async fn fixture_lake(dir: &Path) -> Lake {
    let lake = Lake::open(dir.join("lake").to_str().unwrap()).unwrap();
    let files: Vec<PathBuf> = ["shop.ndjson", "store.csv", "bad.ndjson"]
        .iter()
        .map(|f| repo_path("../../data/fixtures").join(f))
        .collect();
    let m = ingest_files(&lake, &files, &IngestOptions::default(), &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(m.events, 16, "fixtures changed? {m:?}");
    let opts = ResolveOptions {
        traits: vec![ComputedTrait {
            name: "favorite_category".into(),
            sql: "most_frequent(category)".into(),
        }],
        ..ResolveOptions::default()
    };
    resolve(&lake, &opts, &mut |_| {}).await.unwrap();
    lake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_behaviour_matches_slt_files() {
    let dir = tempfile::tempdir().unwrap();
    let lake = fixture_lake(dir.path()).await;
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_path("tests/slt"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for file in files {
        let lake = lake.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let lake = lake.clone();
            async move {
                let engine = Engine::open(lake)
                    .await
                    .map_err(|e| DbError(e.to_string()))?;
                Ok(KeystoneDb { engine })
            }
        });
        runner
            .run_file_async(&file)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
}
