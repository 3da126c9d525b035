//! The Segment-spec event model.
//!
//! [`parse_event`] reads one message (`identify`, `track`, `page`, `screen`,
//! `group`, `alias`) as the Segment HTTP API and its SDKs send it, validates
//! it, and returns an [`EventRow`]: the spec's fields, the full objects kept as
//! JSON text (nothing is lost), and the common fields promoted to typed
//! columns so that queries and identity resolution never parse JSON.
//!
//! Validation rules (each failure names the field):
//! * the message is a JSON object with a known `type`;
//! * `userId` or `anonymousId` is present (strings; integers are accepted and
//!   turned into strings, as Segment does);
//! * `track` has an `event`, `group` a `groupId`, `alias` a `previousId`
//!   and a `userId`;
//! * `timestamp`, `originalTimestamp`, `sentAt` are ISO-8601 strings;
//! * `context`, `properties`, `traits`, `integrations` are objects;
//! * `properties.revenue` (or `total`) is a number or a numeric string.
//!
//! A missing `timestamp` defaults to the time the event was received, and a
//! missing `messageId` to a stable id derived from the caller (see
//! [`ParseOptions::fallback_message_id`]), so loading the same line twice
//! gives the same id.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;

use crate::identifier::{normalize_email, normalize_phone};
use crate::json::{self, Form, Kind, Members};
use crate::{Error, Result};

/// The six Segment message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl EventType {
    /// Every type, in spec order.
    pub const ALL: [EventType; 6] = [
        Self::Identify,
        Self::Track,
        Self::Page,
        Self::Screen,
        Self::Group,
        Self::Alias,
    ];

    /// The lower-case name used on the wire and in the `type` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identify => "identify",
            Self::Track => "track",
            Self::Page => "page",
            Self::Screen => "screen",
            Self::Group => "group",
            Self::Alias => "alias",
        }
    }

    /// Parse a wire name (`"track"`). Unknown names give `None`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One event, ready to become a row of the `events` table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventRow {
    pub message_id: String,
    pub event_type: String,
    pub event: Option<String>,
    pub name: Option<String>,
    pub anonymous_id: Option<String>,
    pub user_id: Option<String>,
    pub previous_id: Option<String>,
    pub group_id: Option<String>,
    /// Microseconds since the epoch, UTC.
    pub timestamp: i64,
    pub original_timestamp: Option<i64>,
    pub sent_at: Option<i64>,
    pub received_at: i64,
    pub source: String,
    pub context: Option<String>,
    pub properties: Option<String>,
    pub traits: Option<String>,
    pub integrations: Option<String>,
    // Promoted columns.
    pub email: Option<String>,
    pub phone: Option<String>,
    pub revenue: Option<f64>,
    pub currency: Option<String>,
    pub order_id: Option<String>,
    pub product_id: Option<String>,
    pub category: Option<String>,
    pub page_url: Option<String>,
    pub page_path: Option<String>,
    pub referrer: Option<String>,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub locale: Option<String>,
    pub device_id: Option<String>,
}

impl EventRow {
    /// Days since the epoch of `timestamp`: the `event_date` partition.
    pub fn event_date(&self) -> i32 {
        let days = self.timestamp.div_euclid(86_400_000_000);
        i32::try_from(days).unwrap_or(if days < 0 { i32::MIN } else { i32::MAX })
    }
}

/// What the caller knows that the message itself does not carry.
#[derive(Clone)]
pub struct ParseOptions<'a> {
    /// The `source` column (file name, `--source`, write key name).
    pub source: &'a str,
    /// When the event reached Keystone (µs since the epoch).
    pub received_at: i64,
    /// `messageId` to use when the message has none.
    pub fallback_message_id: &'a dyn Fn() -> String,
    /// Offline records (store purchases, CRM rows) may be known by an email
    /// or phone trait alone, without `userId`/`anonymousId`. Off for SDK
    /// traffic and NDJSON, where the Segment rule applies.
    pub offline_identity: bool,
    /// Members a message lacks are taken from here, as raw JSON text: the
    /// collector's batch-level `context` and `integrations`, and the `type`
    /// of a single-message endpoint (`/v1/track`).
    pub defaults: &'a [(&'a str, &'a str)],
    /// Segment's clock-skew correction, applied by the collector (see
    /// [`ClockSkew`]).
    pub clock_skew: ClockSkew,
}

impl<'a> ParseOptions<'a> {
    /// Options with no defaults and no clock-skew correction.
    pub fn new(
        source: &'a str,
        received_at: i64,
        fallback_message_id: &'a dyn Fn() -> String,
    ) -> Self {
        Self {
            source,
            received_at,
            fallback_message_id,
            offline_identity: false,
            defaults: &[],
            clock_skew: ClockSkew::Keep,
        }
    }
}

/// Whether the client's clock is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockSkew {
    /// Keep `timestamp` as sent (files, batch loads).
    Keep,
    /// Segment's rule for live traffic: a device's clock may be wrong, but
    /// the gap between its `timestamp` and its `sentAt` is right, so
    /// `timestamp = receivedAt − (sentAt − client timestamp)`; the client's
    /// own value is kept in `original_timestamp`. `sentAt` is the message's,
    /// else this batch-level one.
    Correct { batch_sent_at: Option<i64> },
}

/// Parse a JSON text into an [`EventRow`]: the message is validated as JSON
/// once and its nested objects are kept as their (compacted) text, never
/// built into a tree.
pub fn parse_event_str(text: &str, opts: &ParseOptions<'_>) -> Result<EventRow> {
    let msg = match json::object(text) {
        Ok(members) => members,
        Err(e) => {
            return Err(match json::value(text) {
                Ok(raw) => Error::InvalidJson(format!(
                    "expected a JSON object, found {}",
                    Kind::of(raw).describe()
                )),
                Err(_) => Error::InvalidJson(e.to_string()),
            });
        }
    };
    parse_members(&msg, opts)
}

/// Validate a Segment message given as a `serde_json` value (mapped CSV
/// rows). Printed to text and read like any other message.
pub fn parse_event(value: Value, opts: &ParseOptions<'_>) -> Result<EventRow> {
    let text = serde_json::to_string(&value).map_err(|e| Error::InvalidJson(e.to_string()))?;
    parse_event_str(&text, opts)
}

/// The members of a nested object, already validated as part of its message.
fn members_of(raw: Option<&str>) -> Members<'_> {
    raw.and_then(|r| json::object(r).ok()).unwrap_or_default()
}

/// A message's members, falling back to the caller's defaults.
struct Message<'m, 'a> {
    members: &'m Members<'a>,
    defaults: &'m [(&'m str, &'m str)],
}

impl<'m> Message<'m, '_> {
    fn get(&self, key: &str) -> Option<&'m str> {
        self.members.get(key).or_else(|| self.default(key))
    }

    fn default(&self, key: &str) -> Option<&'m str> {
        self.defaults
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    /// How the value of `key` is written (a default is scanned to tell).
    fn form(&self, key: &str) -> Form {
        match self.members.member(key) {
            Some((_, form)) => form,
            None => self.default(key).map_or(Form::Compact, json::form),
        }
    }
}

fn parse_members(members: &Members<'_>, opts: &ParseOptions<'_>) -> Result<EventRow> {
    let msg = Message {
        members,
        defaults: opts.defaults,
    };
    let type_name = match msg.get("type") {
        Some(raw) if Kind::of(raw) == Kind::String => json::string(raw),
        Some(other) => return Err(wrong_type("type", "a string", other)),
        None => return Err(Error::invalid("type", "is missing")),
    };
    let event_type = EventType::parse(&type_name).ok_or_else(|| {
        Error::invalid(
            "type",
            format!(
                "is not a Segment type: {type_name:?} (expected identify, track, page, screen, group or alias)"
            ),
        )
    })?;

    let user_id = id_field(msg.get("userId"), "userId")?;
    let anonymous_id = id_field(msg.get("anonymousId"), "anonymousId")?;
    let previous_id = id_field(msg.get("previousId"), "previousId")?;
    let group_id = id_field(msg.get("groupId"), "groupId")?;
    let event = str_field(msg.get("event"), "event")?;
    let name = str_field(msg.get("name"), "name")?;
    match event_type {
        EventType::Track if event.as_deref().is_none_or(str::is_empty) => {
            return Err(Error::invalid(
                "event",
                "is missing: a track call names its event",
            ));
        }
        EventType::Group if group_id.is_none() => {
            return Err(Error::invalid(
                "groupId",
                "is missing: a group call needs it",
            ));
        }
        EventType::Alias if previous_id.is_none() || user_id.is_none() => {
            let field = if previous_id.is_none() {
                "previousId"
            } else {
                "userId"
            };
            return Err(Error::invalid(
                field,
                "is missing: an alias call needs previousId and userId",
            ));
        }
        _ => {}
    }

    let message_id = match id_field(msg.get("messageId"), "messageId")? {
        Some(id) if id.len() > 100 => {
            return Err(Error::invalid("messageId", "is longer than 100 characters"));
        }
        Some(id) => id,
        None => (opts.fallback_message_id)(),
    };

    let original_timestamp = time_field(msg.get("originalTimestamp"), "originalTimestamp")?;
    let client_timestamp = time_field(msg.get("timestamp"), "timestamp")?;
    let sent_at = time_field(msg.get("sentAt"), "sentAt")?;

    let context_raw = object_field(msg.get("context"), "context")?;
    let properties_raw = object_field(msg.get("properties"), "properties")?;
    let traits_raw = object_field(msg.get("traits"), "traits")?;
    let integrations_raw = object_field(msg.get("integrations"), "integrations")?;
    let context = members_of(context_raw);
    let properties = members_of(properties_raw);
    let traits = members_of(traits_raw);

    let context_traits = match context.get("traits") {
        None => Members::default(),
        Some(raw) if Kind::of(raw) == Kind::Null => Members::default(),
        Some(raw) if Kind::of(raw) == Kind::Object => members_of(Some(raw)),
        Some(other) => return Err(wrong_type("context.traits", "an object", other)),
    };
    let trait_str = |key: &str| -> Result<Option<String>> {
        match nested_str(&traits, key, "traits")? {
            Some(v) => Ok(Some(v)),
            None => nested_str(&context_traits, key, "context.traits"),
        }
    };
    let email = trait_str("email")?
        .map(|raw| normalize_email(&raw).unwrap_or_else(|| raw.trim().to_string()));
    let phone = trait_str("phone")?
        .map(|raw| normalize_phone(&raw).unwrap_or_else(|| raw.trim().to_string()));

    if user_id.is_none() && anonymous_id.is_none() {
        let offline_id = opts.offline_identity && (email.is_some() || phone.is_some());
        if !offline_id {
            let also = if opts.offline_identity {
                ", email or phone"
            } else {
                ""
            };
            return Err(Error::invalid(
                "userId",
                format!("is missing: every message needs userId or anonymousId{also}"),
            ));
        }
    }

    let revenue = match number_field(&properties, "revenue")? {
        Some(v) => Some(v),
        None => number_field(&properties, "total")?,
    };
    let sub_object = |key: &str| match context.get(key) {
        Some(raw) if Kind::of(raw) == Kind::Object => members_of(Some(raw)),
        _ => Members::default(),
    };
    let page = sub_object("page");
    let campaign = sub_object("campaign");
    let device = sub_object("device");
    let first_of = |a: Option<String>, b: Option<String>| a.or(b);
    // The stored text: as sent, compacted when it has whitespace, printed
    // from a map when an object in it has escaped or repeated keys.
    let stored = |raw: Option<&str>, key: &str| {
        raw.map(|r| match msg.form(key) {
            Form::Compact => r.to_string(),
            Form::Spaced => json::compact(r).into_owned(),
            Form::Irregular => serde_json::from_str::<Value>(r)
                .map(|v| v.to_string())
                .unwrap_or_else(|_| json::compact(r).into_owned()),
        })
    };

    let mut timestamp = client_timestamp
        .or(original_timestamp)
        .unwrap_or(opts.received_at);
    let mut original_timestamp = original_timestamp;
    let mut sent_at = sent_at;
    if let ClockSkew::Correct { batch_sent_at } = opts.clock_skew
        && let Some(sent) = sent_at.or(batch_sent_at)
    {
        sent_at = Some(sent);
        if client_timestamp.is_some() || original_timestamp.is_some() {
            original_timestamp.get_or_insert(timestamp);
            timestamp = opts
                .received_at
                .saturating_add(timestamp.saturating_sub(sent));
        }
    }

    Ok(EventRow {
        message_id,
        event_type: event_type.as_str().to_string(),
        event,
        name,
        anonymous_id,
        user_id,
        previous_id,
        group_id,
        timestamp,
        original_timestamp,
        sent_at,
        received_at: opts.received_at,
        source: opts.source.to_string(),
        email,
        phone,
        revenue,
        currency: loose_str(&properties, "currency"),
        order_id: first_of(
            loose_str(&properties, "order_id"),
            loose_str(&properties, "orderId"),
        ),
        product_id: first_of(
            loose_str(&properties, "product_id"),
            loose_str(&properties, "productId"),
        ),
        category: loose_str(&properties, "category"),
        page_url: first_of(loose_str(&page, "url"), loose_str(&properties, "url")),
        page_path: first_of(loose_str(&page, "path"), loose_str(&properties, "path")),
        referrer: first_of(
            loose_str(&page, "referrer"),
            loose_str(&properties, "referrer"),
        ),
        utm_source: loose_str(&campaign, "source"),
        utm_medium: loose_str(&campaign, "medium"),
        utm_campaign: loose_str(&campaign, "name"),
        ip: loose_str(&context, "ip"),
        user_agent: loose_str(&context, "userAgent"),
        locale: loose_str(&context, "locale"),
        device_id: loose_str(&device, "id"),
        context: stored(context_raw, "context"),
        properties: stored(properties_raw, "properties"),
        traits: stored(traits_raw, "traits"),
        integrations: stored(integrations_raw, "integrations"),
    })
}

/// Parse an ISO-8601 / RFC 3339 timestamp into µs since the epoch. A value
/// without an offset is taken as UTC.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc).timestamp_micros());
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc).timestamp_micros());
        }
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    None
}

fn wrong_type(field: &str, expected: &str, found: &str) -> Error {
    Error::invalid(
        field,
        format!("must be {expected}, found {}", Kind::of(found).describe()),
    )
}

/// An identifier: string, or integer turned into a string; empty means absent.
fn id_field(raw: Option<&str>, key: &str) -> Result<Option<String>> {
    let Some(raw) = raw else { return Ok(None) };
    match Kind::of(raw) {
        Kind::Null => Ok(None),
        Kind::String => {
            let s = json::string(raw);
            Ok((!s.trim().is_empty()).then(|| s.into_owned()))
        }
        Kind::Number => {
            let n = json::number(raw);
            if n.is_integer() {
                Ok(Some(n.to_string()))
            } else {
                Err(wrong_type(key, "a string", raw))
            }
        }
        _ => Err(wrong_type(key, "a string", raw)),
    }
}

fn str_field(raw: Option<&str>, key: &str) -> Result<Option<String>> {
    let Some(raw) = raw else { return Ok(None) };
    match Kind::of(raw) {
        Kind::Null => Ok(None),
        Kind::String => Ok(Some(json::string(raw).into_owned())),
        _ => Err(wrong_type(key, "a string", raw)),
    }
}

fn time_field(raw: Option<&str>, key: &str) -> Result<Option<i64>> {
    let Some(raw) = raw else { return Ok(None) };
    match Kind::of(raw) {
        Kind::Null => Ok(None),
        Kind::String => {
            let s = json::string(raw);
            parse_timestamp(&s)
                .map(Some)
                .ok_or_else(|| Error::invalid(key, format!("is not ISO-8601: {s:?}")))
        }
        _ => Err(wrong_type(key, "an ISO-8601 string", raw)),
    }
}

/// The raw text of an object member, `None` when absent or null.
fn object_field<'a>(raw: Option<&'a str>, key: &str) -> Result<Option<&'a str>> {
    let Some(raw) = raw else { return Ok(None) };
    match Kind::of(raw) {
        Kind::Null => Ok(None),
        Kind::Object => Ok(Some(raw)),
        _ => Err(wrong_type(key, "an object", raw)),
    }
}

/// A string inside an object that the identity rules rely on: a wrong type is an error.
fn nested_str(obj: &Members<'_>, key: &str, path: &str) -> Result<Option<String>> {
    let Some(raw) = obj.get(key) else {
        return Ok(None);
    };
    match Kind::of(raw) {
        Kind::Null => Ok(None),
        Kind::String => {
            let s = json::string(raw);
            Ok((!s.trim().is_empty()).then(|| s.into_owned()))
        }
        Kind::Number if key == "phone" => Ok(Some(json::number(raw).to_string())),
        _ => Err(wrong_type(&format!("{path}.{key}"), "a string", raw)),
    }
}

/// A descriptive string: numbers are rendered, other types ignored (kept in the JSON).
fn loose_str(obj: &Members<'_>, key: &str) -> Option<String> {
    let raw = obj.get(key)?;
    match Kind::of(raw) {
        Kind::String => {
            let s = json::string(raw);
            (!s.is_empty()).then(|| s.into_owned())
        }
        Kind::Number => Some(json::number(raw).to_string()),
        _ => None,
    }
}

fn number_field(obj: &Members<'_>, key: &str) -> Result<Option<f64>> {
    let Some(raw) = obj.get(key) else {
        return Ok(None);
    };
    match Kind::of(raw) {
        Kind::Null => Ok(None),
        Kind::Number => Ok(Some(json::number(raw).as_f64()).filter(|v| v.is_finite())),
        Kind::String => {
            let s = json::string(raw);
            s.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(Some)
                .ok_or_else(|| {
                    Error::invalid(
                        format!("properties.{key}"),
                        format!("is not a number: {s:?}"),
                    )
                })
        }
        _ => Err(wrong_type(&format!("properties.{key}"), "a number", raw)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts() -> ParseOptions<'static> {
        ParseOptions::new("test", 1_700_000_000_000_000, &|| "generated".to_string())
    }

    fn parse(v: Value) -> Result<EventRow> {
        parse_event(v, &opts())
    }

    #[test]
    fn track_promotes_ecommerce_fields() {
        let row = parse(json!({
            "type": "track", "event": "Order Completed", "userId": "u1",
            "messageId": "m1", "timestamp": "2026-11-01T10:00:00.123Z",
            "properties": {"order_id": "o1", "revenue": 42.5, "currency": "EUR", "category": "shoes"},
            "context": {"ip": "1.2.3.4", "traits": {"email": " Jane@X.org "},
                        "campaign": {"source": "news", "medium": "email", "name": "bf"},
                        "device": {"id": "d1"}, "page": {"url": "https://s/x", "path": "/x"}}
        }))
        .unwrap();
        assert_eq!(row.event_type, "track");
        assert_eq!(row.event.as_deref(), Some("Order Completed"));
        assert_eq!(row.revenue, Some(42.5));
        assert_eq!(row.order_id.as_deref(), Some("o1"));
        assert_eq!(row.email.as_deref(), Some("jane@x.org"));
        assert_eq!(row.utm_campaign.as_deref(), Some("bf"));
        assert_eq!(row.device_id.as_deref(), Some("d1"));
        assert_eq!(row.page_path.as_deref(), Some("/x"));
        assert_eq!(row.ip.as_deref(), Some("1.2.3.4"));
        assert_eq!(row.timestamp, 1_793_527_200_123_000);
        assert_eq!(row.received_at, 1_700_000_000_000_000);
        let props: Value = serde_json::from_str(row.properties.as_deref().unwrap()).unwrap();
        assert_eq!(props["currency"], "EUR");
    }

    #[test]
    fn missing_ids_are_rejected_naming_the_field() {
        let err = parse(json!({"type": "page"})).unwrap_err();
        assert!(err.to_string().contains("userId"), "{err}");
    }

    #[test]
    fn unknown_type_is_rejected() {
        let err = parse(json!({"type": "click", "userId": "u"})).unwrap_err();
        assert!(err.to_string().contains("\"click\""), "{err}");
    }

    #[test]
    fn wrong_json_types_name_the_field() {
        let cases = [
            (
                json!({"type": "track", "event": 3, "userId": "u"}),
                "`event` must be a string",
            ),
            (
                json!({"type": "page", "userId": "u", "properties": []}),
                "`properties` must be an object",
            ),
            (
                json!({"type": "page", "userId": true}),
                "`userId` must be a string",
            ),
            (
                json!({"type": "identify", "userId": "u", "traits": {"email": 5}}),
                "`traits.email`",
            ),
            (
                json!({"type": "track", "event": "x", "userId": "u", "properties": {"revenue": "abc"}}),
                "`properties.revenue` is not a number",
            ),
        ];
        for (input, expected) in cases {
            let err = parse(input.clone()).unwrap_err().to_string();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }

    #[test]
    fn bad_timestamp_is_rejected_with_its_value() {
        let err =
            parse(json!({"type": "page", "userId": "u", "timestamp": "2026-13-01"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`timestamp` is not ISO-8601: \"2026-13-01\""
        );
    }

    #[test]
    fn type_specific_requirements() {
        assert!(parse(json!({"type": "track", "userId": "u"})).is_err());
        assert!(parse(json!({"type": "group", "userId": "u"})).is_err());
        assert!(parse(json!({"type": "alias", "userId": "u"})).is_err());
        assert!(parse(json!({"type": "alias", "userId": "u", "previousId": "a"})).is_ok());
    }

    #[test]
    fn defaults_for_missing_timestamp_and_message_id() {
        let row =
            parse(json!({"type": "identify", "anonymousId": "a", "traits": {"email": "A@B.co"}}))
                .unwrap();
        assert_eq!(row.message_id, "generated");
        assert_eq!(row.timestamp, row.received_at);
        assert_eq!(row.email.as_deref(), Some("a@b.co"));
    }

    #[test]
    fn offline_records_may_be_known_by_email_alone() {
        let msg = json!({"type": "track", "event": "Order Completed", "context": {"traits": {"email": "A@b.co"}}});
        assert!(parse(msg.clone()).is_err());
        let offline = ParseOptions {
            offline_identity: true,
            ..opts()
        };
        let row = parse_event(msg, &offline).unwrap();
        assert_eq!(row.email.as_deref(), Some("a@b.co"));
        assert!(row.user_id.is_none() && row.anonymous_id.is_none());
    }

    #[test]
    fn nested_objects_are_stored_as_their_compact_text() {
        let text = r#"{"type":"track","event":"E","userId":"u",
            "properties":{ "b" : [1, 2.50, "x y\u00e9"], "a": {"é": null} },
            "context":{"ip":"1.2.3.4"}}"#;
        let row = parse_event_str(text, &opts()).unwrap();
        // As sent, minus the whitespace between tokens: key order, number
        // spelling and escapes in values are the client's.
        assert_eq!(
            row.properties.as_deref(),
            Some(r#"{"b":[1,2.50,"x y\u00e9"],"a":{"é":null}}"#)
        );
        assert_eq!(row.context.as_deref(), Some(r#"{"ip":"1.2.3.4"}"#));
        assert_eq!(row.ip.as_deref(), Some("1.2.3.4"));
        assert!(row.traits.is_none() && row.integrations.is_none());
    }

    #[test]
    fn escaped_or_repeated_keys_are_stored_as_the_promoted_columns_read_them() {
        let text = r#"{"type":"track","event":"E","userId":"u",
            "properties":{"revenue":10,"revenue":20},
            "context":{"caf\u00e9":1, "ip":"1.2.3.4"}}"#;
        let row = parse_event_str(text, &opts()).unwrap();
        assert_eq!(row.revenue, Some(20.0));
        assert_eq!(row.properties.as_deref(), Some(r#"{"revenue":20}"#));
        assert_eq!(row.context.as_deref(), Some(r#"{"café":1,"ip":"1.2.3.4"}"#));
    }

    #[test]
    fn defaults_fill_only_what_the_message_lacks() {
        let defaults = [
            ("type", r#""track""#),
            ("context", r#"{"ip":"9.9.9.9","locale":"fr-FR"}"#),
        ];
        let opts = ParseOptions {
            defaults: &defaults,
            ..opts()
        };
        let row = parse_event_str(r#"{"event":"E","userId":"u"}"#, &opts).unwrap();
        assert_eq!(row.event_type, "track");
        assert_eq!(row.locale.as_deref(), Some("fr-FR"));
        assert_eq!(row.context.as_deref(), Some(defaults[1].1));
        let own = parse_event_str(
            r#"{"type":"page","userId":"u","context":{"ip":"1.1.1.1"}}"#,
            &opts,
        )
        .unwrap();
        assert_eq!(own.event_type, "page");
        assert_eq!(own.ip.as_deref(), Some("1.1.1.1"));
        assert!(own.locale.is_none());
    }

    #[test]
    fn invalid_json_and_non_objects_are_named() {
        let err = parse_event_str(r#"{"type":"page","userId":"u",}"#, &opts()).unwrap_err();
        assert_eq!(err.to_string(), "invalid JSON: expected a key at byte 28");
        let err = parse_event_str("[1]", &opts()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid JSON: expected a JSON object, found an array"
        );
    }

    #[test]
    fn integer_user_id_becomes_a_string() {
        let row = parse(json!({"type": "identify", "userId": 12345})).unwrap();
        assert_eq!(row.user_id.as_deref(), Some("12345"));
    }

    #[test]
    fn timestamps_in_common_shapes() {
        let utc = parse_timestamp("2026-11-01T10:00:00Z").unwrap();
        assert_eq!(parse_timestamp("2026-11-01T11:00:00+01:00"), Some(utc));
        assert_eq!(parse_timestamp("2026-11-01 10:00:00"), Some(utc));
        assert_eq!(parse_timestamp("2026-11-01T10:00:00.000"), Some(utc));
        assert_eq!(parse_timestamp("yesterday"), None);
    }

    #[test]
    fn event_date_is_the_utc_day() {
        let row =
            parse(json!({"type": "page", "userId": "u", "timestamp": "1970-01-02T23:59:59Z"}))
                .unwrap();
        assert_eq!(row.event_date(), 1);
    }
}
