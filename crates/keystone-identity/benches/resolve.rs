//! Throughput of the identity graph on `keystone gen` data.
//!
//! `cargo bench -p keystone-identity --bench resolve -- [PROFILES]` (default 100 000,
//! ≈ 1 M events). Generates the data, parses and extracts identifiers (timed
//! apart), then resolves everything in `(timestamp, message_id)` order, and
//! checks the answer: no profile may hold two user ids.

#![allow(
    clippy::unwrap_used,
    reason = "benchmark driver: a panic is the failure report"
)]

use std::collections::HashMap;
use std::io::BufRead;
use std::time::Instant;

use keystone_core::event::{ParseOptions, parse_event_str};
use keystone_gen::{EVENTS_FILE, GenConfig, generate};
use keystone_identity::{Observation, Rules, extract_identifiers, resolve_in_order};

fn main() {
    let profiles: u64 = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let summary = generate(&GenConfig::new(profiles), dir.path(), &mut |_| {}).unwrap();
    println!(
        "gen: {profiles} profiles, {} events in {:.2}s",
        summary.events,
        t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let opts = ParseOptions::new("bench", 0, &String::new);
    let file = std::io::BufReader::new(std::fs::File::open(dir.path().join(EVENTS_FILE)).unwrap());
    let observations: Vec<Observation> = file
        .lines()
        .map(|l| {
            let row = parse_event_str(&l.unwrap(), &opts).unwrap();
            Observation {
                timestamp: row.timestamp,
                identifiers: extract_identifiers(&row, &fr_rules()),
                message_id: row.message_id,
            }
        })
        .collect();
    let parse_secs = t.elapsed().as_secs_f64();
    println!("parse + extract (1 thread): {parse_secs:.2}s");

    let n = observations.len();
    let t = Instant::now();
    let (mut graph, resolutions) = resolve_in_order(fr_rules(), observations);
    let secs = t.elapsed().as_secs_f64();
    let merges: usize = resolutions.iter().map(|r| r.merges.len()).sum();
    let cuts: usize = resolutions.iter().map(|r| r.cuts.len()).sum();
    println!(
        "resolve: {n} events in {secs:.2}s ({:.0} events/s), {} profiles, {merges} merges, {cuts} identifiers cut",
        n as f64 / secs,
        graph.profile_count()
    );
    let mut users: HashMap<String, usize> = HashMap::new();
    for (id, p) in graph.identifiers() {
        if id.kind == "user_id" {
            *users.entry(p).or_default() += 1;
        }
    }
    assert!(
        users.values().all(|&n| n == 1),
        "a profile holds two user ids"
    );
    println!("check: every profile holds at most one user_id");
}

fn fr_rules() -> Rules {
    Rules {
        default_region: Some("FR".into()),
        ..Rules::default()
    }
}
