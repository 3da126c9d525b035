//! Deterministic synthetic CDP workload generator for Keystone.
//!
//! [`generate`] writes, into an output directory, a realistic Segment-spec
//! event stream for `profiles` synthetic people, an offline store-purchase
//! CSV with its ingest mapping, and the ground truth of who is who:
//!
//! | file | content |
//! |------|---------|
//! | `events.ndjson` | one Segment message per line (`identify`, `track`, `page`, `screen`, `group`, `alias`) |
//! | `store_purchases.csv` | offline purchases known by email only |
//! | `store_purchases.mapping.toml` | the column mapping turning each CSV row into an `Order Completed` track |
//! | `truth.csv` | `identifier_type,identifier,person_id,kind`, one row per distinct identifier |
//!
//! The data contains the traps an identity-resolution engine must survive:
//! several devices per person, anonymous browsing before login, emails with
//! case / whitespace variants, phones in several formats, RudderStack-style
//! identify calls with the email in `context.traits`, `alias` calls, shared
//! devices (kiosks, family tablets) used by several logged-in people, junk
//! emails (`test@test.com`, …) typed by many unrelated people, and people
//! known only in store.
//!
//! Output is byte-identical for the same [`GenConfig`]: every person draws
//! from its own ChaCha8 stream derived from the seed, chunks of people are
//! generated on a few threads and written in order, and nothing depends on
//! hash-map iteration order. Events are streamed to disk; only the compact
//! ground truth is kept in memory until the end (to sort it).
//!
//! ```no_run
//! let cfg = keystone_gen::GenConfig::new(1_000);
//! let summary = keystone_gen::generate(&cfg, std::path::Path::new("/tmp/ks"), &mut |_| {})?;
//! assert!(summary.events > 0);
//! # Ok::<(), keystone_gen::GenError>(())
//! ```

mod catalog;
mod message;
mod names;
mod people;
mod truth;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate};

use crate::people::{ChunkOut, JUNK_EMAILS, World, generate_person};
use crate::truth::{Owner, Truth, padded};

/// Name of the Segment event file.
pub const EVENTS_FILE: &str = "events.ndjson";
/// Name of the offline store purchase CSV.
pub const STORE_FILE: &str = "store_purchases.csv";
/// Name of the CSV mapping file.
pub const MAPPING_FILE: &str = "store_purchases.mapping.toml";
/// Name of the ground-truth CSV.
pub const TRUTH_FILE: &str = "truth.csv";

/// Header of `store_purchases.csv`.
pub const STORE_HEADER: [&str; 8] = [
    "receipt_id",
    "purchased_at",
    "email",
    "store_id",
    "amount",
    "currency",
    "category",
    "sku",
];

/// Content of `store_purchases.mapping.toml`.
pub const STORE_MAPPING: &str = r#"# Keystone CSV mapping: each row of store_purchases.csv becomes one event.
type = "track"
event = "Order Completed"
message_id = "receipt_id"
timestamp = "purchased_at"
timestamp_format = "%Y-%m-%d %H:%M:%S"

[context_traits]
email = "email"

[properties]
order_id = "receipt_id"
store_id = "store_id"
revenue = { column = "amount", type = "number" }
currency = "currency"
category = "category"
sku = "sku"
"#;

/// People generated per chunk (and between two progress calls).
const CHUNK: u64 = 1_000;
/// Largest supported `profiles` (person ids and phone numbers stay unique).
pub const MAX_PROFILES: u64 = 100_000_000;
/// Largest supported `days`.
pub const MAX_DAYS: u32 = 3_650;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenConfig {
    /// Number of people (≈ 10 events each on average).
    pub profiles: u64,
    /// Seed: same config ⇒ byte-identical files.
    pub seed: u64,
    /// Last day of data (inclusive, UTC).
    pub end: NaiveDate,
    /// Number of days covered, ending at `end`.
    pub days: u32,
}

impl GenConfig {
    /// `profiles` people, seed 42, 90 days ending 2026-11-01.
    pub fn new(profiles: u64) -> Self {
        GenConfig {
            profiles,
            seed: 42,
            end: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap_or(NaiveDate::MIN),
            days: 90,
        }
    }

    fn validate(&self) -> Result<(), GenError> {
        if self.profiles == 0 || self.profiles > MAX_PROFILES {
            return Err(GenError::InvalidConfig(format!(
                "profiles must be between 1 and {MAX_PROFILES}, got {}",
                self.profiles
            )));
        }
        if self.days == 0 || self.days > MAX_DAYS {
            return Err(GenError::InvalidConfig(format!(
                "days must be between 1 and {MAX_DAYS}, got {}",
                self.days
            )));
        }
        let first = self
            .end
            .checked_sub_days(chrono::Days::new(u64::from(self.days) - 1));
        match first {
            Some(first) if first.year() >= 1971 && self.end.year() <= 9998 => Ok(()),
            _ => Err(GenError::InvalidConfig(format!(
                "the span of {} days ending {} must lie between 1971 and 9998",
                self.days, self.end
            ))),
        }
    }
}

/// What was generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenSummary {
    /// People generated.
    pub profiles: u64,
    /// Lines in `events.ndjson`.
    pub events: u64,
    /// Data rows in `store_purchases.csv`.
    pub store_purchases: u64,
    /// Data rows in `truth.csv`.
    pub truth_rows: u64,
    /// Files written (events, store CSV, mapping, truth).
    pub files: Vec<PathBuf>,
}

/// Generation failure.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// Reading or writing a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration cannot be generated.
    #[error("invalid generator configuration: {0}")]
    InvalidConfig(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> GenError + '_ {
    move |source| GenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn create(path: &Path) -> Result<BufWriter<File>, GenError> {
    File::create(path)
        .map(|f| BufWriter::with_capacity(1 << 20, f))
        .map_err(io_err(path))
}

/// Generates the data set described by `cfg` into `out_dir` (created if
/// missing; existing files are overwritten). `progress` receives the number
/// of people done every ~1 000 people and once at the end.
pub fn generate(
    cfg: &GenConfig,
    out_dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<GenSummary, GenError> {
    cfg.validate()?;
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    let events_path = out_dir.join(EVENTS_FILE);
    let store_path = out_dir.join(STORE_FILE);
    let mapping_path = out_dir.join(MAPPING_FILE);
    let truth_path = out_dir.join(TRUTH_FILE);

    std::fs::write(&mapping_path, STORE_MAPPING).map_err(io_err(&mapping_path))?;
    let mut events = create(&events_path)?;
    let mut store = csv::Writer::from_writer(create(&store_path)?);
    store
        .write_record(STORE_HEADER)
        .map_err(|e| io_err(&store_path)(e.into()))?;

    let end_ms = message::date_ms(cfg.end) + 86_400_000;
    let start_ms = end_ms - i64::from(cfg.days) * 86_400_000;
    let world = World::new(cfg.profiles, cfg.seed, start_ms, end_ms, cfg.days);

    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, 4) as u64;
    let mut truth = Truth::default();
    let mut junk_used = [false; JUNK_EMAILS.len()];
    let mut n_events = 0u64;
    let mut n_store = 0u64;
    let mut done = 0u64;
    while done < cfg.profiles {
        let batch_end = (done + threads * CHUNK).min(cfg.profiles);
        let ranges: Vec<(u64, u64)> = (done..batch_end)
            .step_by(CHUNK as usize)
            .map(|s| (s, (s + CHUNK).min(batch_end)))
            .collect();
        let outs = generate_batch(&world, &ranges);
        for (mut out, (_, chunk_end)) in outs.into_iter().zip(&ranges) {
            events
                .write_all(&out.events)
                .map_err(io_err(&events_path))?;
            n_events += out.event_count;
            for row in &out.store {
                store
                    .write_record([
                        row.receipt_id.as_str(),
                        &row.purchased_at,
                        &row.email,
                        row.store_id,
                        &row.amount,
                        row.currency,
                        row.category,
                        &row.sku,
                    ])
                    .map_err(|e| io_err(&store_path)(e.into()))?;
            }
            n_store += out.store.len() as u64;
            truth.append(&mut out.truth);
            for (used, chunk_used) in junk_used.iter_mut().zip(out.junk_used) {
                *used |= chunk_used;
            }
            done = *chunk_end;
            progress(done);
        }
    }
    events.flush().map_err(io_err(&events_path))?;
    drop(events);
    store.flush().map_err(io_err(&store_path))?;
    drop(store);

    for sd in &world.shared {
        truth
            .anonymous_ids
            .push((sd.anonymous_id.as_u128(), Owner::SharedDevice));
        truth
            .device_ids
            .push((padded(&sd.device_id), Owner::SharedDevice));
    }
    for (email, used) in JUNK_EMAILS.iter().zip(junk_used) {
        if used {
            truth.emails.push(((*email).into(), Owner::JunkEmail));
        }
    }
    let truth_file = create(&truth_path)?;
    let truth_rows = truth
        .write_csv(truth_file, world.width)
        .map_err(io_err(&truth_path))?;
    progress(cfg.profiles);

    Ok(GenSummary {
        profiles: cfg.profiles,
        events: n_events,
        store_purchases: n_store,
        truth_rows,
        files: vec![events_path, store_path, mapping_path, truth_path],
    })
}

fn generate_chunk(world: &World, (start, end): (u64, u64)) -> ChunkOut {
    let mut out = ChunkOut {
        events: Vec::with_capacity(((end - start) as usize) * 6_000),
        ..ChunkOut::default()
    };
    for idx in start..end {
        generate_person(world, idx, &mut out);
    }
    out
}

/// Generates the chunks in parallel (one thread each, the first on the
/// calling thread) and returns them in order.
fn generate_batch(world: &World, ranges: &[(u64, u64)]) -> Vec<ChunkOut> {
    let Some((&first, rest)) = ranges.split_first() else {
        return Vec::new();
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = rest
            .iter()
            .map(|&r| scope.spawn(move || generate_chunk(world, r)))
            .collect();
        let mut outs = vec![generate_chunk(world, first)];
        for h in handles {
            match h.join() {
                Ok(out) => outs.push(out),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        outs
    })
}

#[cfg(test)]
mod tests;
