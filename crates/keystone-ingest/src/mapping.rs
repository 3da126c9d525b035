//! The column mapping that turns a CSV row into a Segment event.
//!
//! A mapping is a TOML file (by default `FILE.mapping.toml` beside
//! `FILE.csv`). Each row becomes one message of `type`, then goes through the
//! same validation as any other event, so a CSV row and an SDK call for the
//! same purchase look alike in `events`.
//!
//! ```toml
//! type = "track"                       # identify | track | page | screen | group | alias
//! event = "Order Completed"            # for track: a constant …
//! # event_column = "kind"              # … or a column
//! message_id = "receipt_id"            # column; default: a hash of the row
//! timestamp = "purchased_at"           # column
//! timestamp_format = "%Y-%m-%d %H:%M:%S"   # strftime; default ISO-8601, UTC
//! user_id = "customer_id"              # column (optional)
//! anonymous_id = "cookie"              # column (optional)
//!
//! [traits]                             # traits.<key> (identify, group)
//! first_name = "first_name"
//! [context_traits]                     # context.traits.<key> (identity on other calls)
//! email = "email"
//! [properties]                         # properties.<key>
//! order_id = "receipt_id"
//! revenue = { column = "amount", type = "number" }   # string (default), number, integer, boolean
//! ```
//!
//! Empty cells are left out of the message.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{Error, Result};

/// A parsed mapping file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvMapping {
    #[serde(rename = "type")]
    pub event_type: String,
    pub event: Option<String>,
    pub event_column: Option<String>,
    pub message_id: Option<String>,
    pub timestamp: Option<String>,
    pub timestamp_format: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    #[serde(default)]
    pub traits: BTreeMap<String, ColumnSpec>,
    #[serde(default)]
    pub context_traits: BTreeMap<String, ColumnSpec>,
    #[serde(default)]
    pub properties: BTreeMap<String, ColumnSpec>,
}

/// A mapped column: its name, or `{ column, type }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ColumnSpec {
    Name(String),
    Typed {
        column: String,
        #[serde(rename = "type", default)]
        kind: ValueKind,
    },
}

/// How a cell is turned into JSON.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    #[default]
    String,
    Number,
    Integer,
    Boolean,
}

impl ColumnSpec {
    fn column(&self) -> &str {
        match self {
            Self::Name(c) | Self::Typed { column: c, .. } => c,
        }
    }
    fn kind(&self) -> ValueKind {
        match self {
            Self::Name(_) => ValueKind::String,
            Self::Typed { kind, .. } => *kind,
        }
    }
}

impl CsvMapping {
    /// Read and check a mapping file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|reason| Error::Mapping {
            path: path.display().to_string(),
            reason,
        })
    }

    /// Parse and check a mapping from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let m: CsvMapping = toml::from_str(text).map_err(|e| {
            let e = e.to_string();
            // serde names no variant of an untagged enum: say what a column may be.
            if e.contains("untagged enum ColumnSpec") {
                format!(
                    "{e}: a column is a name (\"purchased_at\") or {{ column = \"...\", type = \"string\" | \"number\" | \"integer\" | \"boolean\" }}"
                )
            } else {
                e
            }
        })?;
        if keystone_core::event::EventType::parse(&m.event_type).is_none() {
            return Err(format!("`type` is not a Segment type: {:?}", m.event_type));
        }
        if m.event_type == "track" && m.event.is_none() && m.event_column.is_none() {
            return Err("a track mapping needs `event` or `event_column`".into());
        }
        Ok(m)
    }

    /// Every column the mapping reads.
    pub fn columns(&self) -> Vec<&str> {
        let mut cols: Vec<&str> = [
            &self.event_column,
            &self.message_id,
            &self.timestamp,
            &self.user_id,
            &self.anonymous_id,
        ]
        .into_iter()
        .filter_map(|c| c.as_deref())
        .collect();
        for map in [&self.traits, &self.context_traits, &self.properties] {
            cols.extend(map.values().map(ColumnSpec::column));
        }
        cols
    }

    /// Resolve column names against a CSV header: an error names every missing column.
    pub fn bind(&self, header: &[String]) -> Result<BoundMapping, String> {
        let index = |name: &str| header.iter().position(|h| h.trim() == name);
        let missing: Vec<&str> = self
            .columns()
            .into_iter()
            .filter(|c| index(c).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the mapping names columns the header lacks: {} (header: {})",
                missing.join(", "),
                header.join(",")
            ));
        }
        let bind_one = |c: &Option<String>| c.as_deref().and_then(index);
        let bind_map =
            |m: &BTreeMap<String, ColumnSpec>| -> Vec<(String, usize, ValueKind, String)> {
                m.iter()
                    .filter_map(|(k, spec)| {
                        index(spec.column())
                            .map(|i| (k.clone(), i, spec.kind(), spec.column().to_string()))
                    })
                    .collect()
            };
        Ok(BoundMapping {
            mapping: self.clone(),
            header: header.to_vec(),
            event_column: bind_one(&self.event_column),
            message_id: bind_one(&self.message_id),
            timestamp: bind_one(&self.timestamp),
            user_id: bind_one(&self.user_id),
            anonymous_id: bind_one(&self.anonymous_id),
            traits: bind_map(&self.traits),
            context_traits: bind_map(&self.context_traits),
            properties: bind_map(&self.properties),
        })
    }
}

type BoundFields = Vec<(String, usize, ValueKind, String)>;

/// A mapping whose columns are resolved to positions in one file's header.
#[derive(Debug, Clone)]
pub struct BoundMapping {
    mapping: CsvMapping,
    header: Vec<String>,
    event_column: Option<usize>,
    message_id: Option<usize>,
    timestamp: Option<usize>,
    user_id: Option<usize>,
    anonymous_id: Option<usize>,
    traits: BoundFields,
    context_traits: BoundFields,
    properties: BoundFields,
}

impl BoundMapping {
    /// Build the Segment message for one row. Errors name the column and value.
    pub fn message(&self, row: &[&str]) -> Result<Value, String> {
        let cell = |i: usize| row.get(i).map(|s| s.trim()).filter(|s| !s.is_empty());
        let mut msg = Map::new();
        msg.insert(
            "type".into(),
            Value::String(self.mapping.event_type.clone()),
        );
        let event = match self.event_column {
            Some(i) => cell(i).map(str::to_string),
            None => self.mapping.event.clone(),
        };
        if let Some(e) = event {
            msg.insert("event".into(), Value::String(e));
        }
        for (key, col) in [
            ("messageId", self.message_id),
            ("userId", self.user_id),
            ("anonymousId", self.anonymous_id),
        ] {
            if let Some(v) = col.and_then(cell) {
                msg.insert(key.into(), Value::String(v.to_string()));
            }
        }
        if let Some(raw) = self.timestamp.and_then(cell) {
            let ts = match &self.mapping.timestamp_format {
                Some(fmt) => chrono::NaiveDateTime::parse_from_str(raw, fmt)
                    .map(|t| t.and_utc().to_rfc3339())
                    .map_err(|e| {
                        format!(
                            "column `{}`: {raw:?} does not match format {fmt:?} ({e})",
                            self.header[self.timestamp.unwrap_or_default()]
                        )
                    })?,
                None => raw.to_string(),
            };
            msg.insert("timestamp".into(), Value::String(ts));
        }
        let fill = |fields: &BoundFields| -> Result<Option<Value>, String> {
            let mut obj = Map::new();
            for (key, i, kind, column) in fields {
                let Some(raw) = cell(*i) else { continue };
                obj.insert(key.clone(), typed(raw, *kind, column)?);
            }
            Ok((!obj.is_empty()).then_some(Value::Object(obj)))
        };
        if let Some(traits) = fill(&self.traits)? {
            msg.insert("traits".into(), traits);
        }
        if let Some(ct) = fill(&self.context_traits)? {
            let mut context = Map::new();
            context.insert("traits".into(), ct);
            msg.insert("context".into(), Value::Object(context));
        }
        if let Some(props) = fill(&self.properties)? {
            msg.insert("properties".into(), props);
        }
        Ok(Value::Object(msg))
    }
}

fn typed(raw: &str, kind: ValueKind, column: &str) -> Result<Value, String> {
    let bad = |what: &str| format!("column `{column}`: {raw:?} is not {what}");
    Ok(match kind {
        ValueKind::String => Value::String(raw.to_string()),
        ValueKind::Number => raw
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| bad("a number"))?,
        ValueKind::Integer => raw
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| bad("an integer"))?,
        ValueKind::Boolean => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Value::Bool(true),
            "false" | "0" | "no" => Value::Bool(false),
            _ => return Err(bad("a boolean")),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORE: &str = r#"
type = "track"
event = "Order Completed"
message_id = "receipt_id"
timestamp = "purchased_at"
timestamp_format = "%Y-%m-%d %H:%M:%S"
[context_traits]
email = "email"
[properties]
order_id = "receipt_id"
revenue = { column = "amount", type = "number" }
"#;

    fn header() -> Vec<String> {
        ["receipt_id", "purchased_at", "email", "amount"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn row_becomes_a_track_message() {
        let m = CsvMapping::from_toml(STORE)
            .unwrap()
            .bind(&header())
            .unwrap();
        let msg = m
            .message(&["r1", "2026-11-01 10:00:00", " Jane@X.org", "12.50"])
            .unwrap();
        assert_eq!(msg["type"], "track");
        assert_eq!(msg["event"], "Order Completed");
        assert_eq!(msg["messageId"], "r1");
        assert_eq!(msg["timestamp"], "2026-11-01T10:00:00+00:00");
        assert_eq!(msg["context"]["traits"]["email"], "Jane@X.org");
        assert_eq!(msg["properties"]["revenue"], 12.5);
    }

    #[test]
    fn bad_cells_name_the_column() {
        let m = CsvMapping::from_toml(STORE)
            .unwrap()
            .bind(&header())
            .unwrap();
        let err = m
            .message(&["r1", "2026-11-01 10:00:00", "a@b.c", "12,50"])
            .unwrap_err();
        assert!(err.contains("column `amount`"), "{err}");
        let err = m.message(&["r1", "01/11/2026", "a@b.c", "1"]).unwrap_err();
        assert!(err.contains("column `purchased_at`"), "{err}");
    }

    #[test]
    fn missing_columns_are_listed() {
        let m = CsvMapping::from_toml(STORE).unwrap();
        let err = m.bind(&["receipt_id".to_string()]).unwrap_err();
        assert!(
            err.contains("purchased_at") && err.contains("amount"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_and_types_are_rejected() {
        assert!(CsvMapping::from_toml("type = \"track\"\nevent=\"x\"\nbogus = 1").is_err());
        assert!(CsvMapping::from_toml("type = \"purchase\"").is_err());
        assert!(CsvMapping::from_toml("type = \"track\"").is_err());
    }

    #[test]
    fn an_unknown_column_type_names_the_known_ones() {
        let text = STORE.replace("type = \"number\"", "type = \"decimal\"");
        assert_ne!(text, STORE, "the fixture has a typed column");
        let err = CsvMapping::from_toml(&text).unwrap_err();
        assert!(
            err.contains("\"string\" | \"number\" | \"integer\" | \"boolean\""),
            "{err}"
        );
    }
}
