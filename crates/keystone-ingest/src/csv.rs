//! CSV with a column mapping (see [`crate::mapping`]).

use std::io::Read;

use keystone_core::event::{ParseOptions, parse_event};
use keystone_core::schema::QuarantineRow;

use crate::mapping::CsvMapping;
use crate::{Error, Result, RowSink, content_message_id};

/// Read every record of a CSV file (with a header line) into `sink`.
pub async fn read_csv(
    reader: impl Read,
    file: &str,
    mapping: &CsvMapping,
    source: &str,
    received_at: i64,
    sink: &mut impl RowSink,
) -> Result<()> {
    let mut rdr = ::csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(reader);
    let format_err = |reason: String| Error::Format {
        path: file.to_string(),
        reason,
    };
    let header: Vec<String> = rdr
        .byte_headers()
        .map_err(|e| format_err(format!("cannot read the CSV header: {e}")))?
        .iter()
        .map(|h| {
            String::from_utf8_lossy(h)
                .trim_start_matches('\u{feff}')
                .to_string()
        })
        .collect();
    let bound = mapping.bind(&header).map_err(format_err)?;
    let mut record = ::csv::ByteRecord::new();
    let mut last_pos = rdr.position().byte();
    loop {
        let line = rdr.position().line() as i64;
        match rdr.read_byte_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) if e.is_io_error() => {
                return Err(Error::Io {
                    path: file.to_string(),
                    source: std::io::Error::other(e.to_string()),
                });
            }
            Err(e) => {
                sink.reject(QuarantineRow {
                    source: source.to_string(),
                    file: file.to_string(),
                    line,
                    raw: String::new(),
                    reason: format!("line {line}: {e}"),
                    received_at,
                });
                continue;
            }
        }
        let pos = rdr.position().byte();
        sink.progress(pos.saturating_sub(last_pos));
        last_pos = pos;
        let line = record.position().map_or(line, |p| p.line() as i64);
        let raw_bytes = record.iter().collect::<Vec<_>>().join(&b","[..]);
        let reject = |reason: String| QuarantineRow {
            source: source.to_string(),
            file: file.to_string(),
            line,
            raw: String::from_utf8_lossy(&raw_bytes).into_owned(),
            reason: format!("line {line}: {reason}"),
            received_at,
        };
        if record.len() != header.len() {
            sink.reject(reject(format!(
                "{} fields, the header has {}",
                record.len(),
                header.len()
            )));
            continue;
        }
        let cells: std::result::Result<Vec<&str>, usize> = record
            .iter()
            .enumerate()
            .map(|(i, f)| std::str::from_utf8(f).map_err(|_| i))
            .collect();
        let cells = match cells {
            Ok(c) => c,
            Err(i) => {
                sink.reject(reject(format!("column `{}`: invalid UTF-8", header[i])));
                continue;
            }
        };
        let msg = match bound.message(&cells) {
            Ok(m) => m,
            Err(reason) => {
                sink.reject(reject(reason));
                continue;
            }
        };
        let fallback = || content_message_id(source, &raw_bytes);
        let opts = ParseOptions {
            offline_identity: true,
            ..ParseOptions::new(source, received_at, &fallback)
        };
        match parse_event(msg, &opts) {
            Ok(row) => sink.event(row).await?,
            Err(e) => sink.reject(reject(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ndjson::tests::VecSink;

    const MAPPING: &str = r#"
type = "track"
event = "Order Completed"
message_id = "receipt_id"
timestamp = "purchased_at"
timestamp_format = "%Y-%m-%d %H:%M:%S"
anonymous_id = "card"
[context_traits]
email = "email"
[properties]
revenue = { column = "amount", type = "number" }
"#;

    #[tokio::test]
    async fn store_purchases_become_order_completed_events() {
        let csv = "receipt_id,purchased_at,email,card,amount\n\
                   r1,2026-11-01 10:00:00, Jane@X.org ,,19.90\n\
                   r2,2026-11-01 11:00:00,,,5\n\
                   r3,2026-11-01 12:00:00,bob@y.org,,abc\n\
                   r4,2026-11-01 12:00:00,bob@y.org,c-9\n\
                   r5,2026-11-02 09:30:00,,c-1,7\n";
        let mapping = CsvMapping::from_toml(MAPPING).unwrap();
        let mut sink = VecSink::default();
        read_csv(csv.as_bytes(), "s.csv", &mapping, "store", 5, &mut sink)
            .await
            .unwrap();
        let ids: Vec<&str> = sink.events.iter().map(|e| e.message_id.as_str()).collect();
        assert_eq!(ids, vec!["r1", "r5"]);
        // r2 has no identifier at all; r3 a bad amount; r4 only 4 fields.
        let lines: Vec<i64> = sink.rejects.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![3, 4, 5]);
        assert!(
            sink.rejects[0]
                .reason
                .contains("userId or anonymousId, email or phone"),
            "{:?}",
            sink.rejects[0]
        );
        assert!(
            sink.rejects[1].reason.contains("column `amount`"),
            "{:?}",
            sink.rejects[1]
        );
        assert!(
            sink.rejects[2].reason.contains("4 fields"),
            "{:?}",
            sink.rejects[2]
        );
        assert_eq!(sink.events[0].email.as_deref(), Some("jane@x.org"));
        assert_eq!(sink.events[0].revenue, Some(19.9));
        let e = &sink.events[1];
        assert_eq!(e.revenue, Some(7.0));
        assert_eq!(e.event.as_deref(), Some("Order Completed"));
        assert_eq!(e.source, "store");
    }

    #[tokio::test]
    async fn header_missing_a_mapped_column_stops_before_loading() {
        let mapping = CsvMapping::from_toml(MAPPING).unwrap();
        let mut sink = VecSink::default();
        let err = read_csv(
            "a,b\n1,2\n".as_bytes(),
            "s.csv",
            &mapping,
            "s",
            0,
            &mut sink,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("receipt_id"), "{err}");
        assert!(sink.events.is_empty());
    }
}
