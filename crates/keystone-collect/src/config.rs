//! `[collector]` in keystone.toml.

use std::time::Duration;

use serde::Deserialize;

/// How the collector behaves; every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// How often the WAL segment is closed and sent to the lake (ms).
    pub flush_interval_ms: u64,
    /// A segment is also closed once it holds this many bytes.
    pub segment_bytes: u64,
    /// Un-flushed WAL above this many bytes: new requests get 503.
    pub wal_budget_bytes: u64,
    /// A messageId seen again within this window (per write key) is dropped.
    pub dedupe_window_hours: u64,
    /// Largest single event (bytes of its JSON).
    pub max_event_bytes: usize,
    /// Largest request body, compressed or not.
    pub max_batch_bytes: usize,
    /// Most events in one batch.
    pub max_batch_events: usize,
    /// Requests processed at once; more get 429.
    pub max_in_flight: usize,
    /// `Retry-After` (seconds) on 429 and 503.
    pub retry_after_secs: u64,
    /// How long SIGTERM waits for a failing flush before leaving the rest in
    /// the WAL for the next start (s).
    pub shutdown_grace_secs: u64,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            flush_interval_ms: 1000,
            segment_bytes: 64 << 20,
            wal_budget_bytes: 1 << 30,
            dedupe_window_hours: 24,
            max_event_bytes: 32 * 1024,
            max_batch_bytes: 500 * 1024,
            max_batch_events: 2500,
            max_in_flight: 512,
            retry_after_secs: 5,
            shutdown_grace_secs: 30,
        }
    }
}

impl CollectorConfig {
    /// Check the values make sense; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("flush_interval_ms", self.flush_interval_ms),
            ("segment_bytes", self.segment_bytes),
            ("wal_budget_bytes", self.wal_budget_bytes),
            ("max_event_bytes", self.max_event_bytes as u64),
            ("max_batch_bytes", self.max_batch_bytes as u64),
            ("max_batch_events", self.max_batch_events as u64),
            ("max_in_flight", self.max_in_flight as u64),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("[collector] {name} must be above 0"));
            }
        }
        if self.max_event_bytes > self.max_batch_bytes {
            return Err(format!(
                "[collector] max_event_bytes ({}) is above max_batch_bytes ({})",
                self.max_event_bytes, self.max_batch_bytes
            ));
        }
        Ok(())
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    pub fn dedupe_window_micros(&self) -> i64 {
        i64::try_from(self.dedupe_window_hours.saturating_mul(3_600_000_000)).unwrap_or(i64::MAX)
    }
}
