//! The error type of `keystone-ingest`.

/// A failure that stops an ingest (bad rows do not: they go to quarantine).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input file cannot be read.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A CSV mapping is missing or invalid.
    #[error("{path}: {reason}")]
    Mapping { path: String, reason: String },

    /// A file is not in the format it was read as (e.g. not Parquet, CSV
    /// header missing a mapped column).
    #[error("{path}: {reason}")]
    Format { path: String, reason: String },

    /// Writing to the lake failed; nothing of this ingest is visible.
    #[error(transparent)]
    Lake(#[from] keystone_lake::Error),

    /// The collector's write-ahead log failed or holds something unreadable.
    #[error("write-ahead log {path}: {reason}")]
    Wal { path: String, reason: String },

    /// Encoding or decoding Arrow data failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Building a batch failed.
    #[error(transparent)]
    Core(#[from] keystone_core::Error),
}

/// `Result` with the ingest error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
