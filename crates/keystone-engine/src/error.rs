//! The error type of `keystone-engine`.

/// What went wrong while planning or running SQL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Planning or execution failed (syntax, unknown table, type error, …).
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),

    /// The lake could not be read.
    #[error(transparent)]
    Lake(#[from] keystone_lake::Error),

    /// Identity resolution or the profile build cannot go on.
    #[error("{0}")]
    Resolve(String),

    /// A segment definition or operation was refused.
    #[error("{0}")]
    Segment(String),

    /// An erasure was refused or failed.
    #[error("{0}")]
    Forget(String),

    /// Results could not be written.
    #[error("writing results: {0}")]
    Output(String),
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Self::Output(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::Output(e.to_string())
    }
}

/// `Result` with the engine's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
