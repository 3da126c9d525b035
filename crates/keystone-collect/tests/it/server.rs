//! The collector in process: real HTTP over loopback, a real lake and WAL in
//! temporary folders. Crashes (kill -9) are tested from outside, with the
//! real binary, in tests/interop/test_collector.py; here the recovery rules
//! are tested by leaving the WAL in the states a crash leaves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::DataType;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use keystone_collect::{CollectorConfig, ServeOptions, ServeReport, serve};
use keystone_engine::Engine;
use keystone_ingest::flush::{FlushStats, Flusher};
use keystone_ingest::wal::{WalDir, WalOptions, WalRecord, WalWriter};
use keystone_lake::{Lake, Role};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Running {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<keystone_collect::Result<ServeReport>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Running {
    async fn start(lake: &Lake, wal: &Path, config: CollectorConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let opts = ServeOptions {
            lake: lake.clone(),
            config,
            wal_dir: wal.to_path_buf(),
        };
        let task = tokio::spawn(serve(
            opts,
            listener,
            async move {
                let _ = stopped.await;
            },
            move |addr| {
                let _ = ready_tx.send(addr);
            },
        ));
        let addr = tokio::time::timeout(Duration::from_secs(30), ready_rx)
            .await
            .expect("ready in time")
            .expect("ready");
        Self {
            addr,
            stop,
            task,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, String, HashMap<String, String>) {
        let mut req = hyper::Request::post(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::from(body))).expect("request"))
            .await
            .expect("response");
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned(), headers)
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let resp = self
            .client
            .get(format!("http://{}{path}", self.addr).parse().expect("uri"))
            .await
            .expect("response");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn stop(self) -> ServeReport {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("stops in time")
            .expect("join")
            .expect("serve")
    }
}

fn setup() -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = Lake::open(dir.path().join("lake").to_str().expect("utf-8")).expect("lake");
    (dir, lake)
}

fn config() -> CollectorConfig {
    CollectorConfig {
        flush_interval_ms: 100,
        ..CollectorConfig::default()
    }
}

async fn query(lake: &Lake, sql: &str) -> Vec<RecordBatch> {
    let engine = Engine::open(lake.clone()).await.expect("engine");
    engine.collect(sql).await.expect("query")
}

/// The message ids of `events`, sorted, with repeats.
async fn message_ids(lake: &Lake) -> Vec<String> {
    if lake
        .load(&keystone_lake::EVENTS)
        .await
        .expect("load")
        .is_none()
    {
        return Vec::new();
    }
    let mut out = Vec::new();
    for b in query(lake, "SELECT message_id FROM events").await {
        let col = arrow::compute::cast(b.column(0), &DataType::Utf8).expect("cast");
        out.extend(col.as_string::<i32>().iter().flatten().map(str::to_string));
    }
    out.sort();
    out
}

fn batch_body(ids: &[&str]) -> Vec<u8> {
    let msgs: Vec<_> = ids
        .iter()
        .map(|id| serde_json::json!({"type":"track","event":"Viewed","userId":"u1","messageId":id}))
        .collect();
    serde_json::json!({ "batch": msgs })
        .to_string()
        .into_bytes()
}

async fn key(lake: &Lake, role: Role) -> String {
    lake.create_key(role, Some("web"), &[])
        .await
        .expect("key")
        .0
}

#[tokio::test]
async fn accepted_events_reach_the_lake_once_and_duplicates_are_dropped_across_restarts() {
    let (dir, lake) = setup();
    let k = key(&lake, Role::Collector).await;
    let wal = dir.path().join("wal");
    let auth = [("x-write-key", k.as_str())];

    let s = Running::start(&lake, &wal, config()).await;
    let (status, body, headers) = s
        .post("/v1/batch", &auth, batch_body(&["m1", "m2", "m2"]))
        .await;
    assert_eq!((status, body.as_str()), (200, r#"{"success":true}"#));
    assert_eq!(
        headers
            .get("access-control-allow-origin")
            .map(String::as_str),
        Some("*")
    );
    let (status, _, _) = s.post("/v1/batch", &auth, batch_body(&["m1", "m3"])).await;
    assert_eq!(status, 200);
    let (_, metrics) = s.get("/metrics").await;
    assert!(
        metrics.contains("keystone_collector_accepted_events_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keystone_collector_deduplicated_events_total 2"),
        "{metrics}"
    );
    let report = s.stop().await;
    assert!(report.unflushed.is_empty());
    assert_eq!((report.accepted, report.flushed), (3, 3));
    assert_eq!(message_ids(&lake).await, ["m1", "m2", "m3"]);

    // After a restart the lake seeds the dedupe index: a retry of m1 is dropped.
    let s = Running::start(&lake, &wal, config()).await;
    let (status, _, _) = s.post("/v1/batch", &auth, batch_body(&["m1", "m4"])).await;
    assert_eq!(status, 200);
    s.stop().await;
    assert_eq!(message_ids(&lake).await, ["m1", "m2", "m3", "m4"]);
}

#[tokio::test]
async fn keys_are_checked_wherever_they_are_sent() {
    let (dir, lake) = setup();
    let k = key(&lake, Role::Collector).await;
    let analyst = lake
        .create_key(Role::Analyst, Some("bi"), &[])
        .await
        .expect("key")
        .0;
    let s = Running::start(&lake, &dir.path().join("wal"), config()).await;
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{k}:"))
    );
    let in_body = format!(
        r#"{{"writeKey":"{k}","batch":[{{"type":"page","anonymousId":"a","messageId":"p1"}}]}}"#
    );
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        (
            vec![("authorization", basic.as_str())],
            batch_body(&["b1"]),
            200,
        ),
        (vec![], in_body.into_bytes(), 200),
        (vec![], batch_body(&["x1"]), 401),
        (vec![("x-write-key", "ks_wrong")], batch_body(&["x2"]), 401),
        (
            vec![("x-write-key", analyst.as_str())],
            batch_body(&["x3"]),
            401,
        ),
    ];
    for (headers, body, want) in cases {
        let (status, body, _) = s.post("/v1/batch", &headers, body).await;
        assert_eq!(status, want, "{headers:?}: {body}");
        if want == 401 {
            let v: serde_json::Value = serde_json::from_str(&body).expect("json error");
            assert_eq!(v["code"], "unauthorized");
        }
    }
    // A key created while the server runs is picked up.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let late = lake
        .create_key(Role::Collector, Some("late"), &[])
        .await
        .expect("key")
        .0;
    let (status, _, _) = s
        .post(
            "/v1/batch",
            &[("x-write-key", late.as_str())],
            batch_body(&["l1"]),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s.get(&format!("/v1/projects/{k}/settings")).await;
    assert_eq!(status, 200);
    let (status, _) = s.get("/v1/projects/ks_nope/settings").await;
    assert_eq!(status, 401);
    s.stop().await;
    assert_eq!(message_ids(&lake).await, ["b1", "l1", "p1"]);
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_being_read_whole() {
    let (dir, lake) = setup();
    let k = key(&lake, Role::Collector).await;
    let cfg = CollectorConfig {
        max_batch_bytes: 2_000,
        max_event_bytes: 1_000,
        ..config()
    };
    let s = Running::start(&lake, &dir.path().join("wal"), cfg).await;
    let auth = [("x-write-key", k.as_str())];
    let big = vec![b' '; 5_000];
    let (status, body, _) = s.post("/v1/batch", &auth, big).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("body_too_large"), "{body}");
    let (status, body, _) = s.post("/v1/nope", &auth, batch_body(&["a"])).await;
    assert_eq!(status, 404, "{body}");
    // Each refusal is counted under its own status, not as unavailable.
    let (_, metrics) = s.get("/metrics").await;
    for line in [
        "keystone_collector_rejected_requests_total{code=\"400\"} 1",
        "keystone_collector_rejected_requests_total{code=\"404\"} 1",
        "keystone_collector_rejected_requests_total{code=\"503\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    s.stop().await;
    assert!(message_ids(&lake).await.is_empty());
}

#[tokio::test]
async fn over_the_wal_budget_requests_get_503_with_retry_after() {
    let (dir, lake) = setup();
    let k = key(&lake, Role::Collector).await;
    // A flush interval longer than the test: nothing leaves the WAL.
    let cfg = CollectorConfig {
        flush_interval_ms: 600_000,
        wal_budget_bytes: 1,
        retry_after_secs: 7,
        ..config()
    };
    let s = Running::start(&lake, &dir.path().join("wal"), cfg).await;
    let auth = [("x-write-key", k.as_str())];
    let (status, _, _) = s.post("/v1/batch", &auth, batch_body(&["a"])).await;
    assert_eq!(status, 200);
    let (status, body, headers) = s.post("/v1/batch", &auth, batch_body(&["b"])).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers.get("retry-after").map(String::as_str), Some("7"));
    // Stopping flushes what was acknowledged, even with the long interval.
    s.stop().await;
    assert_eq!(message_ids(&lake).await, ["a"]);
}

/// Write `ids` as one WAL segment the way a running collector does.
async fn write_segment(wal: &Path, number: u64, ids: &[&str]) -> keystone_ingest::wal::Segment {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = WalWriter::start(
        wal,
        number,
        WalOptions {
            rotate_interval: Duration::from_secs(3600),
            segment_bytes: 1 << 30,
        },
        Arc::default(),
        tx,
    )
    .expect("wal");
    let mut b = keystone_core::schema::EventBatchBuilder::default();
    for id in ids {
        b.append(&keystone_core::event::EventRow {
            message_id: id.to_string(),
            event_type: "track".into(),
            event: Some("Viewed".into()),
            user_id: Some("u1".into()),
            timestamp: 1_700_000_000_000_000,
            received_at: chrono::Utc::now().timestamp_micros(),
            source: "web".into(),
            ..Default::default()
        });
    }
    let seq = w
        .submit(&WalRecord {
            events: Some(b.finish().expect("batch")),
            quarantine: None,
        })
        .expect("submit");
    w.wait_durable(seq).await.expect("durable");
    w.close();
    rx.recv().await.expect("segment")
}

#[tokio::test]
async fn a_segment_committed_before_a_crash_is_not_committed_again() {
    let (dir, lake) = setup();
    let k = key(&lake, Role::Collector).await;
    let wal = dir.path().join("wal");
    let opened = WalDir::open(&wal).expect("wal dir");

    // Segment 1 is committed to the lake, then the process "dies" before
    // deleting it: put the file back as it was.
    let seg = write_segment(&wal, 1, &["c1", "c2"]).await;
    let copy = std::fs::read(&seg.path).expect("read");
    let flusher = Flusher {
        lake: lake.clone(),
        dir: wal.clone(),
        app_id: opened.app_id.clone(),
        wal_stats: Arc::default(),
        stats: Arc::new(FlushStats::default()),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tx.send(seg.clone()).expect("send");
    drop(tx);
    assert!(
        flusher
            .run(Vec::new(), rx, stop_rx, Duration::ZERO)
            .await
            .is_empty()
    );
    std::fs::write(&seg.path, &copy).expect("restore");
    std::fs::remove_file(wal.join("flushed")).expect("forget flushed");
    // Segment 2 was acknowledged but never flushed, and has a torn tail.
    let seg2 = write_segment(&wal, 2, &["c3"]).await;
    let mut bytes = std::fs::read(&seg2.path).expect("read");
    bytes.extend_from_slice(&[42, 0, 0, 0, 1, 2]);
    std::fs::write(&seg2.path, bytes).expect("tear");

    let s = Running::start(&lake, &wal, config()).await;
    // The restarted collector knows c1 and c3 (lake and WAL) as already seen.
    let (status, _, _) = s
        .post(
            "/v1/batch",
            &[("x-write-key", k.as_str())],
            batch_body(&["c1", "c3", "c4"]),
        )
        .await;
    assert_eq!(status, 200);
    s.stop().await;
    assert_eq!(message_ids(&lake).await, ["c1", "c2", "c3", "c4"]);
    // Segment numbers went on past the recovered ones; the WAL is empty.
    let left: Vec<_> = std::fs::read_dir(&wal)
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let flushed: u64 = std::fs::read_to_string(wal.join("flushed"))
        .expect("flushed")
        .trim()
        .parse()
        .expect("number");
    assert!(flushed >= 3, "{flushed}");
}

#[tokio::test]
async fn quarantined_events_keep_their_reason_and_the_rest_of_the_batch_lands() {
    let (dir, lake) = setup();
    let k = key(&lake, Role::Collector).await;
    let s = Running::start(&lake, &dir.path().join("wal"), config()).await;
    let body = br#"{"batch":[
        {"type":"track","event":"Ok","userId":"u","messageId":"ok1"},
        {"type":"track","userId":"u","messageId":"bad1"},
        {"type":"party","userId":"u","messageId":"bad2"}]}"#;
    let (status, _, _) = s
        .post("/v1/batch", &[("x-write-key", k.as_str())], body.to_vec())
        .await;
    assert_eq!(status, 200);
    s.stop().await;
    assert_eq!(message_ids(&lake).await, ["ok1"]);
    let rows = query(&lake, "SELECT reason FROM quarantine ORDER BY line").await;
    let reasons: Vec<String> = rows
        .iter()
        .flat_map(|b| {
            let c = arrow::compute::cast(b.column(0), &DataType::Utf8).expect("cast");
            c.as_string::<i32>()
                .iter()
                .flatten()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("`event` is missing"), "{reasons:?}");
    assert!(reasons[1].contains("party"), "{reasons:?}");
}
