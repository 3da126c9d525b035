//! Identifiers from an event, normalised so that spellings of one value meet.

use keystone_core::event::EventRow;
use keystone_core::identifier::{normalize_email, normalize_phone};
use serde_json::Value;

use std::borrow::Cow;

use crate::graph::CutRule;
use crate::rules::{ANONYMOUS_ID, DEVICE_ID, EMAIL, PHONE, Rules, USER_ID};

/// One identifier: its type (`user_id`, `email`, …, or a custom type from
/// `context.externalIds`) and its normalised value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identifier {
    pub kind: String,
    pub value: String,
}

impl Identifier {
    /// An identifier of `kind` with `value` as given.
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            value: value.into(),
        }
    }
}

impl std::fmt::Display for Identifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// The fields of an event that identifiers come from, borrowed (from an
/// [`EventRow`] or from Arrow arrays).
#[derive(Debug, Clone, Copy, Default)]
pub struct EventIds<'a> {
    pub user_id: Option<&'a str>,
    pub anonymous_id: Option<&'a str>,
    pub previous_id: Option<&'a str>,
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub device_id: Option<&'a str>,
    /// JSON text of the event's objects.
    pub context: Option<&'a str>,
    pub properties: Option<&'a str>,
    pub traits: Option<&'a str>,
}

impl<'a> From<&'a EventRow> for EventIds<'a> {
    fn from(row: &'a EventRow) -> Self {
        Self {
            user_id: row.user_id.as_deref(),
            anonymous_id: row.anonymous_id.as_deref(),
            previous_id: row.previous_id.as_deref(),
            email: row.email.as_deref(),
            phone: row.phone.as_deref(),
            device_id: row.device_id.as_deref(),
            context: row.context.as_deref(),
            properties: row.properties.as_deref(),
            traits: row.traits.as_deref(),
        }
    }
}

/// Receives each identifier of an event: type, normalised value, verdict.
pub type Emit<'e> = dyn FnMut(&str, Cow<'_, str>, Result<(), CutRule>) + 'e;

/// Every identifier an event carries, normalised, each with the verdict of
/// the value rules ([`Rules::admit`], plus `Invalid` for an email or phone
/// that is not one): `userId`, `anonymousId`, alias `previousId` (as an
/// anonymous id), email and phone (promoted from `traits` or
/// `context.traits`), `context.device.id`, `context.externalIds` (`[{ "id":
/// …, "type": … }]`, type lower-cased) and the configured property paths.
/// `emit(kind, value, verdict)` is called once per identifier, duplicates included.
pub fn extract_with(ev: &EventIds<'_>, rules: &Rules, emit: &mut Emit<'_>) {
    let plain = |kind: &str, value: Option<&str>, emit: &mut Emit<'_>| {
        if let Some(v) = value {
            let v = v.trim();
            let verdict = rules.admit_value(v);
            emit(kind, Cow::Borrowed(v), verdict);
        }
    };
    plain(USER_ID, ev.user_id, emit);
    plain(ANONYMOUS_ID, ev.anonymous_id, emit);
    plain(ANONYMOUS_ID, ev.previous_id, emit);
    if let Some(raw) = ev.email {
        match normalize_email(raw) {
            Some(e) => {
                let verdict = rules.admit_value(&e);
                emit(EMAIL, Cow::Owned(e), verdict);
            }
            None => {
                let v = raw.trim();
                let verdict = rules.admit_value(v).and(Err(CutRule::Invalid));
                emit(EMAIL, Cow::Borrowed(v), verdict);
            }
        }
    }
    if let Some(raw) = ev.phone {
        match normalize_phone(raw) {
            Some(_) => {
                let p = to_e164(raw, rules.default_region.as_deref());
                let verdict = rules.admit_value(&p);
                emit(PHONE, Cow::Owned(p), verdict);
            }
            None => {
                let v = raw.trim();
                let verdict = rules.admit_value(v).and(Err(CutRule::Invalid));
                emit(PHONE, Cow::Borrowed(v), verdict);
            }
        }
    }
    plain(DEVICE_ID, ev.device_id, emit);
    if let Some(ctx) = ev.context
        && ctx.contains("externalIds")
        && let Ok(Value::Object(ctx)) = serde_json::from_str::<Value>(ctx)
        && let Some(Value::Array(ids)) = ctx.get("externalIds")
    {
        for ext in ids {
            let kind = ext
                .get("type")
                .and_then(Value::as_str)
                .map(|k| k.trim().to_lowercase())
                .filter(|k| !k.is_empty());
            let Some(kind) = kind else { continue };
            match ext.get("id") {
                Some(Value::String(s)) => plain(&kind, Some(s), emit),
                Some(Value::Number(n)) => plain(&kind, Some(&n.to_string()), emit),
                Some(Value::Null) | None => {}
                Some(other) => emit(&kind, Cow::Owned(other.to_string()), Err(CutRule::Invalid)),
            }
        }
    }
    for (kind, path) in &rules.property_ids {
        let mut parts = path.split('.');
        let text = match parts.next() {
            Some("properties") => ev.properties,
            Some("traits") => ev.traits,
            Some("context") => ev.context,
            _ => None,
        };
        let Some(text) = text else { continue };
        let fields: Vec<&str> = parts.collect();
        let Some(last) = fields.last() else { continue };
        if !text.contains(last) {
            continue;
        }
        let Ok(doc) = serde_json::from_str::<Value>(text) else {
            continue;
        };
        let mut at = &doc;
        let mut found = true;
        for f in &fields {
            match at.get(f) {
                Some(v) => at = v,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if !found {
            continue;
        }
        match at {
            Value::String(s) => plain(kind, Some(s), emit),
            Value::Number(n) => plain(kind, Some(&n.to_string()), emit),
            Value::Null => {}
            other => emit(kind, Cow::Owned(other.to_string()), Err(CutRule::Invalid)),
        }
    }
}

/// The identifiers of an event that the value rules admit, sorted and
/// deduplicated (see [`extract_with`]).
pub fn extract_identifiers(row: &EventRow, rules: &Rules) -> Vec<Identifier> {
    let mut out = Vec::with_capacity(6);
    extract_with(&row.into(), rules, &mut |kind, value, verdict| {
        if verdict.is_ok() {
            out.push(Identifier::new(kind, value.into_owned()));
        }
    });
    out.sort();
    out.dedup();
    out
}

/// The regions `[identity] default_region` may name (their national numbers
/// are turned into E.164 by [`to_e164`]).
pub const PHONE_REGIONS: &[&str] = &[
    "FR", "GB", "UK", "DE", "BE", "NL", "CH", "ES", "IT", "US", "CA",
];

/// Phone in E.164 where it can be: `+` numbers kept, `00` → `+`, and a
/// national number completed with the default region's calling code (trunk
/// `0` dropped where the country uses one). Regions known: FR, GB, DE, ES, IT,
/// BE, NL, CH, US, CA. Anything else keeps its digits.
///
/// ```
/// use keystone_identity::extract::to_e164;
/// assert_eq!(to_e164("06 12 34 56 78", Some("FR")), "+33612345678");
/// assert_eq!(to_e164("+33 6 12 34 56 78", None), "+33612345678");
/// assert_eq!(to_e164("(555) 010-9999", Some("US")), "+15550109999");
/// ```
pub fn to_e164(raw: &str, default_region: Option<&str>) -> String {
    let Some(p) = normalize_phone(raw) else {
        return raw.trim().to_string();
    };
    if p.starts_with('+') {
        return p;
    }
    let Some(region) = default_region else {
        return p;
    };
    let (code, trunk) = match region.to_ascii_uppercase().as_str() {
        "FR" => ("33", true),
        "GB" | "UK" => ("44", true),
        "DE" => ("49", true),
        "BE" => ("32", true),
        "NL" => ("31", true),
        "CH" => ("41", true),
        "ES" => ("34", false),
        "IT" => ("39", false),
        "US" | "CA" => {
            return match p.len() {
                10 => format!("+1{p}"),
                11 if p.starts_with('1') => format!("+{p}"),
                _ => p,
            };
        }
        _ => return p,
    };
    let national = if trunk {
        p.strip_prefix('0').unwrap_or(&p)
    } else {
        &p
    };
    format!("+{code}{national}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identifier_of_an_event_is_extracted_and_normalised() {
        let row = EventRow {
            user_id: Some("u-1".into()),
            anonymous_id: Some("a-1".into()),
            previous_id: Some("a-0".into()),
            email: Some(" Jane@X.org".into()),
            phone: Some("06 12 34 56 78".into()),
            device_id: Some("DEV".into()),
            context: Some(r#"{"externalIds":[{"id":"L-9","type":"Loyalty_Card","collection":"users"},{"id":7,"type":"crm"}]}"#.into()),
            properties: Some(r#"{"card":{"number":"C-42"}}"#.into()),
            ..EventRow::default()
        };
        let rules = Rules {
            default_region: Some("FR".into()),
            property_ids: [("loyalty".to_string(), "properties.card.number".to_string())].into(),
            ..Rules::default()
        };
        let ids: Vec<String> = extract_identifiers(&row, &rules)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            ids,
            vec![
                "anonymous_id:a-0",
                "anonymous_id:a-1",
                "crm:7",
                "device_id:DEV",
                "email:jane@x.org",
                "loyalty:C-42",
                "loyalty_card:L-9",
                "phone:+33612345678",
                "user_id:u-1",
            ]
        );
    }

    #[test]
    fn invalid_and_blocked_values_are_reported_with_their_rule() {
        let row = EventRow {
            user_id: Some("null".into()),
            email: Some("not an email".into()),
            phone: Some("call me".into()),
            anonymous_id: Some("x".repeat(2000)),
            ..EventRow::default()
        };
        let mut seen = Vec::new();
        extract_with(&(&row).into(), &Rules::default(), &mut |k, _, v| {
            seen.push((k.to_string(), v.err()))
        });
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            seen,
            vec![
                ("anonymous_id".into(), Some(CutRule::TooLong)),
                ("email".into(), Some(CutRule::Invalid)),
                ("phone".into(), Some(CutRule::Invalid)),
                ("user_id".into(), Some(CutRule::Blocked)),
            ]
        );
    }

    #[test]
    fn national_numbers_need_a_region() {
        assert_eq!(to_e164("0612345678", None), "0612345678");
        assert_eq!(to_e164("0612345678", Some("it")), "+390612345678");
        assert_eq!(to_e164("07700 900123", Some("GB")), "+447700900123");
        assert_eq!(to_e164("not a phone", Some("FR")), "not a phone");
    }
}
