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
use serde_json::{Map, Value};

use crate::identifier::{normalize_email, normalize_phone};
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
}

/// Parse a JSON text into an [`EventRow`].
pub fn parse_event_str(text: &str, opts: &ParseOptions<'_>) -> Result<EventRow> {
    let value: Value = serde_json::from_str(text).map_err(|e| Error::InvalidJson(e.to_string()))?;
    parse_event(value, opts)
}

/// Validate a Segment message and turn it into an [`EventRow`].
pub fn parse_event(value: Value, opts: &ParseOptions<'_>) -> Result<EventRow> {
    let Value::Object(msg) = value else {
        return Err(Error::InvalidJson(format!(
            "expected a JSON object, found {}",
            json_kind(&value)
        )));
    };
    let type_name = match msg.get("type") {
        Some(Value::String(s)) => s.as_str(),
        Some(other) => return Err(wrong_type("type", "a string", other)),
        None => return Err(Error::invalid("type", "is missing")),
    };
    let event_type = EventType::parse(type_name).ok_or_else(|| {
        Error::invalid(
            "type",
            format!(
                "is not a Segment type: {type_name:?} (expected identify, track, page, screen, group or alias)"
            ),
        )
    })?;

    let user_id = id_field(&msg, "userId")?;
    let anonymous_id = id_field(&msg, "anonymousId")?;
    let previous_id = id_field(&msg, "previousId")?;
    let group_id = id_field(&msg, "groupId")?;
    let event = str_field(&msg, "event")?;
    let name = str_field(&msg, "name")?;
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

    let message_id = match id_field(&msg, "messageId")? {
        Some(id) if id.len() > 100 => {
            return Err(Error::invalid("messageId", "is longer than 100 characters"));
        }
        Some(id) => id,
        None => (opts.fallback_message_id)(),
    };

    let original_timestamp = time_field(&msg, "originalTimestamp")?;
    let timestamp = time_field(&msg, "timestamp")?;
    let sent_at = time_field(&msg, "sentAt")?;

    let context = object_field(&msg, "context")?;
    let properties = object_field(&msg, "properties")?;
    let traits = object_field(&msg, "traits")?;
    let integrations = object_field(&msg, "integrations")?;

    let context_traits = match context.and_then(|c| c.get("traits")) {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => Some(o),
        Some(other) => return Err(wrong_type("context.traits", "an object", other)),
    };
    let trait_str = |key: &str| -> Result<Option<String>> {
        let from_traits = nested_str(traits, key, "traits")?;
        match from_traits {
            Some(v) => Ok(Some(v)),
            None => nested_str(context_traits, key, "context.traits"),
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

    let revenue = match number_field(properties, "revenue")? {
        Some(v) => Some(v),
        None => number_field(properties, "total")?,
    };
    let page = match context.and_then(|c| c.get("page")) {
        Some(Value::Object(o)) => Some(o),
        _ => None,
    };
    let campaign = match context.and_then(|c| c.get("campaign")) {
        Some(Value::Object(o)) => Some(o),
        _ => None,
    };
    let device = match context.and_then(|c| c.get("device")) {
        Some(Value::Object(o)) => Some(o),
        _ => None,
    };
    let first_of = |a: Option<String>, b: Option<String>| a.or(b);

    Ok(EventRow {
        message_id,
        event_type: event_type.as_str().to_string(),
        event,
        name,
        anonymous_id,
        user_id,
        previous_id,
        group_id,
        timestamp: timestamp.or(original_timestamp).unwrap_or(opts.received_at),
        original_timestamp,
        sent_at,
        received_at: opts.received_at,
        source: opts.source.to_string(),
        email,
        phone,
        revenue,
        currency: loose_str(properties, "currency"),
        order_id: first_of(
            loose_str(properties, "order_id"),
            loose_str(properties, "orderId"),
        ),
        product_id: first_of(
            loose_str(properties, "product_id"),
            loose_str(properties, "productId"),
        ),
        category: loose_str(properties, "category"),
        page_url: first_of(loose_str(page, "url"), loose_str(properties, "url")),
        page_path: first_of(loose_str(page, "path"), loose_str(properties, "path")),
        referrer: first_of(
            loose_str(page, "referrer"),
            loose_str(properties, "referrer"),
        ),
        utm_source: loose_str(campaign, "source"),
        utm_medium: loose_str(campaign, "medium"),
        utm_campaign: loose_str(campaign, "name"),
        ip: loose_str(context, "ip"),
        user_agent: loose_str(context, "userAgent"),
        locale: loose_str(context, "locale"),
        device_id: loose_str(device, "id"),
        context: context.map(json_text).transpose()?,
        properties: properties.map(json_text).transpose()?,
        traits: traits.map(json_text).transpose()?,
        integrations: integrations.map(json_text).transpose()?,
    })
}

/// The compact JSON text of an object (printed in place: no copy of the tree).
fn json_text(object: &Map<String, Value>) -> Result<String> {
    serde_json::to_string(object).map_err(|e| Error::InvalidJson(e.to_string()))
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

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(field: &str, expected: &str, found: &Value) -> Error {
    Error::invalid(
        field,
        format!("must be {expected}, found {}", json_kind(found)),
    )
}

/// An identifier: string, or integer turned into a string; empty means absent.
fn id_field(msg: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match msg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(other) => Err(wrong_type(key, "a string", other)),
    }
}

fn str_field(msg: &Map<String, Value>, key: &str) -> Result<Option<String>> {
    match msg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(key, "a string", other)),
    }
}

fn time_field(msg: &Map<String, Value>, key: &str) -> Result<Option<i64>> {
    match msg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse_timestamp(s)
            .map(Some)
            .ok_or_else(|| Error::invalid(key, format!("is not ISO-8601: {s:?}"))),
        Some(other) => Err(wrong_type(key, "an ISO-8601 string", other)),
    }
}

fn object_field<'a>(
    msg: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>> {
    match msg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(other) => Err(wrong_type(key, "an object", other)),
    }
}

/// A string inside an object that the identity rules rely on: a wrong type is an error.
fn nested_str(obj: Option<&Map<String, Value>>, key: &str, path: &str) -> Result<Option<String>> {
    match obj.and_then(|o| o.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) if key == "phone" => Ok(Some(n.to_string())),
        Some(other) => Err(wrong_type(&format!("{path}.{key}"), "a string", other)),
    }
}

/// A descriptive string: numbers are rendered, other types ignored (kept in the JSON).
fn loose_str(obj: Option<&Map<String, Value>>, key: &str) -> Option<String> {
    match obj?.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number_field(obj: Option<&Map<String, Value>>, key: &str) -> Result<Option<f64>> {
    match obj.and_then(|o| o.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or_else(|| {
                Error::invalid(
                    format!("properties.{key}"),
                    format!("is not a number: {s:?}"),
                )
            }),
        Some(other) => Err(wrong_type(&format!("properties.{key}"), "a number", other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts() -> ParseOptions<'static> {
        ParseOptions {
            source: "test",
            received_at: 1_700_000_000_000_000,
            fallback_message_id: &|| "generated".to_string(),
            offline_identity: false,
        }
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
