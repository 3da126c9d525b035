//! The error type of `keystone-lake`.

/// What went wrong in the lake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `--lake` value is not a usable location.
    #[error("invalid lake location {location:?}: {reason}")]
    InvalidLocation { location: String, reason: String },

    /// A local folder could not be created or read.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A state file under `_keystone/` could not be read or written.
    #[error("lake state `_keystone/{name}`: {reason}")]
    State { name: String, reason: String },

    /// A concurrent writer committed what this one was about to.
    #[error("{0}")]
    Conflict(String),

    /// A batch could not be filtered or converted.
    #[error("arrow: {0}")]
    Arrow(String),

    /// A Delta operation on `table` failed.
    #[error("table `{table}`: {source}")]
    Delta {
        table: String,
        #[source]
        source: Box<deltalake::DeltaTableError>,
    },
}

impl Error {
    /// A [`Error::Delta`] about `table`.
    pub fn delta(table: &str, source: deltalake::DeltaTableError) -> Self {
        Self::Delta {
            table: table.to_string(),
            source: Box::new(source),
        }
    }
}

/// `Result` with the lake's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
