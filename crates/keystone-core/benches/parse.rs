//! Event parsing on one core: how fast `parse_event_str` turns NDJSON lines
//! into validated rows, beside two floors on the same lines — `serde_json`
//! checking the text and building nothing (`IgnoredAny`), and `serde_json`
//! building a `Value` tree (the least a tree-based reader does). Prints one
//! JSON line per run and reader.
//!
//! ```text
//! cargo bench -p keystone-core --bench parse -- FILE.ndjson [RUNS] [ONLY]
//! ```
//!
//! `ONLY` (`floor`, `tree` or `keystone`) runs one reader, for profiling.

use std::time::Instant;

use keystone_core::event::{ParseOptions, parse_event_str};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (path, runs, only) = match args.as_slice() {
        [path] => (path.clone(), 3, None),
        [path, runs] => (path.clone(), runs.parse()?, None),
        [path, runs, only] => (path.clone(), runs.parse()?, Some(only.clone())),
        _ => return Err("usage: parse FILE.ndjson [RUNS] [floor|tree|keystone]".into()),
    };
    let runs_reader = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let text = std::fs::read_to_string(&path)?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let bytes: usize = lines.iter().map(|l| l.len()).sum();
    let fallback = || "generated".to_string();
    let opts = ParseOptions::new("bench", 0, &fallback);
    for run in 1..=runs {
        let report = |reader: &str, seconds: f64, checksum: usize| {
            println!(
                "{{\"run\":{run},\"reader\":\"{reader}\",\"events\":{},\"bytes\":{bytes},\"seconds\":{seconds:.3},\"events_per_s\":{:.0},\"mb_per_s\":{:.1},\"checksum\":{checksum}}}",
                lines.len(),
                lines.len() as f64 / seconds,
                bytes as f64 / seconds / 1e6
            );
        };
        if runs_reader("floor") {
            let t = Instant::now();
            let mut n = 0;
            for line in &lines {
                serde_json::from_str::<serde::de::IgnoredAny>(line)?;
                n += 1;
            }
            report(
                "serde_json IgnoredAny (floor)",
                t.elapsed().as_secs_f64(),
                n,
            );
        }
        if runs_reader("tree") {
            let t = Instant::now();
            let mut n = 0;
            for line in &lines {
                let v: serde_json::Value = serde_json::from_str(line)?;
                n += v.as_object().map_or(0, |o| o.len());
            }
            report("serde_json Value tree", t.elapsed().as_secs_f64(), n);
        }
        if runs_reader("keystone") {
            let t = Instant::now();
            let mut n = 0;
            for line in &lines {
                let row = parse_event_str(line, &opts)?;
                n += row.context.as_ref().map_or(0, String::len)
                    + row.properties.as_ref().map_or(0, String::len);
            }
            report("keystone parse_event_str", t.elapsed().as_secs_f64(), n);
        }
    }
    Ok(())
}
