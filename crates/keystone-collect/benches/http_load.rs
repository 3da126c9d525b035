//! Load generator for `keystone serve`: N keep-alive connections POST
//! Segment batches of B realistic events (unique messageIds) for S seconds,
//! optionally paced to a total request rate, and report events/s and the
//! latency percentiles of the 200s.
//!
//! ```text
//! cargo bench -p keystone-collect --bench http_load -- \
//!     --url http://127.0.0.1:8088 --key ks_… --batch 100 --connections 16 --seconds 20 [--rate 500]
//! ```
//! See benches/collector.sh, which starts the server and runs the cases.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

struct Args {
    url: String,
    key: String,
    batch: usize,
    connections: usize,
    seconds: u64,
    /// Total requests per second (0: as fast as possible).
    rate: f64,
    /// Instead of sending: write this many events as NDJSON to `--ndjson`
    /// (the same events, for the batch-ingest floor).
    ndjson: Option<(String, usize)>,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8088".into(),
        key: String::new(),
        batch: 100,
        connections: 16,
        seconds: 10,
        rate: 0.0,
        ndjson: None,
    };
    let mut ndjson_events = 0usize;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_default();
        match argv[i].as_str() {
            "--url" => a.url = v,
            "--key" => a.key = v,
            "--batch" => a.batch = v.parse().expect("--batch N"),
            "--connections" => a.connections = v.parse().expect("--connections N"),
            "--seconds" => a.seconds = v.parse().expect("--seconds N"),
            "--rate" => a.rate = v.parse().expect("--rate R"),
            "--ndjson" => a.ndjson = Some((v, 0)),
            "--events" => ndjson_events = v.parse().expect("--events N"),
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    if let Some((_, n)) = &mut a.ndjson {
        *n = ndjson_events;
        return a;
    }
    assert!(!a.key.is_empty(), "--key is required");
    a
}

/// Prefix of this run's messageIds, so runs against one server never
/// collide (a collision would be deduplicated, not measured).
fn run_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{nanos:x}")
    })
}

/// One realistic track event (≈ 700 bytes), as analytics SDKs send it.
fn event(conn: usize, n: u64, i: usize) -> String {
    let user = (n as usize * 31 + i) % 50_000;
    format!(
        concat!(
            r#"{{"type":"track","event":"Product Viewed","messageId":"{}-c{}-r{}-e{}","#,
            r#""anonymousId":"anon-{}","userId":"user-{}","timestamp":"2026-11-22T10:00:00.000Z","#,
            r#""properties":{{"product_id":"p-{}","category":"shoes","price":59.9,"currency":"EUR","name":"Runner {}"}},"#,
            r#""context":{{"ip":"10.1.2.3","locale":"fr-FR","userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36","#,
            r#""library":{{"name":"analytics-python","version":"2.4.0"}},"page":{{"path":"/p/{}","url":"https://shop.example/p/{}","referrer":"https://www.google.com/"}},"#,
            r#""campaign":{{"source":"newsletter","medium":"email","name":"autumn"}}}},"integrations":{{}}}}"#
        ),
        run_tag(),
        conn,
        n,
        i,
        user,
        user,
        i % 500,
        i % 500,
        i % 500,
        i % 500
    )
}

fn body(conn: usize, n: u64, batch: usize) -> Vec<u8> {
    let events: Vec<String> = (0..batch).map(|i| event(conn, n, i)).collect();
    format!(
        r#"{{"batch":[{}],"sentAt":"2026-11-22T10:00:01.000Z"}}"#,
        events.join(",")
    )
    .into_bytes()
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    if let Some((path, n)) = &args.ndjson {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
        for k in 0..*n {
            writeln!(out, "{}", event(0, (k / args.batch) as u64, k % args.batch)).expect("write");
        }
        out.flush().expect("flush");
        return;
    }
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.connections)
        .build_http::<Full<Bytes>>();
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let per_conn_interval =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.connections as f64 / args.rate));
    let sample = body(0, 0, args.batch);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for conn in 0..args.connections {
        let client = client.clone();
        let url = format!("{}/v1/batch", args.url);
        let key = args.key.clone();
        let batch = args.batch;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            let mut next = Instant::now();
            while Instant::now() < deadline {
                if let Some(every) = per_conn_interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += every;
                }
                let req = hyper::Request::post(&url)
                    .header("content-type", "application/json")
                    .header("x-write-key", &key)
                    .body(Full::new(Bytes::from(body(conn, n, batch))))
                    .expect("request");
                n += 1;
                let t = Instant::now();
                match client.request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().as_u16() == 200;
                        let _ = resp.into_body().collect().await;
                        if ok {
                            latencies.push(t.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("task");
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let ok = latencies.len();
    let events = ok * args.batch;
    println!(
        "batch={} connections={} rate={} seconds={:.1} requests_ok={} errors={} events/s={:.0} MB/s={:.1} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} body_bytes={}",
        args.batch,
        args.connections,
        if args.rate > 0.0 {
            format!("{}", args.rate)
        } else {
            "max".into()
        },
        elapsed,
        ok,
        errors,
        events as f64 / elapsed,
        (ok * sample.len()) as f64 / elapsed / 1e6,
        pct(0.50),
        pct(0.99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        sample.len()
    );
}
