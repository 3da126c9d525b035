//! One tracking request, from body bytes to validated rows: no HTTP types
//! here, so every rule is testable on its own.
//!
//! ```text
//!  body ─▶ gunzip (bounded) ─▶ top-level scan: batch elements as raw slices,
//!          sentAt, writeKey, context, integrations
//!       ─▶ each message: size limit ─▶ parse_event_str (JSON validated once,
//!          nested objects kept as text, batch context shared, clock skew
//!          corrected) ─▶ EventRow       (or QuarantineRow with the reason)
//! ```

use std::io::Read;

use keystone_core::event::{
    ClockSkew, EventRow, EventType, ParseOptions, parse_event_str, parse_timestamp,
};
use keystone_core::json::{self, Kind};
use keystone_core::schema::QuarantineRow;
use serde_json::Value;

/// An error answered to the client: status, a stable code, a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: 401,
            code: "unauthorized",
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn unavailable(message: impl Into<String>, retry_after: u64) -> Self {
        Self {
            status: 503,
            code: "unavailable",
            message: message.into(),
            retry_after: Some(retry_after),
        }
    }

    /// The JSON body `{code, message}`.
    pub fn body(&self) -> String {
        serde_json::json!({"code": self.code, "message": self.message}).to_string()
    }
}

/// Which endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/batch` or `/v1/b`.
    Batch,
    /// `/v1/track`, `/v1/t`, …: one message of that type.
    Single(EventType),
}

impl Endpoint {
    /// The endpoint of the path segment after `/v1/`.
    pub fn from_path(name: &str) -> Option<Self> {
        let t = match name {
            "batch" | "b" | "import" => return Some(Self::Batch),
            "identify" | "i" => EventType::Identify,
            "track" | "t" => EventType::Track,
            "page" | "p" => EventType::Page,
            "screen" | "s" => EventType::Screen,
            "group" | "g" => EventType::Group,
            "alias" | "a" => EventType::Alias,
            _ => return None,
        };
        Some(Self::Single(t))
    }
}

/// Limits applied to a request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_event_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_batch_events: usize,
}

/// Undo `Content-Encoding: gzip`, reading at most `limit` bytes of output.
pub fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit + 1));
    flate2::read::MultiGzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            ApiError::bad_request(
                "invalid_gzip",
                format!("the gzip body cannot be decompressed: {e}"),
            )
        })?;
    if out.len() > limit {
        return Err(ApiError::bad_request(
            "body_too_large",
            format!("the body decompresses to more than {limit} bytes"),
        ));
    }
    Ok(out)
}

/// A request body split into its messages, before validation.
#[derive(Debug)]
pub struct Envelope<'a> {
    /// Raw JSON text of each message.
    pub messages: Vec<&'a str>,
    /// `writeKey` from the body (batch level, or inside a single message).
    pub write_key: Option<String>,
    /// Batch-level `sentAt` (µs).
    pub sent_at: Option<i64>,
    /// Batch-level `context` and `integrations` (raw JSON objects), given to
    /// messages lacking them.
    pub context: Option<&'a str>,
    pub integrations: Option<&'a str>,
}

/// Split `body` (already decompressed) as `endpoint` expects it.
pub fn envelope<'a>(
    body: &'a [u8],
    endpoint: Endpoint,
    limits: &Limits,
) -> Result<Envelope<'a>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not UTF-8 (byte {})", e.valid_up_to()),
        )
    })?;
    let fields = scan::object(text).map_err(|e| ApiError::bad_request("invalid_json", e))?;
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let small = |name: &str| -> Result<Option<Value>, ApiError> {
        field(name)
            .map(|raw| {
                serde_json::from_str::<Value>(raw)
                    .map_err(|e| ApiError::bad_request("invalid_json", format!("`{name}`: {e}")))
            })
            .transpose()
    };
    let write_key = match small("writeKey")? {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let sent_at = match small("sentAt")? {
        Some(Value::String(s)) => parse_timestamp(&s),
        _ => None,
    };
    match endpoint {
        Endpoint::Single(_) => Ok(Envelope {
            messages: vec![text.trim()],
            write_key,
            sent_at,
            context: None,
            integrations: None,
        }),
        Endpoint::Batch => {
            let raw = field("batch").ok_or_else(|| {
                ApiError::bad_request("invalid_batch", "the body has no `batch` array")
            })?;
            let messages = scan::array(raw)
                .map_err(|e| ApiError::bad_request("invalid_batch", format!("`batch`: {e}")))?;
            if messages.len() > limits.max_batch_events {
                return Err(ApiError::bad_request(
                    "batch_too_large",
                    format!(
                        "the batch has {} events, over the limit of {}",
                        messages.len(),
                        limits.max_batch_events
                    ),
                ));
            }
            Ok(Envelope {
                messages,
                write_key,
                sent_at,
                context: shared_object(field("context"))?,
                integrations: shared_object(field("integrations"))?,
            })
        }
    }
}

/// A batch-level object shared with the messages, checked to be valid JSON;
/// anything but an object is ignored (as before the scanner kept raw text).
fn shared_object(raw: Option<&str>) -> Result<Option<&str>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    let raw = json::value(raw)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("shared member: {e}")))?;
    Ok((Kind::of(raw) == Kind::Object).then_some(raw))
}

/// What a request carried, validated.
#[derive(Debug, Default)]
pub struct Validated {
    pub rows: Vec<EventRow>,
    pub rejects: Vec<QuarantineRow>,
}

/// Where a request came from, for the rows it produces.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    /// The write key's name: the `source` column.
    pub source: &'a str,
    /// E.g. `http /v1/batch`: the `file` column of quarantine rows.
    pub file: &'a str,
    pub received_at: i64,
}

/// Largest raw text kept in a quarantine row.
const MAX_RAW_KEPT: usize = 64 * 1024;

/// Validate every message of `env`; bad ones become quarantine rows.
pub fn validate(
    env: &Envelope<'_>,
    endpoint: Endpoint,
    origin: &Origin<'_>,
    limits: &Limits,
) -> Validated {
    let mut out = Validated {
        rows: Vec::with_capacity(env.messages.len()),
        rejects: Vec::new(),
    };
    // What every message of the request lacks is taken from here.
    let type_default = match endpoint {
        Endpoint::Single(t) => Some(format!("\"{}\"", t.as_str())),
        Endpoint::Batch => None,
    };
    let defaults: Vec<(&str, &str)> = [
        ("type", type_default.as_deref()),
        ("context", env.context),
        ("integrations", env.integrations),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key, value?)))
    .collect();
    for (i, raw) in env.messages.iter().enumerate() {
        match validate_one(raw, env, &defaults, origin, limits) {
            Ok(row) => out.rows.push(row),
            Err(reason) => {
                let raw_kept = if raw.len() > MAX_RAW_KEPT {
                    let mut end = MAX_RAW_KEPT;
                    while !raw.is_char_boundary(end) {
                        end -= 1;
                    }
                    format!("{}…[truncated]", &raw[..end])
                } else {
                    raw.to_string()
                };
                out.rejects.push(QuarantineRow {
                    source: origin.source.to_string(),
                    file: origin.file.to_string(),
                    line: i as i64 + 1,
                    raw: raw_kept,
                    reason: format!("event {}: {reason}", i + 1),
                    received_at: origin.received_at,
                });
            }
        }
    }
    out
}

fn validate_one(
    raw: &str,
    env: &Envelope<'_>,
    defaults: &[(&str, &str)],
    origin: &Origin<'_>,
    limits: &Limits,
) -> Result<EventRow, String> {
    if raw.len() > limits.max_event_bytes {
        return Err(format!(
            "the event is {} bytes, over the limit of {} bytes",
            raw.len(),
            limits.max_event_bytes
        ));
    }
    let fallback = || keystone_ingest::content_message_id(origin.source, raw.as_bytes());
    let opts = ParseOptions {
        defaults,
        clock_skew: ClockSkew::Correct {
            batch_sent_at: env.sent_at,
        },
        ..ParseOptions::new(origin.source, origin.received_at, &fallback)
    };
    parse_event_str(raw, &opts).map_err(|e| match e {
        keystone_core::Error::InvalidJson(m) => format!("invalid JSON: {m}"),
        other => other.to_string(),
    })
}

/// A minimal scanner that finds the spans of a JSON object's members and an
/// array's elements without building them; serde_json validates each span
/// afterwards. Only structure is checked here (strings, nesting).
mod scan {
    fn skip_ws(b: &[u8], mut i: usize) -> usize {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    }

    fn string_end(b: &[u8], start: usize) -> Result<usize, String> {
        let mut i = start + 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => return Ok(i + 1),
                _ => i += 1,
            }
        }
        Err(format!("unterminated string starting at byte {start}"))
    }

    /// End (exclusive) of the value starting at `start`.
    fn value_end(b: &[u8], start: usize) -> Result<usize, String> {
        match b.get(start) {
            None => Err("unexpected end of input".into()),
            Some(b'"') => string_end(b, start),
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                let mut i = start;
                while i < b.len() {
                    match b[i] {
                        b'"' => {
                            i = string_end(b, i)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Ok(i + 1);
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                Err(format!("unclosed value starting at byte {start}"))
            }
            Some(_) => {
                let mut i = start;
                while i < b.len()
                    && !matches!(b[i], b',' | b'}' | b']')
                    && !b[i].is_ascii_whitespace()
                {
                    i += 1;
                }
                if i == start {
                    return Err(format!("expected a value at byte {start}"));
                }
                Ok(i)
            }
        }
    }

    /// The members of the object `text`: (key, raw value).
    pub fn object(text: &str) -> Result<Vec<(String, &str)>, String> {
        let b = text.as_bytes();
        let mut i = skip_ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return Err("expected a JSON object".into());
        }
        i = skip_ws(b, i + 1);
        let mut out = Vec::new();
        if b.get(i) == Some(&b'}') {
            return trailing(b, i + 1).map(|()| out);
        }
        loop {
            if b.get(i) != Some(&b'"') {
                return Err(format!("expected a key at byte {i}"));
            }
            let kend = string_end(b, i)?;
            let key: String = serde_json::from_str(&text[i..kend]).map_err(|e| e.to_string())?;
            i = skip_ws(b, kend);
            if b.get(i) != Some(&b':') {
                return Err(format!("expected `:` at byte {i}"));
            }
            i = skip_ws(b, i + 1);
            let vend = value_end(b, i)?;
            out.push((key, &text[i..vend]));
            i = skip_ws(b, vend);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b'}') => return trailing(b, i + 1).map(|()| out),
                _ => return Err(format!("expected `,` or `}}` at byte {i}")),
            }
        }
    }

    /// The elements of the array `text`, as raw slices.
    pub fn array(text: &str) -> Result<Vec<&str>, String> {
        let b = text.as_bytes();
        let mut i = skip_ws(b, 0);
        if b.get(i) != Some(&b'[') {
            return Err("expected an array".into());
        }
        i = skip_ws(b, i + 1);
        let mut out = Vec::new();
        if b.get(i) == Some(&b']') {
            return Ok(out);
        }
        loop {
            let end = value_end(b, i)?;
            out.push(&text[i..end]);
            i = skip_ws(b, end);
            match b.get(i) {
                Some(b',') => i = skip_ws(b, i + 1),
                Some(b']') => return Ok(out),
                _ => return Err(format!("expected `,` or `]` at byte {i}")),
            }
        }
    }

    fn trailing(b: &[u8], i: usize) -> Result<(), String> {
        let j = skip_ws(b, i);
        if j == b.len() {
            Ok(())
        } else {
            Err(format!("unexpected text after the object at byte {j}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_event_bytes: 300,
        max_batch_bytes: 10_000,
        max_batch_events: 4,
    };

    fn origin() -> Origin<'static> {
        Origin {
            source: "web",
            file: "http /v1/batch",
            received_at: 1_700_000_000_000_000,
        }
    }

    #[test]
    fn a_batch_is_split_with_its_shared_fields() {
        let body = br#" {"batch":[{"type":"track","event":"A","userId":"u","messageId":"m1"},
            {"type":"identify","userId":"u","traits":{"email":" Jo@X.org "}}],
            "sentAt":"2023-11-14T22:13:20Z","writeKey":"ks_1","context":{"ip":"1.2.3.4"}} "#;
        let env = envelope(body, Endpoint::Batch, &LIMITS).expect("envelope");
        assert_eq!(env.messages.len(), 2);
        assert_eq!(env.write_key.as_deref(), Some("ks_1"));
        assert_eq!(env.sent_at, Some(1_700_000_000_000_000));
        let v = validate(&env, Endpoint::Batch, &origin(), &LIMITS);
        assert!(v.rejects.is_empty(), "{:?}", v.rejects);
        assert_eq!(v.rows[0].message_id, "m1");
        assert_eq!(
            v.rows[0].ip.as_deref(),
            Some("1.2.3.4"),
            "batch context shared"
        );
        assert_eq!(v.rows[1].email.as_deref(), Some("jo@x.org"));
        assert_eq!(v.rows[1].source, "web");
        // No messageId: a stable one from the content, so a retry dedupes.
        let again = validate(&env, Endpoint::Batch, &origin(), &LIMITS);
        assert_eq!(v.rows[1].message_id, again.rows[1].message_id);
    }

    #[test]
    fn bad_events_are_quarantined_and_the_rest_kept() {
        let big = format!(
            r#"{{"type":"track","event":"Big","userId":"u","properties":{{"x":"{}"}}}}"#,
            "y".repeat(400)
        );
        let body = format!(
            r#"{{"batch":[{{"type":"track","userId":"u"}}, {big}, 7, {{"type":"page","anonymousId":"a"}}]}}"#
        );
        let env = envelope(body.as_bytes(), Endpoint::Batch, &LIMITS).expect("envelope");
        let v = validate(&env, Endpoint::Batch, &origin(), &LIMITS);
        assert_eq!(v.rows.len(), 1);
        let reasons: Vec<_> = v
            .rejects
            .iter()
            .map(|r| (r.line, r.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(
            reasons[0].1.contains("event 1") && reasons[0].1.contains("event"),
            "{reasons:?}"
        );
        assert!(
            reasons[1].1.contains("over the limit of 300 bytes"),
            "{reasons:?}"
        );
        assert!(
            reasons[2].1.contains("expected a JSON object"),
            "{reasons:?}"
        );
        assert_eq!(v.rejects[1].line, 2);
    }

    #[test]
    fn request_level_errors() {
        let too_many = format!(r#"{{"batch":[{}]}}"#, ["{}"; 5].join(","));
        let cases: [(&[u8], &str); 5] = [
            (b"{not json", "invalid_json"),
            (b"[1,2]", "invalid_json"),
            (br#"{"sentAt":"x"}"#, "invalid_batch"),
            (br#"{"batch":{"a":1}}"#, "invalid_batch"),
            (too_many.as_bytes(), "batch_too_large"),
        ];
        for (body, code) in cases {
            let err = envelope(body, Endpoint::Batch, &LIMITS).expect_err("error");
            assert_eq!((err.status, err.code), (400, code), "{}", err.message);
        }
        assert!(envelope(b"{} trailing", Endpoint::Batch, &LIMITS).is_err());
        assert!(envelope(b"\xff{}", Endpoint::Single(EventType::Track), &LIMITS).is_err());
    }

    #[test]
    fn single_messages_take_the_type_of_their_path() {
        let body = br#"{"event":"Signed Up","userId":"u1","writeKey":"ks_9","timestamp":"2023-11-14T22:13:20Z"}"#;
        let ep = Endpoint::from_path("t").expect("t");
        let env = envelope(body, ep, &LIMITS).expect("envelope");
        assert_eq!(env.write_key.as_deref(), Some("ks_9"));
        let v = validate(&env, ep, &origin(), &LIMITS);
        assert_eq!(v.rows[0].event_type, "track");
        assert_eq!(v.rows[0].event.as_deref(), Some("Signed Up"));
        assert_eq!(Endpoint::from_path("batch"), Some(Endpoint::Batch));
        assert_eq!(Endpoint::from_path("nope"), None);
    }

    #[test]
    fn clock_skew_is_corrected_with_sent_at() {
        // The device is 10 days late; the event happened 1 h before sending.
        let hour = 3_600_000_000i64;
        let received = origin().received_at;
        let sent = received - 240 * hour;
        let client = sent - hour;
        let iso = |us: i64| {
            chrono::DateTime::from_timestamp_micros(us)
                .expect("time")
                .to_rfc3339()
        };
        let body = format!(
            r#"{{"batch":[{{"type":"track","event":"E","userId":"u","timestamp":"{}"}},{{"type":"track","event":"F","userId":"u"}}],"sentAt":"{}"}}"#,
            iso(client),
            iso(sent)
        );
        let env = envelope(body.as_bytes(), Endpoint::Batch, &LIMITS).expect("envelope");
        let v = validate(&env, Endpoint::Batch, &origin(), &LIMITS);
        assert_eq!(v.rows[0].timestamp, received - hour);
        assert_eq!(v.rows[0].original_timestamp, Some(client));
        assert_eq!(v.rows[0].sent_at, Some(sent));
        // No client time: the receive time, uncorrected.
        assert_eq!(v.rows[1].timestamp, received);
    }

    #[test]
    fn gzip_is_bounded() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b' '; 1 << 20]).expect("write");
        let bomb = enc.finish().expect("finish");
        assert!(bomb.len() < 10_000);
        let err = gunzip(&bomb, 10_000).expect_err("bomb");
        assert_eq!(err.code, "body_too_large");
        assert_eq!(
            gunzip(b"not gzip", 100).expect_err("bad").code,
            "invalid_gzip"
        );
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"{\"a\":1}").expect("write");
        assert_eq!(
            gunzip(&enc.finish().expect("gz"), 100).expect("ok"),
            b"{\"a\":1}"
        );
    }

    #[test]
    fn scanner_handles_strings_with_brackets_and_escapes() {
        let text = r#"{"batch":[{"a":"]}\"[{"},[1,[2]],"x",null , 3.5e2],"k":true}"#;
        let fields = scan::object(text).expect("object");
        assert_eq!(fields.len(), 2);
        let items = scan::array(fields[0].1).expect("array");
        assert_eq!(
            items,
            vec![r#"{"a":"]}\"[{"}"#, "[1,[2]]", "\"x\"", "null", "3.5e2"]
        );
    }
}
