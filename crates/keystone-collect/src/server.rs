//! The running collector: HTTP front, dedupe, WAL and flusher wired together.
//!
//! ```text
//!  start: WAL folder ─▶ lake txn version (segment numbers continue past it)
//!         dedupe seed ◀─ lake events received within the window + un-flushed WAL
//!         flusher ◀─ leftover segments first
//!  request: budget? ─▶ key ─▶ body (bounded, gunzip) ─▶ validate ─▶ dedupe claim
//!           ─▶ WAL submit ─▶ wait for the fsync ─▶ 200
//!  stop:   no new connections, in-flight requests finish, last segment closed,
//!          flusher drains (gives up after the grace period if storage is down:
//!          the segments stay in the WAL for the next start)
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use futures::StreamExt;
use http_body_util::BodyExt;
use keystone_core::schema::{EventBatchBuilder, quarantine_batch};
use keystone_ingest::flush::{FlushStats, Flusher};
use keystone_ingest::wal::{Segment, WalDir, WalOptions, WalRecord, WalStats, WalWriter};
use keystone_lake::{EVENTS, KeyRecord, KeyRing, Lake, Role};
use tokio::net::TcpListener;
use tokio::sync::{RwLock, Semaphore, watch};

use crate::config::CollectorConfig;
use crate::dedupe::{Dedupe, Outcome, Pending, digest};
use crate::handler::{ApiError, Endpoint, Limits, Origin, envelope, gunzip, validate};
use crate::metrics::Metrics;
use crate::{Error, Result};

/// Keys are re-read from the lake at most this often when an unknown key arrives.
const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

struct Keys {
    ring: KeyRing,
    loaded: Instant,
}

struct Shared {
    cfg: CollectorConfig,
    lake: Lake,
    keys: RwLock<Keys>,
    wal: WalWriter,
    dedupe: Mutex<Dedupe>,
    metrics: Metrics,
    wal_stats: Arc<WalStats>,
    flush_stats: Arc<FlushStats>,
    in_flight: Semaphore,
}

/// What a collector run left behind.
#[derive(Debug)]
pub struct ServeReport {
    /// Segments that could not be flushed before the grace period ran out.
    pub unflushed: Vec<Segment>,
    pub accepted: u64,
    pub flushed: u64,
}

/// Everything `serve` needs.
pub struct ServeOptions {
    pub lake: Lake,
    pub config: CollectorConfig,
    /// The WAL folder (local disk).
    pub wal_dir: std::path::PathBuf,
}

/// Run the collector on `listener` until `shutdown` completes. `ready` is
/// called once recovery is done and requests are answered.
pub async fn serve(
    opts: ServeOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> Result<ServeReport> {
    let ServeOptions {
        lake,
        config: cfg,
        wal_dir,
    } = opts;
    cfg.validate().map_err(Error::Config)?;
    let mut dir = WalDir::open(&wal_dir)?;
    let committed = lake
        .transaction_versions(&EVENTS, std::slice::from_ref(&dir.app_id))
        .await?;
    dir.advance_past(committed.into_iter().flatten().next());

    let wal_stats = Arc::new(WalStats::default());
    let flush_stats = Arc::new(FlushStats::default());
    let mut dedupe = Dedupe::new(cfg.dedupe_window_micros());
    let now = chrono::Utc::now().timestamp_micros();
    seed_from_lake(&lake, &mut dedupe, now - cfg.dedupe_window_micros()).await?;
    for seg in &dir.leftover {
        wal_stats
            .pending_bytes
            .fetch_add(seg.bytes, Ordering::Relaxed);
        let (records, _) = seg.read()?;
        for r in records {
            if let Some(b) = r.events {
                seed_from_batch(&mut dedupe, &b);
            }
        }
    }
    if !dir.leftover.is_empty() {
        eprintln!(
            "keystone collect: {} WAL segment(s) left by the previous run will be flushed first",
            dir.leftover.len()
        );
    }

    let (closed_tx, closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let flusher = Flusher {
        lake: lake.clone(),
        dir: dir.dir.clone(),
        app_id: dir.app_id.clone(),
        wal_stats: wal_stats.clone(),
        stats: flush_stats.clone(),
    };
    let grace = Duration::from_secs(cfg.shutdown_grace_secs);
    let leftover = std::mem::take(&mut dir.leftover);
    let flusher = tokio::spawn(flusher.run(leftover, closed_rx, stop_rx, grace));
    let wal = WalWriter::start(
        &dir.dir,
        dir.next_segment,
        WalOptions {
            rotate_interval: cfg.flush_interval(),
            segment_bytes: cfg.segment_bytes,
        },
        wal_stats.clone(),
        closed_tx,
    )?;
    let keys = lake.keys().await?;
    let shared = Arc::new(Shared {
        in_flight: Semaphore::new(cfg.max_in_flight),
        cfg,
        lake,
        keys: RwLock::new(Keys {
            ring: keys,
            loaded: Instant::now(),
        }),
        wal,
        dedupe: Mutex::new(dedupe),
        metrics: Metrics::default(),
        wal_stats,
        flush_stats,
    });

    let app = router(shared.clone());
    let addr = listener.local_addr().map_err(|source| Error::Io {
        what: "listener address".into(),
        source,
    })?;
    ready(addr);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;

    // Stop: close the last segment, let the flusher drain.
    let _ = stop_tx.send(true);
    shared.wal.close();
    let unflushed = flusher.await.unwrap_or_default();
    served.map_err(|source| Error::Io {
        what: "HTTP server".into(),
        source,
    })?;
    Ok(ServeReport {
        unflushed,
        accepted: shared.metrics.accepted.load(Ordering::Relaxed),
        flushed: shared.flush_stats.events.load(Ordering::Relaxed),
    })
}

async fn seed_from_lake(lake: &Lake, dedupe: &mut Dedupe, since: i64) -> Result<()> {
    if lake.load(&EVENTS).await?.is_none() {
        return Ok(());
    }
    let engine = keystone_engine::Engine::open(lake.clone()).await?;
    let sql = format!(
        "SELECT source, message_id, CAST(received_at AS BIGINT) AS received_at \
         FROM events WHERE received_at >= to_timestamp_micros({since})"
    );
    let mut stream = engine.stream(&sql).await?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| Error::Seed(e.to_string()))?;
        seed_from_batch(dedupe, &batch);
    }
    Ok(())
}

/// Remember every (source, message_id) of an events batch.
fn seed_from_batch(dedupe: &mut Dedupe, batch: &arrow::array::RecordBatch) {
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .and_then(|c| arrow::compute::cast(c, &DataType::Utf8).ok())
    };
    let (Some(source), Some(mid)) = (col("source"), col("message_id")) else {
        return;
    };
    let at = batch
        .column_by_name("received_at")
        .and_then(|c| arrow::compute::cast(c, &DataType::Int64).ok());
    let (source, mid) = (source.as_string::<i32>(), mid.as_string::<i32>());
    let at = at
        .as_ref()
        .map(|a| a.as_primitive::<arrow::datatypes::Int64Type>());
    for i in 0..batch.num_rows() {
        if source.is_null(i) || mid.is_null(i) {
            continue;
        }
        let t = at.map_or(0, |a| a.value(i));
        dedupe.seed(digest(source.value(i), mid.value(i)), t);
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/{endpoint}", post(track))
        .route("/v1/projects/{key}/settings", get(settings))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn(cors))
        .with_state(shared)
}

/// Browsers post from any origin; answer preflights and allow every origin.
async fn cors(req: Request, next: Next) -> Response {
    let mut resp = if req.method() == Method::OPTIONS {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Content-Type, Content-Encoding, Authorization, X-Write-Key"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        r
    } else {
        next.run(req).await
    };
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

fn json(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(shared: &Shared, e: &ApiError) -> Response {
    let counter = match e.status {
        400 => &shared.metrics.bad_requests,
        401 => &shared.metrics.unauthorized,
        404 => &shared.metrics.not_found,
        429 => &shared.metrics.overloaded,
        _ => &shared.metrics.unavailable,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json(status, e.body());
    if let Some(secs) = e.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    match &shared.wal.durable().borrow().failed {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("WAL failed: {e}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let entries = shared.dedupe.lock().map(|d| d.len()).unwrap_or(0);
    let text = shared
        .metrics
        .render(&shared.wal_stats, &shared.flush_stats, entries);
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

async fn settings(
    State(shared): State<Arc<Shared>>,
    UrlPath(key): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = shared.authorize(&key).await {
        return error_response(&shared, &e);
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let body = serde_json::json!({
        "integrations": {"Segment.io": {"apiKey": key, "apiHost": format!("{host}/v1")}},
        "plan": {"track": {}, "identify": {}},
    });
    json(StatusCode::OK, body.to_string())
}

/// The write key of the request headers: Basic auth user, or `X-Write-Key`.
fn header_key(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-write-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
    Some(user.to_string())
}

async fn track(
    State(shared): State<Arc<Shared>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    shared.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let Some(endpoint) = Endpoint::from_path(&name) else {
        return error_response(
            &shared,
            &ApiError {
                status: 404,
                code: "not_found",
                message: format!("no endpoint /v1/{name}"),
                retry_after: None,
            },
        );
    };
    let Ok(_permit) = shared.in_flight.try_acquire() else {
        return error_response(
            &shared,
            &ApiError {
                status: 429,
                code: "too_many_requests",
                message: "too many requests in flight; retry later".into(),
                retry_after: Some(1),
            },
        );
    };
    match shared.ingest(endpoint, &name, &headers, body).await {
        Ok(()) => json(StatusCode::OK, r#"{"success":true}"#.into()),
        Err(e) => error_response(&shared, &e),
    }
}

impl Shared {
    fn limits(&self) -> Limits {
        Limits {
            max_event_bytes: self.cfg.max_event_bytes,
            max_batch_bytes: self.cfg.max_batch_bytes,
            max_batch_events: self.cfg.max_batch_events,
        }
    }

    /// The record of a collector (or admin) key.
    async fn authorize(&self, key: &str) -> std::result::Result<KeyRecord, ApiError> {
        let found = |ring: &KeyRing| ring.verify(key).cloned();
        let mut record = found(&self.keys.read().await.ring);
        if record.is_none() {
            let mut keys = self.keys.write().await;
            record = found(&keys.ring);
            if record.is_none() && keys.loaded.elapsed() >= KEY_RELOAD_INTERVAL {
                if let Ok(ring) = self.lake.keys().await {
                    keys.ring = ring;
                }
                keys.loaded = Instant::now();
                record = found(&keys.ring);
            }
        }
        match record {
            Some(r) if matches!(r.role, Role::Collector | Role::Admin) => Ok(r),
            Some(r) => Err(ApiError::unauthorized(format!(
                "key {} has role {}, which cannot send events",
                r.id,
                r.role.as_str()
            ))),
            None => Err(ApiError::unauthorized("unknown or revoked write key")),
        }
    }

    async fn read_body(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> std::result::Result<Vec<u8>, ApiError> {
        let limit = self.cfg.max_batch_bytes;
        let too_large = || {
            ApiError::bad_request(
                "body_too_large",
                format!("the body is over the limit of {limit} bytes"),
            )
        };
        if let Some(len) = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && len > limit as u64
        {
            return Err(too_large());
        }
        let bytes = http_body_util::Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    too_large()
                } else {
                    ApiError::bad_request(
                        "invalid_body",
                        format!("the body could not be read: {e}"),
                    )
                }
            })?
            .to_bytes();
        let gzip = headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
        if gzip {
            gunzip(&bytes, limit)
        } else {
            Ok(bytes.to_vec())
        }
    }

    async fn ingest(
        &self,
        endpoint: Endpoint,
        name: &str,
        headers: &HeaderMap,
        body: Body,
    ) -> std::result::Result<(), ApiError> {
        let retry = self.cfg.retry_after_secs;
        if let Some(e) = &self.wal.durable().borrow().failed {
            return Err(ApiError::unavailable(format!("the WAL failed: {e}"), retry));
        }
        let pending_bytes = self.wal_stats.pending_bytes.load(Ordering::Relaxed);
        if pending_bytes > self.cfg.wal_budget_bytes {
            return Err(ApiError::unavailable(
                format!(
                    "{pending_bytes} bytes wait for the lake (budget {}): storage is slow or unreachable",
                    self.cfg.wal_budget_bytes
                ),
                retry,
            ));
        }
        let from_header = header_key(headers);
        let mut key = match &from_header {
            Some(k) => Some(self.authorize(k).await?),
            None => None,
        };
        let body = self.read_body(headers, body).await?;
        let limits = self.limits();
        let env = envelope(&body, endpoint, &limits)?;
        if key.is_none() {
            let k = env.write_key.as_deref().ok_or_else(|| {
                ApiError::unauthorized(
                    "no write key: send it as the Basic auth user, the X-Write-Key header or writeKey in the body",
                )
            })?;
            key = Some(self.authorize(k).await?);
        }
        let key = key.ok_or_else(|| ApiError::unauthorized("no write key"))?;
        let received_at = chrono::Utc::now().timestamp_micros();
        let file = format!("http /v1/{name}");
        let origin = Origin {
            source: &key.name,
            file: &file,
            received_at,
        };
        let mut valid = validate(&env, endpoint, &origin, &limits);
        self.metrics
            .received
            .fetch_add(env.messages.len() as u64, Ordering::Relaxed);

        // Claim each messageId; duplicates are dropped (after waiting for the
        // request that holds them, if it is not durable yet).
        let (outcome_tx, outcome_rx) = watch::channel(Outcome::Pending);
        let pending: Pending = Arc::new(outcome_rx);
        // Hash before taking the lock: it is held by every request.
        let digests: Vec<u128> = valid
            .rows
            .iter()
            .map(|r| digest(&r.source, &r.message_id))
            .collect();
        let mut digests = digests.into_iter();
        let mut claimed = Vec::with_capacity(valid.rows.len());
        let mut waits = Vec::new();
        {
            let mut dedupe = self
                .dedupe
                .lock()
                .map_err(|_| ApiError::unavailable("dedupe index poisoned", retry))?;
            valid.rows.retain(|_| {
                let Some(k) = digests.next() else {
                    return false;
                };
                match dedupe.claim(k, received_at, &pending) {
                    Ok(()) => {
                        claimed.push(k);
                        true
                    }
                    Err(earlier) => {
                        waits.extend(earlier.filter(|p| !Arc::ptr_eq(p, &pending)));
                        false
                    }
                }
            });
        }
        let duplicates = env.messages.len() - valid.rows.len() - valid.rejects.len();
        self.metrics
            .deduplicated
            .fetch_add(duplicates as u64, Ordering::Relaxed);

        let result = self.write(&valid).await;
        match &result {
            Ok(()) => {
                let _ = outcome_tx.send(Outcome::Durable);
                self.metrics
                    .accepted
                    .fetch_add(valid.rows.len() as u64, Ordering::Relaxed);
                self.metrics
                    .quarantined
                    .fetch_add(valid.rejects.len() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                if let Ok(mut d) = self.dedupe.lock() {
                    d.release(&claimed, &pending);
                }
                let _ = outcome_tx.send(Outcome::Failed);
            }
        }
        result?;
        for w in waits {
            let mut rx = (*w).clone();
            let settled = rx
                .wait_for(|o| *o != Outcome::Pending)
                .await
                .map(|o| *o)
                .unwrap_or(Outcome::Failed);
            if settled != Outcome::Durable {
                return Err(ApiError::unavailable(
                    "an earlier copy of these events failed to be written; retry",
                    retry,
                ));
            }
        }
        Ok(())
    }

    /// Put the rows in the WAL and wait for the fsync.
    async fn write(&self, valid: &crate::handler::Validated) -> std::result::Result<(), ApiError> {
        if valid.rows.is_empty() && valid.rejects.is_empty() {
            return Ok(());
        }
        let retry = self.cfg.retry_after_secs;
        let internal = |e: String| ApiError::unavailable(e, retry);
        let events = if valid.rows.is_empty() {
            None
        } else {
            let mut b = EventBatchBuilder::default();
            for r in &valid.rows {
                b.append(r);
            }
            Some(b.finish().map_err(|e| internal(e.to_string()))?)
        };
        let quarantine = if valid.rejects.is_empty() {
            None
        } else {
            Some(quarantine_batch(&valid.rejects).map_err(|e| internal(e.to_string()))?)
        };
        let seq = self
            .wal
            .submit(&WalRecord { events, quarantine })
            .map_err(|e| internal(e.to_string()))?;
        self.wal
            .wait_durable(seq)
            .await
            .map_err(|e| internal(e.to_string()))
    }
}
