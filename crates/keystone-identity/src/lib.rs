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
//! This crate is the algorithm only; `keystone_engine::resolve` reads events
//! from the lake, feeds the graph and writes the `identities` tables.

pub mod extract;
pub mod graph;
pub mod rules;

pub use extract::{EventIds, Identifier, extract_identifiers, extract_with};
pub use graph::{
    Cut, CutRule, GraphRestore, IdentityGraph, IdentityRef, IdentityRow, Merge, Observation,
    Resolution, resolve_in_order,
};
pub use rules::Rules;
