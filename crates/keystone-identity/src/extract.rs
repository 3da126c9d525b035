//! Identifiers from an event, normalised so that spellings of one value meet.

use keystone_core::event::EventRow;
use keystone_core::identifier::{normalize_email, normalize_phone};
use serde_json::Value;

use crate::rules::{ANONYMOUS_ID, DEVICE_ID, EMAIL, PHONE, USER_ID};

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

/// Every identifier an event carries: `userId`, `anonymousId`, alias
/// `previousId` (as an anonymous id), email and phone (from `traits` or
/// `context.traits`), `context.device.id`, and `context.externalIds`
/// (`[{ "id": …, "type": … }]`, type lower-cased). Duplicates are removed.
pub fn extract_identifiers(row: &EventRow, default_region: Option<&str>) -> Vec<Identifier> {
    let mut out = Vec::with_capacity(6);
    let mut push = |kind: &str, value: Option<String>| {
        if let Some(v) = value
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
        {
            out.push(Identifier::new(kind, v));
        }
    };
    push(USER_ID, row.user_id.clone());
    push(ANONYMOUS_ID, row.anonymous_id.clone());
    push(ANONYMOUS_ID, row.previous_id.clone());
    push(
        EMAIL,
        row.email
            .as_deref()
            .map(|e| normalize_email(e).unwrap_or_else(|| e.trim().to_lowercase())),
    );
    push(
        PHONE,
        row.phone.as_deref().map(|p| to_e164(p, default_region)),
    );
    push(DEVICE_ID, row.device_id.clone());
    if let Some(ctx) = row.context.as_deref()
        && let Ok(Value::Object(ctx)) = serde_json::from_str::<Value>(ctx)
        && let Some(Value::Array(ids)) = ctx.get("externalIds")
    {
        for ext in ids {
            let id = ext.get("id").and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
            let kind = ext
                .get("type")
                .and_then(Value::as_str)
                .map(str::to_lowercase);
            if let Some(kind) = kind.filter(|k| !k.is_empty()) {
                push(&kind, id);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

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
            ..EventRow::default()
        };
        let ids: Vec<String> = extract_identifiers(&row, Some("FR"))
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
                "loyalty_card:L-9",
                "phone:+33612345678",
                "user_id:u-1",
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
