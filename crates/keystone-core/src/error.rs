//! The error type of `keystone-core`.

/// What went wrong while reading an event or building a table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A message that does not follow the Segment spec. `field` is the JSON path.
    #[error("`{field}` {reason}")]
    InvalidEvent { field: String, reason: String },

    /// The input is not JSON (or not an object).
    #[error("invalid JSON: {0}")]
    InvalidJson(String),

    /// Building an Arrow batch failed.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
}

impl Error {
    /// An [`Error::InvalidEvent`] about `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidEvent {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// `Result` with Keystone's core error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
