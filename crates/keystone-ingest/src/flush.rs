//! The flusher: closed WAL segments into the lake, exactly once.
//!
//! ```text
//!  closed segments (in number order) ─▶ group (≤ 256 MiB) ─▶ events: one commit, txn (app id, last number)
//!                                                         └▶ quarantine: one commit, same txn
//!                                     ─▶ `flushed` file ─▶ delete the segment files
//! ```
//!
//! A commit that fails (storage unreachable) is retried with backoff, after
//! asking the lake which transaction version it holds: a commit whose answer
//! was lost is not repeated. Segments keep arriving meanwhile; the collector
//! refuses new events (503) once the un-flushed bytes pass its budget.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keystone_lake::{EVENTS, Lake, QUARANTINE, TableSpec};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::wal::{Segment, WalStats, write_flushed};
use crate::{Error, Result};

/// Bytes of segments committed together when the flusher is behind.
const MAX_GROUP_BYTES: u64 = 256 << 20;

/// A Prometheus-style histogram with fixed bounds (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// A histogram with the given upper bounds (ascending); `+Inf` is implied.
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if secs <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Append the Prometheus text of this histogram named `name`.
    pub fn render(&self, name: &str, help: &str, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// What the flusher reports.
#[derive(Debug)]
pub struct FlushStats {
    /// Events committed to the lake.
    pub events: AtomicU64,
    /// Quarantined rows committed to the lake.
    pub quarantined: AtomicU64,
    /// Events dropped because they carry an erased person's identifier.
    pub suppressed: AtomicU64,
    /// Commits that failed (and were retried).
    pub failures: AtomicU64,
    /// Duration of each successful flush (read segments + commits).
    pub latency: Histogram,
    /// The last flush error, cleared by the next success.
    pub last_error: Mutex<Option<String>>,
}

impl Default for FlushStats {
    fn default() -> Self {
        Self {
            events: AtomicU64::new(0),
            quarantined: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency: Histogram::new(&[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
            last_error: Mutex::new(None),
        }
    }
}

/// Lands WAL segments in the lake.
pub struct Flusher {
    pub lake: Lake,
    pub dir: PathBuf,
    pub app_id: String,
    pub wal_stats: Arc<WalStats>,
    pub stats: Arc<FlushStats>,
}

impl Flusher {
    /// Flush `leftover` (segments of a previous run, checked against the
    /// lake's transaction versions), then every segment received, until the
    /// channel closes. After `stop` turns true, a failing flush is given up
    /// once `grace` has passed: its segments stay in the WAL for the next start.
    /// Returns the segments left unflushed.
    pub async fn run(
        self,
        leftover: Vec<Segment>,
        mut rx: mpsc::UnboundedReceiver<Segment>,
        mut stop: watch::Receiver<bool>,
        grace: Duration,
    ) -> Vec<Segment> {
        let mut pending: VecDeque<Segment> = leftover.into();
        let mut check = !pending.is_empty();
        let mut stop_at: Option<Instant> = None;
        loop {
            if pending.is_empty() {
                match rx.recv().await {
                    Some(s) => pending.push_back(s),
                    None => return Vec::new(),
                }
            }
            while let Ok(s) = rx.try_recv() {
                pending.push_back(s);
            }
            let mut group = Vec::new();
            let mut bytes = 0;
            while let Some(s) = pending.front() {
                if !group.is_empty() && bytes + s.bytes > MAX_GROUP_BYTES {
                    break;
                }
                bytes += s.bytes;
                group.extend(pending.pop_front());
            }
            let mut backoff = Duration::from_millis(200);
            loop {
                match self.flush_group(&group, check).await {
                    Ok(()) => {
                        check = false;
                        break;
                    }
                    Err(e) => {
                        check = true;
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                        let msg = e.to_string();
                        eprintln!(
                            "keystone collect: flush of WAL segments {}..={} failed, will retry: {msg}",
                            group.first().map_or(0, |s| s.number),
                            group.last().map_or(0, |s| s.number)
                        );
                        if let Ok(mut last) = self.stats.last_error.lock() {
                            *last = Some(msg);
                        }
                        if *stop.borrow() {
                            let deadline = *stop_at.get_or_insert_with(|| Instant::now() + grace);
                            if Instant::now() >= deadline {
                                group.extend(pending.drain(..));
                                while let Ok(s) = rx.try_recv() {
                                    group.push(s);
                                }
                                return group;
                            }
                        }
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            _ = stop.changed() => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        while let Ok(s) = rx.try_recv() {
                            pending.push_back(s);
                        }
                    }
                }
            }
        }
    }

    async fn committed(&self, spec: &TableSpec) -> Result<Option<u64>> {
        let v = self
            .lake
            .transaction_versions(spec, std::slice::from_ref(&self.app_id))
            .await?;
        Ok(v.into_iter()
            .flatten()
            .next()
            .and_then(|v| u64::try_from(v).ok()))
    }

    async fn flush_group(&self, group: &[Segment], check: bool) -> Result<()> {
        let Some(last) = group.last() else {
            return Ok(());
        };
        let started = Instant::now();
        // After a crash or a failed attempt, segments the lake already holds
        // (per table) are skipped: their commit landed before we lost track.
        let (events_done, quarantine_done) = if check {
            (
                self.committed(&EVENTS).await?.unwrap_or(0),
                self.committed(&QUARANTINE).await?.unwrap_or(0),
            )
        } else {
            (0, 0)
        };
        let mut events = Vec::new();
        let mut quarantine = Vec::new();
        for seg in group {
            if seg.number <= events_done && seg.number <= quarantine_done {
                continue;
            }
            let (records, torn) = seg.read()?;
            if torn > 0 {
                eprintln!(
                    "keystone collect: {}: dropped a torn record of {torn} bytes at the end (never acknowledged)",
                    seg.path.display()
                );
            }
            for r in records {
                if seg.number > events_done {
                    events.extend(r.events);
                }
                if seg.number > quarantine_done {
                    quarantine.extend(r.quarantine);
                }
            }
        }
        let txn = vec![(self.app_id.clone(), last.number as i64)];
        let metadata = HashMap::from([
            ("operation".to_string(), json!("keystone collect")),
            (
                "wal_segments".to_string(),
                json!(group.iter().map(|s| s.number).collect::<Vec<_>>()),
            ),
        ]);
        let mut n_events = 0;
        let mut n_suppressed = 0;
        if last.number > events_done {
            let mut append = self.lake.append(&EVENTS, txn.clone()).await?;
            for b in events {
                append.write(b).await?;
            }
            let committed = append.commit(metadata.clone()).await?;
            n_events = committed.rows;
            n_suppressed = committed.suppressed;
        }
        let mut n_quarantined = 0;
        if last.number > quarantine_done {
            let mut append = self.lake.append(&QUARANTINE, txn).await?;
            for b in quarantine {
                append.write(b).await?;
            }
            n_quarantined = append.commit(metadata).await?.rows;
        }
        write_flushed(&self.dir, last.number)?;
        for seg in group {
            match std::fs::remove_file(&seg.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        path: seg.path.display().to_string(),
                        source,
                    });
                }
            }
            let _ = self.wal_stats.pending_bytes.fetch_update(
                Ordering::Relaxed,
                Ordering::Relaxed,
                |b| Some(b.saturating_sub(seg.bytes)),
            );
        }
        self.stats.events.fetch_add(n_events, Ordering::Relaxed);
        self.stats
            .suppressed
            .fetch_add(n_suppressed, Ordering::Relaxed);
        self.stats
            .quarantined
            .fetch_add(n_quarantined, Ordering::Relaxed);
        self.stats.latency.observe(started.elapsed());
        if let Ok(mut last) = self.stats.last_error.lock() {
            *last = None;
        }
        Ok(())
    }
}
