use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arrow::array::{Array, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow_flight::error::FlightError;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    CommandGetDbSchemas, CommandGetTables, CommandStatementIngest, SqlInfo, TableDefinitionOptions,
    TableExistsOption, TableNotExistOption,
};
use arrow_flight::{Action, FlightInfo};
use futures::TryStreamExt;
use keystone_engine::Engine;
use keystone_flight::{FlightConfig, KeystoneFlight};
use keystone_ingest::{IngestOptions, ingest_files};
use keystone_lake::{Lake, Role};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tonic::Code;
use tonic::transport::Channel;

type Client = FlightSqlServiceClient<Channel>;

struct Keys {
    admin: String,
    analyst: String,
    analyst_pii: String,
    activation: String,
    collector: String,
}

struct Server {
    addr: SocketAddr,
    keys: Keys,
    lake: Lake,
    active: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

const EVENTS: &str = r#"{"type":"identify","messageId":"m1","userId":"u1","timestamp":"2026-11-01T10:00:00Z","traits":{"email":"Jane@Example.org","phone":"+33612345678","name":"Jane"}}
{"type":"track","messageId":"m2","userId":"u1","event":"Order Completed","timestamp":"2026-11-02T10:00:00Z","properties":{"revenue":120.5,"order_id":"o1"}}
{"type":"track","messageId":"m3","anonymousId":"a9","event":"Product Viewed","timestamp":"2026-11-03T10:00:00Z","properties":{"category":"shoes"}}
{"type":"identify","messageId":"m4","userId":"u2","timestamp":"2026-11-04T10:00:00Z","traits":{"email":"bob@example.org"}}
{"type":"page","messageId":"m5","anonymousId":"a9","name":"Home","timestamp":"2026-11-05T10:00:00Z"}
"#;

impl Server {
    async fn start(config: FlightConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = Lake::open(dir.path().join("lake").to_str().expect("utf8")).expect("lake");
        let file = dir.path().join("events.ndjson");
        std::fs::write(&file, EVENTS).expect("write events");
        ingest_files(&lake, &[file], &IngestOptions::default(), &mut |_, _| {})
            .await
            .expect("ingest");
        let key = |role, name: &'static str, grants: Vec<String>| {
            let lake = lake.clone();
            async move {
                lake.create_key(role, Some(name), &grants)
                    .await
                    .expect("create key")
                    .0
            }
        };
        let keys = Keys {
            admin: key(Role::Admin, "admin", vec![]).await,
            analyst: key(Role::Analyst, "analyst", vec![]).await,
            analyst_pii: key(Role::Analyst, "analyst-pii", vec!["pii".into()]).await,
            activation: key(Role::Activation, "emailer", vec![]).await,
            collector: key(Role::Collector, "store-pos", vec![]).await,
        };
        let engine = Arc::new(Engine::open(lake.clone()).await.expect("engine"));
        let service = KeystoneFlight::new(engine, config.clone())
            .await
            .expect("service");
        let active = service.active_counter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            keystone_flight::serve(service, &config, listener, async move {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
        Self {
            addr,
            keys,
            lake,
            active,
            _stop: stop,
            _dir: dir,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    /// Ingest `ndjson` as the file `name`, the way `keystone ingest` does.
    async fn ingest(&self, name: &str, ndjson: &str) {
        let file = self._dir.path().join(name);
        std::fs::write(&file, ndjson).expect("write events");
        ingest_files(
            &self.lake,
            &[file],
            &IngestOptions::default(),
            &mut |_, _| {},
        )
        .await
        .expect("ingest");
    }

    async fn client(&self, key: &str) -> Client {
        let mut client = FlightSqlServiceClient::new(self.channel().await);
        client.set_header("authorization", format!("Bearer {key}"));
        client
    }
}

fn code(e: FlightError) -> (Code, String) {
    match e {
        FlightError::Tonic(status) => (status.code(), status.message().to_string()),
        other => panic!("expected a gRPC status, got {other}"),
    }
}

async fn fetch(client: &mut Client, info: &FlightInfo) -> Vec<RecordBatch> {
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    client
        .do_get(ticket)
        .await
        .expect("do_get")
        .try_collect()
        .await
        .expect("batches")
}

async fn query(client: &mut Client, sql: &str) -> (Schema, Vec<RecordBatch>) {
    let info = client.execute(sql.to_string(), None).await.expect(sql);
    let schema = info.clone().try_decode_schema().expect("schema");
    (schema, fetch(client, &info).await)
}

fn strings(batches: &[RecordBatch], column: &str) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let col =
                arrow::compute::cast(b.column_by_name(column).expect(column), &DataType::Utf8)
                    .expect("cast");
            let col = col.as_string::<i32>().clone();
            (0..col.len())
                .map(|i| col.is_valid(i).then(|| col.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_key_are_unauthenticated() {
    let server = Server::start(FlightConfig::default()).await;
    let mut anonymous = FlightSqlServiceClient::new(server.channel().await);
    let (c, m) = code(
        anonymous
            .execute("SELECT 1".into(), None)
            .await
            .expect_err("no key"),
    );
    assert_eq!(c, Code::Unauthenticated);
    assert!(m.contains("Bearer"), "{m}");
    let mut wrong = server.client("ks_0000").await;
    let (c, _) = code(
        wrong
            .execute("SELECT 1".into(), None)
            .await
            .expect_err("bad key"),
    );
    assert_eq!(c, Code::Unauthenticated);
    let (c, _) = code(
        anonymous
            .get_sql_info(vec![SqlInfo::FlightSqlServerName])
            .await
            .expect_err("metadata needs a key too"),
    );
    assert_eq!(c, Code::Unauthenticated);

    // A revoked key stops working once the key file is re-read (≤ 2 s).
    let mut analyst = server.client(&server.keys.analyst).await;
    analyst
        .execute("SELECT 1".into(), None)
        .await
        .expect("live key");
    let id = &server.keys.analyst[..11];
    assert!(server.lake.revoke_key(id).await.expect("revoke"));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (c, _) = code(
        analyst
            .execute("SELECT 1".into(), None)
            .await
            .expect_err("revoked"),
    );
    assert_eq!(c, Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_handshake_returns_a_bearer_token_in_the_response_header() {
    let server = Server::start(FlightConfig::default()).await;
    let mut client = FlightSqlServiceClient::new(server.channel().await);
    let payload = client
        .handshake("bi-tool", &server.keys.analyst)
        .await
        .expect("handshake");
    let token = client.token().expect("token from the header").clone();
    assert!(token.starts_with("kst_"), "{token}");
    assert_eq!(payload.as_ref(), token.as_bytes());
    let (_, batches) = query(&mut client, "SELECT count(*) AS n FROM events").await;
    assert_eq!(
        batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0),
        5
    );
    let mut bad = FlightSqlServiceClient::new(server.channel().await);
    assert!(bad.handshake("bi-tool", "ks_nope").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_stream_with_exactly_the_announced_schema() {
    let server = Server::start(FlightConfig::default()).await;
    let mut client = server.client(&server.keys.admin).await;
    for sql in [
        "SELECT * FROM events ORDER BY message_id",
        "SELECT type, count(*) AS n, sum(revenue) AS revenue FROM events GROUP BY type",
        "SELECT e.message_id, e.event_date FROM events e WHERE e.type = 'track'",
        "SELECT * FROM events WHERE false",
    ] {
        let (schema, batches) = query(&mut client, sql).await;
        for b in &batches {
            assert_eq!(b.schema().as_ref(), &schema, "{sql}");
        }
    }
    let (_, batches) = query(
        &mut client,
        "SELECT message_id FROM events ORDER BY message_id",
    )
    .await;
    let ids: Vec<_> = strings(&batches, "message_id")
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(ids, ["m1", "m2", "m3", "m4", "m5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_bind_question_mark_parameters() {
    let server = Server::start(FlightConfig::default()).await;
    let mut client = server.client(&server.keys.admin).await;
    let mut stmt = client
        .prepare(
            "SELECT message_id FROM events WHERE type = ? AND timestamp >= ? ORDER BY message_id"
                .into(),
            None,
        )
        .await
        .expect("prepare");
    let params = stmt.parameter_schema().expect("parameter schema").clone();
    assert_eq!(params.fields().len(), 2, "{params:?}");
    assert_eq!(
        stmt.dataset_schema().expect("dataset").field(0).name(),
        "message_id"
    );
    let bind = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("$1", DataType::Utf8, true),
            Field::new("$2", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["track"])),
            Arc::new(StringArray::from(vec!["2026-11-03T00:00:00Z"])),
        ],
    )
    .expect("params");
    stmt.set_parameters(bind).expect("bind");
    let info = stmt.execute().await.expect("execute");
    let batches = fetch(&mut client, &info).await;
    let ids: Vec<_> = strings(&batches, "message_id")
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(ids, ["m3"]);
    stmt.close().await.expect("close");

    // Two rows of parameters for a query is an error, not a silent pick.
    let mut stmt = client
        .prepare("SELECT ? AS x".into(), None)
        .await
        .expect("prepare");
    let two = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![1, 2]))],
    )
    .expect("batch");
    stmt.set_parameters(two).expect("bind");
    let (c, m) = code(stmt.execute().await.expect_err("two rows"));
    assert_eq!(c, Code::InvalidArgument);
    assert!(m.contains("one row"), "{m}");
}

/// A prepared statement re-planned or re-used across its calls (the plan of
/// one call serves the next) always runs with its latest parameters and, once
/// executed again, sees the data committed since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_run_with_their_latest_parameters_and_data() {
    let server = Server::start(FlightConfig::default()).await;
    let mut client = server.client(&server.keys.admin).await;
    let mut stmt = client
        .prepare(
            "SELECT message_id FROM events WHERE type = ? ORDER BY message_id".into(),
            None,
        )
        .await
        .expect("prepare");
    let of_type = |t: &str| {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("$1", DataType::Utf8, true)])),
            vec![Arc::new(StringArray::from(vec![t.to_string()]))],
        )
        .expect("params")
    };
    let ids = |batches: &[RecordBatch]| -> Vec<String> {
        strings(batches, "message_id")
            .into_iter()
            .flatten()
            .collect()
    };
    stmt.set_parameters(of_type("track")).expect("bind");
    let tracks = stmt.execute().await.expect("execute");
    assert_eq!(ids(&fetch(&mut client, &tracks).await), ["m2", "m3"]);
    // The same ticket fetched again runs again, with the same parameters.
    assert_eq!(ids(&fetch(&mut client, &tracks).await), ["m2", "m3"]);

    // New parameters after a GetFlightInfo: the plan bound to the old ones
    // is dropped, whichever FlightInfo's ticket is fetched.
    stmt.set_parameters(of_type("track")).expect("bind");
    let stale = stmt.execute().await.expect("execute");
    stmt.set_parameters(of_type("identify")).expect("bind");
    let identifies = stmt.execute().await.expect("execute");
    assert_eq!(ids(&fetch(&mut client, &stale).await), ["m1", "m4"]);
    assert_eq!(ids(&fetch(&mut client, &identifies).await), ["m1", "m4"]);

    // Events committed after the statement was prepared and first run.
    server
        .ingest(
            "more.ndjson",
            r#"{"type":"track","messageId":"m6","anonymousId":"a9","event":"Product Added","timestamp":"2026-11-06T10:00:00Z"}"#,
        )
        .await;
    stmt.set_parameters(of_type("track")).expect("bind");
    let info = stmt.execute().await.expect("execute");
    assert_eq!(ids(&fetch(&mut client, &info).await), ["m2", "m3", "m6"]);

    // A statement prepared ahead of its data, then executed once its
    // creation plan has expired, sees the data of its execution.
    let mut count = client
        .prepare("SELECT count(*) AS n FROM events".into(), None)
        .await
        .expect("prepare");
    server
        .ingest(
            "later.ndjson",
            r#"{"type":"page","messageId":"m7","anonymousId":"a9","timestamp":"2026-11-07T10:00:00Z"}"#,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let info = count.execute().await.expect("execute");
    let batches = fetch(&mut client, &info).await;
    let n = batches[0]
        .column_by_name("n")
        .expect("n")
        .as_primitive::<arrow::datatypes::Int64Type>()
        .value(0);
    assert_eq!(n, 7);
    stmt.close().await.expect("close");
    count.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_grpc_codes_and_name_the_problem() {
    let server = Server::start(FlightConfig::default()).await;
    let mut admin = server.client(&server.keys.admin).await;
    let cases = [
        ("SELEC * FROM events", Code::InvalidArgument, "Line: 1"),
        ("SELECT * FROM nowhere", Code::NotFound, "nowhere"),
        ("SELECT nope FROM events", Code::InvalidArgument, "nope"),
        (
            "COPY (SELECT 1) TO '/tmp/keystone-x.csv'",
            Code::PermissionDenied,
            "COPY",
        ),
        (
            "CREATE EXTERNAL TABLE pw STORED AS CSV LOCATION '/etc/passwd'",
            Code::PermissionDenied,
            "CREATE EXTERNAL TABLE",
        ),
        ("DROP TABLE events", Code::PermissionDenied, "DROP"),
        (
            "INSERT INTO events (message_id) VALUES ('x')",
            Code::PermissionDenied,
            "INSERT",
        ),
        (
            "SELECT * FROM other.public.t",
            Code::NotFound,
            "catalog other",
        ),
    ];
    for (sql, want, needle) in cases {
        let (c, m) = code(admin.execute(sql.into(), None).await.expect_err(sql));
        assert_eq!(c, want, "{sql}: {m}");
        assert!(m.contains(needle), "{sql}: {m}");
    }
    assert!(!Path::new("/tmp/keystone-x.csv").exists());

    let mut activation = server.client(&server.keys.activation).await;
    let (c, m) = code(
        activation
            .execute(
                "SELECT p.* FROM profiles p JOIN events e ON true".into(),
                None,
            )
            .await
            .expect_err("events"),
    );
    assert_eq!(c, Code::PermissionDenied, "{m}");
    assert!(m.contains("keystone.public.events"), "{m}");
    let mut collector = server.client(&server.keys.collector).await;
    let (c, m) = code(
        collector
            .execute("SELECT 1".into(), None)
            .await
            .expect_err("collector"),
    );
    assert_eq!(c, Code::PermissionDenied);
    assert!(m.contains("collector"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_is_masked_without_the_pii_grant() {
    let server = Server::start(FlightConfig::default()).await;
    let sql = "SELECT user_id, email, phone, traits, context FROM events WHERE type = 'identify' ORDER BY user_id";
    let mut analyst = server.client(&server.keys.analyst).await;
    let (schema, masked) = query(&mut analyst, sql).await;
    let mut pii = server.client(&server.keys.analyst_pii).await;
    let (clear_schema, clear) = query(&mut pii, sql).await;
    assert_eq!(schema, clear_schema, "masking keeps names and types");
    let clear_emails = strings(&clear, "email");
    assert_eq!(clear_emails[0].as_deref(), Some("jane@example.org"));
    let masked_emails = strings(&masked, "email");
    assert_eq!(masked_emails[0], Some(sha256_hex("jane@example.org")));
    assert_eq!(
        strings(&masked, "phone")[0],
        Some(sha256_hex("+33612345678"))
    );
    assert!(strings(&masked, "traits").iter().all(Option::is_none));
    assert!(strings(&masked, "context").iter().all(Option::is_none));
    assert!(
        strings(&clear, "traits")[0]
            .as_deref()
            .is_some_and(|t| t.contains("Jane"))
    );
    assert_eq!(strings(&masked, "user_id"), strings(&clear, "user_id"));

    // A filter on the clear value finds nothing: it never reaches the query.
    let (_, found) = query(
        &mut analyst,
        "SELECT count(*) AS n FROM events WHERE email = 'jane@example.org' OR traits LIKE '%Jane%'",
    )
    .await;
    assert_eq!(
        found[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0),
        0
    );
    let mut admin = server.client(&server.keys.admin).await;
    let (_, admin_rows) = query(&mut admin, sql).await;
    assert_eq!(strings(&admin_rows, "email"), clear_emails);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_lists_the_catalog_by_role() {
    let server = Server::start(FlightConfig::default()).await;
    let mut admin = server.client(&server.keys.admin).await;
    let info = admin.get_catalogs().await.expect("catalogs");
    let catalogs = fetch(&mut admin, &info).await;
    assert_eq!(
        strings(&catalogs, "catalog_name"),
        [Some("keystone".to_string())]
    );

    let info = admin
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("keystone".into()),
            db_schema_filter_pattern: None,
        })
        .await
        .expect("schemas");
    let schemas: Vec<_> = strings(&fetch(&mut admin, &info).await, "db_schema_name")
        .into_iter()
        .flatten()
        .collect();
    assert!(schemas.contains(&"public".to_string()) && schemas.contains(&"segments".to_string()));

    let cmd = CommandGetTables {
        catalog: Some("keystone".into()),
        db_schema_filter_pattern: Some("public".into()),
        table_name_filter_pattern: Some("event%".into()),
        table_types: vec![],
        include_schema: true,
    };
    let info = admin.get_tables(cmd.clone()).await.expect("tables");
    let listed = fetch(&mut admin, &info).await;
    let names: Vec<_> = strings(&listed, "table_name")
        .into_iter()
        .flatten()
        .collect();
    // No `keystone resolve` ran on this lake: no identities, no events_resolved.
    assert_eq!(names, ["events"]);
    // The schema GetTables gives equals the schema of a query on the table.
    let ipc = listed[0]
        .column_by_name("table_schema")
        .expect("table_schema")
        .as_binary::<i32>()
        .value(0)
        .to_vec();
    let listed_schema = arrow::ipc::convert::try_schema_from_ipc_buffer(&ipc).expect("ipc schema");
    let (queried, _) = query(&mut admin, "SELECT * FROM events WHERE false").await;
    assert_eq!(listed_schema, queried);

    let mut activation = server.client(&server.keys.activation).await;
    let info = activation.get_tables(cmd).await.expect("tables");
    let seen = fetch(&mut activation, &info).await;
    assert!(
        strings(&seen, "table_name").is_empty(),
        "activation keys do not see events"
    );
    let info = admin.get_table_types().await.expect("types");
    let types: Vec<_> = strings(&fetch(&mut admin, &info).await, "table_type")
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(types, ["TABLE", "VIEW"]);
    let info = admin
        .get_sql_info(vec![
            SqlInfo::FlightSqlServerName,
            SqlInfo::FlightSqlServerSql,
        ])
        .await
        .expect("sql info");
    let rows: usize = fetch(&mut admin, &info)
        .await
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 2);
    let info = admin
        .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None })
        .await
        .expect("xdbc");
    let names: Vec<_> = strings(&fetch(&mut admin, &info).await, "type_name")
        .into_iter()
        .flatten()
        .collect();
    assert!(names.contains(&"VARCHAR".to_string()) && names.contains(&"TIMESTAMP".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_its_memory_limit_or_time_is_resource_exhausted() {
    // Memory: the build side of a hash join cannot spill, so 3 M rows of it
    // (≈ 24 MB) fail at once under a 1 MiB limit. The deadline is far, so
    // however slow the machine the failure is the memory one.
    let config = FlightConfig {
        query_memory_limit_bytes: 1 << 20,
        query_timeout_secs: 120,
        ..FlightConfig::default()
    };
    let server = Server::start(config).await;
    let mut client = server.client(&server.keys.analyst).await;
    let (c, m) = failure(
        &mut client,
        "SELECT count(*) FROM generate_series(1, 3000000) a(v) JOIN generate_series(1, 3000000) b(w) ON v = w",
    )
    .await;
    assert_eq!(c, Code::ResourceExhausted, "{m}");
    assert!(m.contains("query_memory_limit_bytes"), "{m}");
    wait_idle(&server.active).await;

    // A function whose result the memory limit does not count: refused
    // before it allocates 1.5 GB (at planning, where the constant folds, or
    // while streaming).
    let (c, m) = failure(&mut client, "SELECT length(repeat('x', 1500000000)) AS n").await;
    assert_eq!(c, Code::ResourceExhausted, "{m}");
    assert!(m.contains("repeat() would produce 1430 MiB"), "{m}");
    wait_idle(&server.active).await;

    // Time: a count over 10^11 generated rows needs no memory and never ends.
    let config = FlightConfig {
        query_timeout_secs: 2,
        ..FlightConfig::default()
    };
    let server = Server::start(config).await;
    let mut client = server.client(&server.keys.analyst).await;
    let (c, m) = failure(
        &mut client,
        "SELECT count(*) FROM generate_series(1, 100000000000) t(v) WHERE v % 7 = 3",
    )
    .await;
    assert_eq!(c, Code::ResourceExhausted, "{m}");
    assert!(m.contains("query_timeout_secs"), "{m}");
    wait_idle(&server.active).await;
}

/// The status a query fails with, when planning it or streaming it.
async fn failure(client: &mut Client, sql: &str) -> (Code, String) {
    let info = match client.execute(sql.into(), None).await {
        Err(e) => return code(e),
        Ok(info) => info,
    };
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    code(match client.do_get(ticket).await {
        Err(e) => e,
        Ok(stream) => stream.try_collect::<Vec<_>>().await.expect_err(sql),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sorts_in_several_partitions_share_the_memory_limit_and_spill() {
    // Sessions with a 30-minute gap over 1 M rows: 100 000 people with 10
    // events each, a minute apart, and two hours between the 5th and the 6th,
    // so two sessions per person. The window sorts each hash partition of the
    // rows, together more than the 160 MB limit. With a greedy pool the
    // first partitions' sorts held the whole limit and the last one's merge
    // failed; with the fair pool each sort spills beyond its share.
    let config = FlightConfig {
        query_memory_limit_bytes: 160_000_000,
        query_timeout_secs: 300,
        ..FlightConfig::default()
    };
    let server = Server::start(config).await;
    let mut client = server.client(&server.keys.analyst).await;
    let sql = "SELECT count(*) AS sessions, count(DISTINCT k) AS people FROM (\
        SELECT k, ts, lag(ts) OVER (PARTITION BY k ORDER BY ts) AS prev FROM (\
        SELECT concat('person-', CAST(v % 100000 AS VARCHAR), '-padded-to-look-like-a-cookie') AS k, \
        (v / 100000) * 60 + (v / 500000) * 7200 AS ts FROM generate_series(0, 999999) t(v))) s \
        WHERE prev IS NULL OR ts > prev + 1800";
    let info = client.execute(sql.into(), None).await.expect("plans");
    let batches = fetch(&mut client, &info).await;
    let row = batches.iter().find(|b| b.num_rows() > 0).expect("one row");
    let counts = |name: &str| -> i64 {
        let column = row.column_by_name(name).expect(name);
        let column = column.as_any().downcast_ref::<Int64Array>().expect("count");
        column.value(0)
    };
    assert_eq!((counts("sessions"), counts("people")), (200_000, 100_000));
    wait_idle(&server.active).await;
}

async fn wait_idle(active: &AtomicUsize) {
    for _ in 0..200 {
        if active.load(Ordering::SeqCst) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} queries still running", active.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_its_query() {
    let server = Server::start(FlightConfig::default()).await;
    let mut client = server.client(&server.keys.analyst).await;
    let info = client
        .execute(
            "SELECT v FROM generate_series(1, 100000000000) t(v)".into(),
            None,
        )
        .await
        .expect("plans");
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let mut stream = client.do_get(ticket).await.expect("do_get");
    let first = stream
        .try_next()
        .await
        .expect("first batch")
        .expect("a batch");
    assert!(first.num_rows() > 0);
    assert_eq!(server.active.load(Ordering::SeqCst), 1);
    drop(stream);
    drop(client);
    wait_idle(&server.active).await;
}

fn purchases(rows: &[(&str, Option<&str>, f64)]) -> RecordBatch {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("type", DataType::Utf8, false),
        Field::new("event", DataType::Utf8, false),
        Field::new("message_id", DataType::Utf8, false),
        Field::new("email", DataType::Utf8, true),
        Field::new("timestamp", ts.clone(), false),
        Field::new("revenue", DataType::Float64, false),
    ]));
    let n = rows.len();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["track"; n])),
            Arc::new(StringArray::from(vec!["Order Completed"; n])),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.1).collect::<Vec<_>>(),
            )),
            Arc::new(
                arrow::array::TimestampMicrosecondArray::from(vec![1_763_800_000_000_000; n])
                    .with_timezone("UTC"),
            ),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
        ],
    )
    .expect("batch")
}

fn ingest_command(table: &str, if_exists: TableExistsOption) -> CommandStatementIngest {
    CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: TableNotExistOption::Create as i32,
            if_exists: if_exists as i32,
        }),
        table: table.into(),
        schema: None,
        catalog: None,
        temporary: false,
        transaction_id: None,
        options: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_ingest_appends_valid_rows_and_quarantines_the_rest() {
    let server = Server::start(FlightConfig::default()).await;
    let mut collector = server.client(&server.keys.collector).await;
    let batch = purchases(&[
        ("pos-1", Some("Store.Buyer@Example.org"), 42.0),
        ("pos-2", None, 10.0),
        ("pos-3", Some("other@example.org"), 7.5),
    ]);
    let stream = futures::stream::iter([Ok(batch.clone())]);
    let n = collector
        .execute_ingest(ingest_command("events", TableExistsOption::Append), stream)
        .await
        .expect("ingest");
    assert_eq!(n, 2, "the row without identifier goes to quarantine");
    // The same upload again is recognised (content hash) and loads nothing.
    let again = collector
        .execute_ingest(
            ingest_command("events", TableExistsOption::Append),
            futures::stream::iter([Ok(batch)]),
        )
        .await
        .expect("ingest again");
    assert_eq!(again, 0);

    let mut admin = server.client(&server.keys.admin).await;
    let (_, rows) = query(
        &mut admin,
        "SELECT message_id, email, source FROM events WHERE message_id LIKE 'pos-%' ORDER BY 1",
    )
    .await;
    assert_eq!(
        strings(&rows, "email"),
        [
            Some("store.buyer@example.org".into()),
            Some("other@example.org".into())
        ]
    );
    assert!(
        strings(&rows, "source")
            .iter()
            .all(|s| s.as_deref() == Some("store-pos"))
    );
    let (_, quarantined) = query(&mut admin, "SELECT file, reason FROM quarantine").await;
    assert_eq!(quarantined.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    assert!(
        strings(&quarantined, "reason")[0]
            .as_deref()
            .is_some_and(|r| r.contains("no identifier"))
    );

    let mut analyst = server.client(&server.keys.analyst).await;
    let (c, _) = code(
        analyst
            .execute_ingest(
                ingest_command("events", TableExistsOption::Append),
                futures::stream::iter([Ok(purchases(&[("x", Some("a@b.c"), 1.0)]))]),
            )
            .await
            .expect_err("analysts cannot write"),
    );
    assert_eq!(c, Code::PermissionDenied);
    let (c, m) = code(
        collector
            .execute_ingest(
                ingest_command("profiles", TableExistsOption::Append),
                futures::stream::iter([Ok(purchases(&[("y", Some("a@b.c"), 1.0)]))]),
            )
            .await
            .expect_err("only events"),
    );
    assert_eq!(c, Code::InvalidArgument);
    assert!(m.contains("events only"), "{m}");
    let (c, _) = code(
        collector
            .execute_ingest(
                ingest_command("events", TableExistsOption::Replace),
                futures::stream::iter([Ok(purchases(&[("z", Some("a@b.c"), 1.0)]))]),
            )
            .await
            .expect_err("no replace"),
    );
    assert_eq!(c, Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_session_closes_only_that_sessions_statements() {
    let server = Server::start(FlightConfig::default()).await;
    // Two connections of one BI tool, each with its handshake session, and a
    // third sending the same key with every call.
    let mut closing = FlightSqlServiceClient::new(server.channel().await);
    closing
        .handshake("bi-tool", &server.keys.analyst)
        .await
        .expect("handshake");
    let mut other = FlightSqlServiceClient::new(server.channel().await);
    other
        .handshake("bi-tool", &server.keys.analyst)
        .await
        .expect("handshake");
    let mut keyed = server.client(&server.keys.analyst).await;
    let mut closed = closing
        .prepare("SELECT 1 AS one".into(), None)
        .await
        .expect("prepare");
    let mut kept = other
        .prepare("SELECT 2 AS two".into(), None)
        .await
        .expect("prepare");
    let mut kept_keyed = keyed
        .prepare("SELECT 3 AS three".into(), None)
        .await
        .expect("prepare");
    let results: Vec<_> = closing
        .do_action(Action::new("CloseSession", ""))
        .await
        .expect("close session")
        .try_collect()
        .await
        .expect("results");
    assert_eq!(results.len(), 1);
    assert_eq!(
        results[0].body.as_ref(),
        [0x08, 0x01],
        "CloseSessionResult{{CLOSED}}"
    );
    // The closed session's statements are gone ...
    let (c, _) = code(closed.execute().await.expect_err("closed"));
    assert_eq!(c, Code::NotFound);
    // ... the other connections' statements, same key, are not.
    kept.execute().await.expect("another session's statement");
    kept_keyed
        .execute()
        .await
        .expect("a keyed connection's statement");
    // A keyed connection's CloseSession names no session: nothing closes.
    let _: Vec<_> = keyed
        .do_action(Action::new("CloseSession", ""))
        .await
        .expect("close session")
        .try_collect()
        .await
        .expect("results");
    kept.execute().await.expect("still open");
    let (c, _) = code(
        keyed
            .do_action(Action::new("Frobnicate", ""))
            .await
            .expect_err("unknown action"),
    );
    assert_eq!(c, Code::Unimplemented);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_ticket_runs_with_the_rights_of_the_key_that_fetches_it() {
    let server = Server::start(FlightConfig::default()).await;
    let sql = "SELECT user_id, email FROM events WHERE type = 'identify' ORDER BY user_id";
    let mut admin = server.client(&server.keys.admin).await;
    // GetFlightInfo plans the query for the admin and keeps that plan for
    // the admin's DoGet; another key fetching the same ticket must not get it.
    let info = admin.execute(sql.to_string(), None).await.expect(sql);
    let mut analyst = server.client(&server.keys.analyst).await;
    let masked = fetch(&mut analyst, &info).await;
    assert_eq!(
        strings(&masked, "email"),
        [
            Some(sha256_hex("jane@example.org")),
            Some(sha256_hex("bob@example.org"))
        ]
    );
    let mut activation = server.client(&server.keys.activation).await;
    let ticket = info.endpoint[0].ticket.clone().expect("ticket");
    let denied = match activation.do_get(ticket).await {
        Ok(stream) => stream.try_collect::<Vec<_>>().await.err(),
        Err(e) => Some(e),
    };
    let (status, message) = code(denied.expect("activation may not read events"));
    assert_eq!(status, Code::PermissionDenied, "{message}");
    assert!(message.contains("events"), "{message}");

    // The admin's own fetch (the kept plan), then the same ticket again
    // (planned anew): the same clear answer both times.
    let clear = [
        Some("jane@example.org".to_string()),
        Some("bob@example.org".to_string()),
    ];
    assert_eq!(strings(&fetch(&mut admin, &info).await, "email"), clear);
    assert_eq!(strings(&fetch(&mut admin, &info).await, "email"), clear);

    // A new GetFlightInfo plans over the lake as it is now.
    server
        .ingest(
            "more.ndjson",
            r#"{"type":"identify","messageId":"m6","userId":"u3","timestamp":"2026-11-06T10:00:00Z","traits":{"email":"cy@example.org"}}
"#,
        )
        .await;
    let (_, now) = query(&mut admin, sql).await;
    assert_eq!(strings(&now, "email").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keys_prepared_statements_do_not_evict_anothers() {
    let config = FlightConfig {
        max_prepared_statements: 2,
        ..FlightConfig::default()
    };
    let server = Server::start(config).await;
    let mut analyst = server.client(&server.keys.analyst).await;
    let mut kept = analyst
        .prepare("SELECT count(*) AS n FROM events".into(), None)
        .await
        .expect("prepare");
    let mut activation = server.client(&server.keys.activation).await;
    let mut theirs = Vec::new();
    for i in 0..3 {
        theirs.push(
            activation
                .prepare(format!("SELECT {i} AS i"), None)
                .await
                .expect("prepare"),
        );
    }
    // The analyst's statement survives the other key's three; within a key
    // the cap still closes the least recently used.
    let info = kept
        .execute()
        .await
        .expect("the analyst's statement is kept");
    assert_eq!(
        fetch(&mut analyst, &info)
            .await
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        1
    );
    let err = theirs[0]
        .execute()
        .await
        .expect_err("evicted by the same key");
    assert!(err.to_string().contains("does not exist"), "{err}");
    theirs[2].execute().await.expect("the newest is kept");
}

/// `EXPLAIN` names the files it would read relative to the lake: a client
/// learns the table layout, not where the server keeps its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_names_files_relative_to_the_lake() {
    let server = Server::start(FlightConfig::default()).await;
    let root = server.lake.root().path().to_string();
    let inside = root.trim_start_matches('/').to_string();
    let mut client = server.client(&server.keys.analyst).await;
    for sql in [
        "EXPLAIN SELECT count(*) FROM events WHERE type = 'page'",
        "EXPLAIN ANALYZE SELECT count(*) FROM events WHERE type = 'page'",
    ] {
        let info = client.execute(sql.to_string(), None).await.expect(sql);
        let batches = fetch(&mut client, &info).await;
        let text: String = strings(&batches, "plan")
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains("events/event_date="), "{sql}: {text}");
        assert!(!text.contains(&inside), "{sql} shows {inside}: {text}");
    }
}
