//! Segment-spec NDJSON: one message per line; blank lines are skipped.
//!
//! Parsing JSON is the costly part of an ingest, so the input is cut into
//! chunks of whole lines that are parsed on the blocking thread pool, several
//! at once, and handed to the sink in input order:
//!
//! ```text
//!  reader ─▶ chunk (≈4 MiB of whole lines, first line number) ─▶ spawn_blocking(parse)
//!                                                               ─▶ … up to N in flight
//!  sink ◀── (events batch, rejected rows) in chunk order ◀───────┘
//! ```

use std::collections::VecDeque;
use std::io::BufRead;

use arrow::array::RecordBatch;
use keystone_core::event::{ParseOptions, parse_event_str};
use keystone_core::schema::{EventBatchBuilder, QuarantineRow};

use crate::{Error, Result, RowSink, content_message_id};

/// Bytes of input parsed by one task.
const CHUNK_BYTES: usize = 4 << 20;

/// Read every line of `reader` into `sink`. `file` names the input in
/// quarantine rows and errors.
pub async fn read_ndjson(
    mut reader: impl BufRead,
    file: &str,
    source: &str,
    received_at: i64,
    sink: &mut impl RowSink,
) -> Result<()> {
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2);
    let mut in_flight = VecDeque::new();
    let mut next_line: i64 = 1;
    loop {
        let mut chunk = Vec::with_capacity(CHUNK_BYTES + 64 * 1024);
        let mut lines = 0i64;
        while chunk.len() < CHUNK_BYTES {
            let n = reader
                .read_until(b'\n', &mut chunk)
                .map_err(|source| Error::Io {
                    path: file.to_string(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            lines += 1;
        }
        if lines == 0 {
            break;
        }
        let ctx = ChunkContext {
            file: file.to_string(),
            source: source.to_string(),
            received_at,
            first_line: next_line,
        };
        next_line += lines;
        in_flight.push_back(tokio::task::spawn_blocking(move || {
            parse_chunk(&chunk, &ctx)
        }));
        if in_flight.len() >= workers
            && let Some(task) = in_flight.pop_front()
        {
            deliver(task, sink).await?;
        }
    }
    while let Some(task) = in_flight.pop_front() {
        deliver(task, sink).await?;
    }
    Ok(())
}

struct ChunkContext {
    file: String,
    source: String,
    received_at: i64,
    first_line: i64,
}

struct Parsed {
    batch: Result<RecordBatch>,
    rejects: Vec<QuarantineRow>,
    bytes: u64,
}

async fn deliver(task: tokio::task::JoinHandle<Parsed>, sink: &mut impl RowSink) -> Result<()> {
    let parsed = task.await.map_err(|e| Error::Io {
        path: "ndjson parser".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    sink.progress(parsed.bytes);
    for r in parsed.rejects {
        sink.reject(r);
    }
    let batch = parsed.batch?;
    if batch.num_rows() > 0 {
        sink.batch(batch).await?;
    }
    Ok(())
}

fn parse_chunk(chunk: &[u8], ctx: &ChunkContext) -> Parsed {
    let mut builder = EventBatchBuilder::default();
    let mut rejects = Vec::new();
    for (i, line) in chunk.split_inclusive(|b| *b == b'\n').enumerate() {
        let line_no = ctx.first_line + i as i64;
        let bytes = trim_line_end(line);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reject = |reason: String| QuarantineRow {
            source: ctx.source.clone(),
            file: ctx.file.clone(),
            line: line_no,
            raw: String::from_utf8_lossy(bytes).into_owned(),
            reason,
            received_at: ctx.received_at,
        };
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                rejects.push(reject(format!(
                    "line {line_no}: invalid UTF-8 at byte {}",
                    e.valid_up_to()
                )));
                continue;
            }
        };
        let fallback = || content_message_id(&ctx.source, bytes);
        let opts = ParseOptions::new(&ctx.source, ctx.received_at, &fallback);
        match parse_event_str(text, &opts) {
            Ok(row) => builder.append(&row),
            Err(e) => rejects.push(reject(format!("line {line_no}: {e}"))),
        }
    }
    Parsed {
        batch: builder.finish().map_err(Error::from),
        rejects,
        bytes: chunk.len() as u64,
    }
}

fn trim_line_end(buf: &[u8]) -> &[u8] {
    let mut end = buf.len();
    while end > 0 && matches!(buf[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &buf[..end]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow::array::AsArray;
    use keystone_core::event::EventRow;

    #[derive(Default)]
    pub(crate) struct VecSink {
        pub events: Vec<EventRow>,
        pub batches: Vec<RecordBatch>,
        pub rejects: Vec<QuarantineRow>,
    }

    impl VecSink {
        /// Message ids of every event received, rows then batches.
        pub fn message_ids(&self) -> Vec<String> {
            let mut ids: Vec<String> = self.events.iter().map(|e| e.message_id.clone()).collect();
            for b in &self.batches {
                let col = b.column(0).as_string::<i32>();
                ids.extend(col.iter().map(|v| v.unwrap_or_default().to_string()));
            }
            ids
        }
    }

    impl RowSink for VecSink {
        async fn event(&mut self, row: EventRow) -> Result<()> {
            self.events.push(row);
            Ok(())
        }
        async fn batch(&mut self, batch: RecordBatch) -> Result<()> {
            self.batches.push(batch);
            Ok(())
        }
        fn reject(&mut self, row: QuarantineRow) {
            self.rejects.push(row);
        }
    }

    #[tokio::test]
    async fn bad_lines_are_quarantined_with_line_numbers() {
        let mut input = Vec::new();
        input.extend_from_slice(b"{\"type\":\"page\",\"userId\":\"u1\",\"messageId\":\"m1\"}\n");
        input.extend_from_slice(b"not json\n");
        input.extend_from_slice(b"\n");
        input.extend_from_slice(b"{\"type\":\"click\",\"userId\":\"u\"}\r\n");
        input.extend_from_slice(b"{\"type\":\"page\",\"userId\":\"\xff\xfe\"}\n");
        input.extend_from_slice(b"{\"type\":\"page\"}\n");
        input.extend_from_slice(
            b"{\"type\":\"page\",\"userId\":\"u2\",\"timestamp\":\"2026-02-30T00:00:00Z\"}\n",
        );
        input.extend_from_slice(b"{\"type\":\"track\",\"event\":\"E\",\"anonymousId\":\"a\"}");
        let mut sink = VecSink::default();
        read_ndjson(&input[..], "f.ndjson", "src", 0, &mut sink)
            .await
            .unwrap();
        let ids = sink.message_ids();
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], "m1");
        let lines: Vec<i64> = sink.rejects.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![2, 4, 5, 6, 7]);
        assert!(
            sink.rejects[0].reason.starts_with("line 2: invalid JSON"),
            "{}",
            sink.rejects[0].reason
        );
        assert!(sink.rejects[1].reason.contains("\"click\""));
        assert!(sink.rejects[2].reason.contains("invalid UTF-8"));
        assert!(sink.rejects[3].reason.contains("userId"));
        assert!(
            sink.rejects[4]
                .reason
                .contains("`timestamp` is not ISO-8601")
        );
        assert_eq!(sink.rejects[0].raw, "not json");
    }

    #[tokio::test]
    async fn missing_message_id_is_stable_across_loads() {
        let input = b"{\"type\":\"page\",\"userId\":\"u1\"}\n";
        let mut a = VecSink::default();
        let mut b = VecSink::default();
        read_ndjson(&input[..], "f", "src", 1, &mut a)
            .await
            .unwrap();
        read_ndjson(&input[..], "f", "src", 2, &mut b)
            .await
            .unwrap();
        assert_eq!(a.message_ids(), b.message_ids());
    }

    #[tokio::test]
    async fn many_chunks_keep_input_order_and_line_numbers() {
        // ≈ 3 chunks of input with a bad line every 10 000 lines.
        let mut input = Vec::new();
        let mut expected_bad = Vec::new();
        let mut n = 0i64;
        while input.len() < 3 * CHUNK_BYTES {
            n += 1;
            if n % 10_000 == 0 {
                input.extend_from_slice(b"{oops}\n");
                expected_bad.push(n);
            } else {
                input.extend_from_slice(
                    format!("{{\"type\":\"page\",\"userId\":\"u\",\"messageId\":\"{n}\",\"properties\":{{\"pad\":\"{:0>100}\"}}}}\n", n)
                        .as_bytes(),
                );
            }
        }
        let mut sink = VecSink::default();
        read_ndjson(&input[..], "f", "s", 0, &mut sink)
            .await
            .unwrap();
        assert!(sink.batches.len() >= 3);
        let ids = sink.message_ids();
        let want: Vec<String> = (1..=n)
            .filter(|i| i % 10_000 != 0)
            .map(|i| i.to_string())
            .collect();
        assert_eq!(ids, want);
        let bad: Vec<i64> = sink.rejects.iter().map(|r| r.line).collect();
        assert_eq!(bad, expected_bad);
    }
}
