//! `GET /metrics`: Prometheus text.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use keystone_ingest::flush::FlushStats;
use keystone_ingest::wal::WalStats;

/// The collector's own counters (the WAL and flusher keep theirs).
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub received: AtomicU64,
    pub accepted: AtomicU64,
    pub quarantined: AtomicU64,
    pub deduplicated: AtomicU64,
    pub bad_requests: AtomicU64,
    pub unauthorized: AtomicU64,
    pub overloaded: AtomicU64,
    pub not_found: AtomicU64,
    pub unavailable: AtomicU64,
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name} {v}");
}

fn gauge(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name} {v}");
}

impl Metrics {
    /// The whole exposition.
    pub fn render(&self, wal: &WalStats, flush: &FlushStats, dedupe_entries: usize) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::with_capacity(4096);
        let p = "keystone_collector";
        counter(
            &mut out,
            &format!("{p}_requests_total"),
            "HTTP requests to the tracking endpoints.",
            g(&self.requests),
        );
        counter(
            &mut out,
            &format!("{p}_received_events_total"),
            "Events received in requests that were read.",
            g(&self.received),
        );
        counter(
            &mut out,
            &format!("{p}_accepted_events_total"),
            "Events made durable in the WAL (acknowledged).",
            g(&self.accepted),
        );
        counter(
            &mut out,
            &format!("{p}_quarantined_events_total"),
            "Invalid events of good requests, kept for the quarantine table.",
            g(&self.quarantined),
        );
        counter(
            &mut out,
            &format!("{p}_deduplicated_events_total"),
            "Events dropped as a repeated messageId of the same write key.",
            g(&self.deduplicated),
        );
        let _ = writeln!(
            out,
            "# HELP {p}_rejected_requests_total Requests answered with an error, by status."
        );
        let _ = writeln!(out, "# TYPE {p}_rejected_requests_total counter");
        for (code, v) in [
            ("400", g(&self.bad_requests)),
            ("401", g(&self.unauthorized)),
            ("404", g(&self.not_found)),
            ("429", g(&self.overloaded)),
            ("503", g(&self.unavailable)),
        ] {
            let _ = writeln!(out, "{p}_rejected_requests_total{{code=\"{code}\"}} {v}");
        }
        counter(
            &mut out,
            &format!("{p}_flushed_events_total"),
            "Events committed to the lake's events table.",
            g(&flush.events),
        );
        counter(
            &mut out,
            &format!("{p}_flushed_quarantine_total"),
            "Rows committed to the lake's quarantine table.",
            g(&flush.quarantined),
        );
        counter(
            &mut out,
            &format!("{p}_suppressed_events_total"),
            "Events dropped at flush: they carry an erased person's identifier (keystone forget).",
            g(&flush.suppressed),
        );
        counter(
            &mut out,
            &format!("{p}_flush_failures_total"),
            "Flushes that failed and were retried.",
            g(&flush.failures),
        );
        gauge(
            &mut out,
            &format!("{p}_wal_bytes"),
            "Bytes of WAL not yet committed to the lake.",
            g(&wal.pending_bytes),
        );
        counter(
            &mut out,
            &format!("{p}_wal_syncs_total"),
            "fsyncs of the WAL (each covers one or more requests).",
            g(&wal.syncs),
        );
        counter(
            &mut out,
            &format!("{p}_wal_records_total"),
            "Requests written to the WAL.",
            g(&wal.records),
        );
        gauge(
            &mut out,
            &format!("{p}_dedupe_entries"),
            "messageIds remembered for deduplication.",
            dedupe_entries as u64,
        );
        flush.latency.render(
            &format!("{p}_flush_seconds"),
            "Time to commit a group of WAL segments to the lake.",
            &mut out,
        );
        out
    }
}
