//! API keys: who may send events (collector) and who may query (analyst,
//! activation, admin).
//!
//! A key is shown once, when it is created; the lake keeps only its SHA-256
//! in `_keystone/keys.json`, beside a public id (the key's first characters),
//! a name and a role. The name is what the collector writes in the `source`
//! column of the events sent with the key.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Lake, Result};

/// The state file holding the keys.
const KEYS_STATE: &str = "keys.json";

/// Prefix of every Keystone key, so a leaked one is recognisable.
/// Every key starts with this.
pub const KEY_PREFIX: &str = "ks_";

/// Grants a key may carry beyond its role.
pub const GRANTS: &[&str] = &["pii"];

/// Characters of the key kept as its public id.
const ID_LEN: usize = KEY_PREFIX.len() + 8;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Send events to the collector; no queries.
    Collector,
    /// Query every table; PII masked unless granted `pii`.
    Analyst,
    /// Read segments, profiles and exports.
    Activation,
    /// Everything.
    Admin,
}

impl Role {
    /// Every role, in the order `--help` lists them.
    pub const ALL: [Role; 4] = [
        Self::Collector,
        Self::Analyst,
        Self::Activation,
        Self::Admin,
    ];

    /// The role's name in the config and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Collector => "collector",
            Self::Analyst => "analyst",
            Self::Activation => "activation",
            Self::Admin => "admin",
        }
    }

    /// Parse a role name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// One stored key (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Public id: the key's first characters.
    pub id: String,
    /// Free name; the `source` of events sent with a collector key.
    pub name: String,
    pub role: Role,
    /// Extra grants, e.g. `pii`.
    #[serde(default)]
    pub grants: Vec<String>,
    /// Hex SHA-256 of the whole key.
    pub sha256: String,
    /// RFC 3339.
    pub created_at: String,
    #[serde(default)]
    pub revoked: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeysFile {
    keys: Vec<KeyRecord>,
}

/// The keys of a lake, for checking presented keys.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: Vec<KeyRecord>,
}

impl KeyRing {
    /// The live (not revoked) record of `key`, if it is one of ours.
    pub fn verify(&self, key: &str) -> Option<&KeyRecord> {
        if !key.starts_with(KEY_PREFIX) {
            return None;
        }
        let digest = sha256_hex(key);
        self.keys
            .iter()
            .find(|k| !k.revoked && constant_time_eq(k.sha256.as_bytes(), digest.as_bytes()))
    }

    /// Every record, revoked ones included.
    pub fn records(&self) -> &[KeyRecord] {
        &self.keys
    }
}

fn sha256_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new random key: `ks_` and 64 hex characters (from 244 random bits).
fn new_key() -> String {
    let a = uuid::Uuid::new_v4();
    let b = uuid::Uuid::new_v4();
    let mut digest = Sha256::new();
    digest.update(a.as_bytes());
    digest.update(b.as_bytes());
    format!("{KEY_PREFIX}{}", hex::encode(digest.finalize()))
}

impl Lake {
    /// The lake's keys (none before the first `keys create`).
    pub async fn keys(&self) -> Result<KeyRing> {
        let Some(bytes) = self.read_state(KEYS_STATE).await? else {
            return Ok(KeyRing::default());
        };
        let file: KeysFile = serde_json::from_slice(&bytes).map_err(|e| Error::State {
            name: KEYS_STATE.into(),
            reason: format!("not a keys file: {e}"),
        })?;
        Ok(KeyRing { keys: file.keys })
    }

    /// Create a key; returns the key itself (shown once) and its record.
    pub async fn create_key(
        &self,
        role: Role,
        name: Option<&str>,
        grants: &[String],
    ) -> Result<(String, KeyRecord)> {
        if let Some(bad) = grants.iter().find(|g| !GRANTS.contains(&g.as_str())) {
            return Err(Error::Conflict(format!(
                "unknown grant {bad:?} (known: {})",
                GRANTS.join(", ")
            )));
        }
        let key = new_key();
        let id = key[..ID_LEN].to_string();
        let name = match name {
            Some(n) if n.trim().is_empty() => {
                return Err(Error::State {
                    name: KEYS_STATE.into(),
                    reason: "a key's name cannot be empty".into(),
                });
            }
            Some(n) => n.trim().to_string(),
            None => format!("{}-{}", role.as_str(), &id[KEY_PREFIX.len()..]),
        };
        let record = KeyRecord {
            id,
            name,
            role,
            grants: grants.to_vec(),
            sha256: sha256_hex(&key),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            revoked: false,
        };
        let mut ring = self.keys().await?;
        ring.keys.push(record.clone());
        self.write_keys(ring.keys).await?;
        Ok((key, record))
    }

    /// Revoke the key whose public id is `id`; false if there is none.
    pub async fn revoke_key(&self, id: &str) -> Result<bool> {
        let mut ring = self.keys().await?;
        let Some(k) = ring.keys.iter_mut().find(|k| k.id == id) else {
            return Ok(false);
        };
        k.revoked = true;
        self.write_keys(ring.keys).await?;
        Ok(true)
    }

    async fn write_keys(&self, keys: Vec<KeyRecord>) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&KeysFile { keys }).map_err(|e| Error::State {
            name: KEYS_STATE.into(),
            reason: e.to_string(),
        })?;
        self.write_state(KEYS_STATE, bytes).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_created_key_verifies_and_only_its_hash_is_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = Lake::open(dir.path().to_str().expect("utf-8")).expect("lake");
        let (key, record) = lake
            .create_key(Role::Collector, Some("web"), &[])
            .await
            .expect("create");
        assert!(key.starts_with("ks_") && key.len() == 67, "{key}");
        assert!(key.starts_with(&record.id));
        let stored = std::fs::read_to_string(dir.path().join("_keystone/keys.json")).expect("read");
        assert!(!stored.contains(&key), "the key itself must not be stored");

        let ring = lake.keys().await.expect("keys");
        let found = ring.verify(&key).expect("verifies");
        assert_eq!((found.name.as_str(), found.role), ("web", Role::Collector));
        assert!(ring.verify("ks_0000").is_none());
        assert!(ring.verify(&key[..key.len() - 1]).is_none());

        assert!(lake.revoke_key(&record.id).await.expect("revoke"));
        assert!(lake.keys().await.expect("keys").verify(&key).is_none());
        assert!(!lake.revoke_key("ks_nope").await.expect("revoke"));
    }

    #[tokio::test]
    async fn default_names_and_empty_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = Lake::open(dir.path().to_str().expect("utf-8")).expect("lake");
        let (_, a) = lake
            .create_key(Role::Analyst, None, &["pii".into()])
            .await
            .expect("a");
        assert!(a.name.starts_with("analyst-"), "{}", a.name);
        assert_eq!(a.grants, vec!["pii".to_string()]);
        let err = lake
            .create_key(Role::Admin, Some("  "), &[])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cannot be empty"), "{err}");
        let err = lake
            .create_key(Role::Analyst, None, &["pi".into()])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("unknown grant \"pi\""), "{err}");
        assert_eq!(lake.keys().await.expect("keys").records().len(), 1);
    }
}
