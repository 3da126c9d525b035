//! # keystone-identity
//!
//! The identity graph: every identifier a person leaves (user id, email,
//! phone, anonymous cookie, device id, custom ids) is stitched into one
//! profile, following the rules of Segment Unify and RudderStack Profiles.
//! Pure algorithm, no I/O: the lake-facing `resolve` operation feeds it.
//!
//! ```text
//!  event ──extract──▶ identifiers ──Rules::admit──▶ kept (normalised) / cut (blocked, too long, …)
//!                                        │
//!            IdentityGraph::observe ◀────┘   match known identifiers → profiles
//!              ├─ no match        → new profile
//!              ├─ one profile     → add new identifiers
//!              └─ several         → merge into the oldest, unless a per-type limit
//!                                   or a cap would break: then drop the event's
//!                                   lowest-priority identifier and retry
//! ```
//!
//! Events must be observed in `(timestamp, message_id)` order
//! ([`resolve_in_order`] sorts them) so that the grouping does not depend on
//! arrival order.
//!
//! This crate is the algorithm only: the `keystone resolve` command, the
//! `identities` / `profiles` tables and incremental runs are not built yet.

pub mod extract;
pub mod graph;
pub mod rules;

pub use extract::{Identifier, extract_identifiers};
pub use graph::{Cut, CutRule, IdentityGraph, Merge, Observation, Resolution, resolve_in_order};
pub use rules::Rules;
