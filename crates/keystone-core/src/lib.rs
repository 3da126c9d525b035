//! # keystone-core
//!
//! The vocabulary every other Keystone crate shares, with no I/O:
//!
//! * [`event`] — the Segment-spec event model: parse one JSON message into an
//!   [`event::EventRow`], validating it and promoting the spec's common fields
//!   (email, revenue, page URL, UTM, device id, …) to typed columns;
//! * [`schema`] — the Arrow schema of every lake table, and
//!   [`schema::EventBatchBuilder`] that turns rows into record batches;
//! * [`identifier`] — identifier normalisation (email, …);
//! * [`json`] — a validating JSON scanner that hands out raw slices (events
//!   are read without building a tree);
//! * [`error`] — the error type.
//!
//! ```text
//!  JSON line ──parse_event──▶ EventRow ──EventBatchBuilder──▶ RecordBatch (events schema)
//! ```

pub mod error;
pub mod event;
pub mod identifier;
pub mod json;
pub mod schema;

pub use error::{Error, Result};
