//! Segment definitions, kept in the lake (`_keystone/segments.json`) so every
//! session — CLI, Flight SQL, batch jobs — sees the same ones.

use serde::{Deserialize, Serialize};

use crate::{Error, Lake, Result};

const SEGMENTS_STATE: &str = "segments.json";

/// One segment: a name and the SQL that returns its members' `profile_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentDef {
    pub name: String,
    pub sql: String,
    /// RFC 3339.
    pub created_at: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct SegmentsFile {
    segments: Vec<SegmentDef>,
}

/// Is `name` usable as a segment (and SQL view) name?
/// Lower-case ASCII letters, digits and `_`, starting with a letter, ≤ 63.
pub fn check_segment_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "segment name {name:?} must be lower-case letters, digits and _, start with a letter, at most 63 characters"
        ))
    }
}

impl Lake {
    /// Every segment definition, in creation order.
    pub async fn segments(&self) -> Result<Vec<SegmentDef>> {
        let Some(bytes) = self.read_state(SEGMENTS_STATE).await? else {
            return Ok(Vec::new());
        };
        let file: SegmentsFile = serde_json::from_slice(&bytes).map_err(|e| Error::State {
            name: SEGMENTS_STATE.into(),
            reason: format!("not a segments file: {e}"),
        })?;
        Ok(file.segments)
    }

    /// Store the definitions (the caller validated them).
    pub async fn write_segments(&self, segments: Vec<SegmentDef>) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(&SegmentsFile { segments }).map_err(|e| Error::State {
                name: SEGMENTS_STATE.into(),
                reason: e.to_string(),
            })?;
        self.write_state(SEGMENTS_STATE, bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sql_friendly() {
        assert!(check_segment_name("vip_2026").is_ok());
        for bad in ["", "VIP", "1st", "a-b", "a b", &"x".repeat(64)] {
            assert!(check_segment_name(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn definitions_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = Lake::open(dir.path().to_str().expect("utf-8")).expect("lake");
        assert!(lake.segments().await.expect("none").is_empty());
        let def = SegmentDef {
            name: "vip".into(),
            sql: "SELECT profile_id FROM profiles".into(),
            created_at: "2026-11-22T00:00:00Z".into(),
        };
        lake.write_segments(vec![def.clone()]).await.expect("write");
        assert_eq!(lake.segments().await.expect("read"), vec![def]);
    }
}
