//! # keystone-collect
//!
//! The Segment-compatible HTTP collector behind `keystone serve`: the
//! tracking API of Segment's SDKs (`/v1/batch`, `/v1/track`, …, the
//! browser's `/v1/t` and friends, the settings endpoint), write keys,
//! limits, deduplication of retried messageIds, and a 200 only once the
//! events are fsynced in the write-ahead log. The WAL and the flusher that
//! lands it in the lake exactly once live in `keystone-ingest`.
//!
//! * [`handler`] — one request's body to validated rows (no HTTP types);
//! * [`dedupe`] — messageIds per write key within a window;
//! * [`server`] — the running collector: recovery, routes, shutdown;
//! * [`metrics`] — the Prometheus text of `GET /metrics`;
//! * [`config`] — `[collector]` of keystone.toml.

pub mod config;
pub mod dedupe;
pub mod handler;
pub mod metrics;
pub mod server;

pub use config::CollectorConfig;
pub use server::{ServeOptions, ServeReport, serve};

/// What stops the collector from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `[collector]` has an invalid value.
    #[error("{0}")]
    Config(String),

    /// The lake could not be read or written.
    #[error(transparent)]
    Lake(#[from] keystone_lake::Error),

    /// The WAL could not be opened, read or written.
    #[error(transparent)]
    Ingest(#[from] keystone_ingest::Error),

    /// Reading the recent events of the lake (to seed deduplication) failed.
    #[error("reading recent events to seed deduplication: {0}")]
    Seed(String),

    /// A socket or the HTTP server failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<keystone_engine::Error> for Error {
    fn from(e: keystone_engine::Error) -> Self {
        Self::Seed(e.to_string())
    }
}

/// `Result` with the collector's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
