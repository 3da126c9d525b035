//! Segment-spec NDJSON: one message per line; blank lines are skipped.

use std::io::BufRead;

use keystone_core::event::{ParseOptions, parse_event_str};
use keystone_core::schema::QuarantineRow;

use crate::{Error, Result, RowSink, content_message_id};

/// Read every line of `reader` into `sink`. `file` names the input in
/// quarantine rows and errors.
pub async fn read_ndjson(
    mut reader: impl BufRead,
    file: &str,
    source: &str,
    received_at: i64,
    sink: &mut impl RowSink,
) -> Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let mut line_no: i64 = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| Error::Io {
                path: file.to_string(),
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        line_no += 1;
        sink.progress(n as u64);
        let bytes = trim_line_end(&buf);
        if bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let reject = |reason: String| QuarantineRow {
            source: source.to_string(),
            file: file.to_string(),
            line: line_no,
            raw: String::from_utf8_lossy(bytes).into_owned(),
            reason,
            received_at,
        };
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                sink.reject(reject(format!(
                    "line {line_no}: invalid UTF-8 at byte {}",
                    e.valid_up_to()
                )));
                continue;
            }
        };
        let fallback = || content_message_id(source, bytes);
        let opts = ParseOptions {
            source,
            received_at,
            fallback_message_id: &fallback,
            offline_identity: false,
        };
        match parse_event_str(text, &opts) {
            Ok(row) => sink.event(row).await?,
            Err(e) => sink.reject(reject(format!("line {line_no}: {e}"))),
        }
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
    use keystone_core::event::EventRow;

    #[derive(Default)]
    pub(crate) struct VecSink {
        pub events: Vec<EventRow>,
        pub rejects: Vec<QuarantineRow>,
    }

    impl RowSink for VecSink {
        async fn event(&mut self, row: EventRow) -> Result<()> {
            self.events.push(row);
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
        assert_eq!(sink.events.len(), 2);
        assert_eq!(sink.events[0].message_id, "m1");
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
        assert_eq!(a.events[0].message_id, b.events[0].message_id);
    }
}
