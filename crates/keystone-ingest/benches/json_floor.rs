//! The floor of NDJSON ingest: reading the file and parsing every line as
//! JSON, nothing else (no validation, no Arrow, no Parquet, no commit), on
//! every core. Prints one JSON line per run: events, bytes, seconds.
//!
//! ```text
//! cargo bench -p keystone-ingest --bench json_floor -- FILE.ndjson [RUNS]
//! ```
//!
//! Each line is parsed by `serde_json` into `IgnoredAny`: the parser checks
//! the whole text and builds nothing, the least any JSON reader must do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

fn parse_chunk(chunk: &[u8]) -> Result<u64, String> {
    let mut n = 0;
    for (i, line) in chunk.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        serde_json::from_slice::<serde::de::IgnoredAny>(line)
            .map_err(|e| format!("line {} of a chunk: {e}", i + 1))?;
        n += 1;
    }
    Ok(n)
}

/// Split `data` into about `parts` pieces at line ends.
fn chunks(data: &[u8], parts: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    let step = data.len().div_ceil(parts.max(1)).max(1);
    while start < data.len() {
        let mut end = (start + step).min(data.len());
        while end < data.len() && data[end - 1] != b'\n' {
            end += 1;
        }
        out.push(&data[start..end]);
        start = end;
    }
    out
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (path, runs) = match args.as_slice() {
        [path] => (path.clone(), 3),
        [path, runs] => (path.clone(), runs.parse()?),
        _ => return Err("usage: json_floor FILE.ndjson [RUNS]".into()),
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for _ in 0..runs {
        let started = Instant::now();
        let data = std::fs::read(&path)?;
        let parts = chunks(&data, threads * 4);
        let next = AtomicUsize::new(0);
        let events = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut n = 0;
                        while let Some(chunk) = parts.get(next.fetch_add(1, Ordering::Relaxed)) {
                            n += parse_chunk(chunk)?;
                        }
                        Ok::<u64, String>(n)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("parser thread"))
                .sum::<Result<u64, String>>()
        })?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{{\"events\": {events}, \"bytes\": {}, \"secs\": {secs:.3}, \"events_per_sec\": {:.0}, \"threads\": {threads}}}",
            data.len(),
            events as f64 / secs
        );
    }
    Ok(())
}
