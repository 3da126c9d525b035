//! Who is calling: keys (Bearer), the Basic handshake and its tokens.
//!
//! Every call carries `authorization: Bearer <key or token>`. A client that
//! only knows Basic auth calls `Handshake` with `authorization: Basic
//! base64(user:key)` (the key may be the user or the password) and gets a
//! token back in the `authorization` response header (and the handshake
//! payload). Tokens live `token_ttl_secs`; revoking the key ends them too.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use keystone_lake::{KeyRecord, KeyRing, Lake, Role};
use sha2::{Digest, Sha256};
use tokio::sync::RwLock;
use tonic::Status;
use tonic::metadata::MetadataMap;

/// How often the key file is re-read (new and revoked keys).
const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// Prefix of the tokens the handshake returns.
const TOKEN_PREFIX: &str = "kst_";

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Public id of the key.
    pub key_id: String,
    /// Name of the key (the `source` of what it ingests).
    pub name: String,
    pub role: Role,
    /// The key may see personal data in clear.
    pub pii: bool,
    /// The handshake session of the caller (a digest of its token), when it
    /// authenticated with a token; `None` for a key sent with every call,
    /// which any number of connections may share.
    pub session: Option<[u8; 32]>,
}

impl Principal {
    fn from_record(record: &KeyRecord) -> Self {
        Self {
            key_id: record.id.clone(),
            name: record.name.clone(),
            role: record.role,
            pii: record.grants.iter().any(|g| g == "pii"),
            session: None,
        }
    }

    /// Personal columns are masked for this caller.
    pub fn masked(&self) -> bool {
        self.role != Role::Admin && !self.pii
    }
}

struct Keys {
    ring: KeyRing,
    loaded: Instant,
}

struct Token {
    key_id: String,
    expires: Instant,
}

/// Checks keys and tokens against the lake's key file.
pub struct Authenticator {
    lake: Lake,
    keys: RwLock<Keys>,
    tokens: Mutex<HashMap<[u8; 32], Token>>,
    ttl: Duration,
}

fn unauthenticated(msg: &str) -> Status {
    Status::unauthenticated(msg.to_string())
}

impl Authenticator {
    /// Load the keys of `lake`.
    pub async fn new(lake: Lake, ttl: Duration) -> keystone_lake::Result<Self> {
        let ring = lake.keys().await?;
        Ok(Self {
            lake,
            keys: RwLock::new(Keys {
                ring,
                loaded: Instant::now(),
            }),
            tokens: Mutex::new(HashMap::new()),
            ttl,
        })
    }

    /// The key ring, re-read when older than the reload interval.
    async fn ring(&self) -> KeyRing {
        {
            let keys = self.keys.read().await;
            if keys.loaded.elapsed() < KEY_RELOAD_INTERVAL {
                return keys.ring.clone();
            }
        }
        let mut keys = self.keys.write().await;
        if keys.loaded.elapsed() >= KEY_RELOAD_INTERVAL {
            // A lake that cannot be read keeps the last known keys.
            if let Ok(ring) = self.lake.keys().await {
                keys.ring = ring;
            }
            keys.loaded = Instant::now();
        }
        keys.ring.clone()
    }

    async fn verify_key(&self, key: &str) -> Result<Principal, Status> {
        let ring = self.ring().await;
        ring.verify(key)
            .map(Principal::from_record)
            .ok_or_else(|| unauthenticated("unknown or revoked key"))
    }

    fn token_digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    async fn verify_token(&self, token: &str) -> Result<Principal, Status> {
        let digest = Self::token_digest(token);
        let key_id = {
            let mut tokens = self
                .tokens
                .lock()
                .map_err(|_| Status::internal("token table poisoned"))?;
            let now = Instant::now();
            tokens.retain(|_, t| t.expires > now);
            match tokens.get(&digest) {
                Some(t) => t.key_id.clone(),
                None => return Err(unauthenticated("unknown or expired token: handshake again")),
            }
        };
        let ring = self.ring().await;
        ring.records()
            .iter()
            .find(|r| r.id == key_id && !r.revoked)
            .map(|r| Principal {
                session: Some(digest),
                ..Principal::from_record(r)
            })
            .ok_or_else(|| unauthenticated("the key of this token was revoked"))
    }

    /// The caller of a request, from its `authorization` header.
    pub async fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        let header = metadata
            .get("authorization")
            .ok_or_else(|| {
                unauthenticated(
                    "missing authorization: send `authorization: Bearer <key>` or use the Basic handshake",
                )
            })?
            .to_str()
            .map_err(|_| unauthenticated("authorization header is not ASCII"))?;
        if let Some(bearer) = strip_scheme(header, "Bearer") {
            let bearer = bearer.trim();
            if bearer.starts_with(TOKEN_PREFIX) {
                return self.verify_token(bearer).await;
            }
            return self.verify_key(bearer).await;
        }
        if let Some(basic) = strip_scheme(header, "Basic") {
            let key = basic_key(basic)?;
            return self.verify_key(&key).await;
        }
        Err(unauthenticated(
            "authorization must be `Bearer <key>` or `Basic base64(user:key)`",
        ))
    }

    /// The Basic (or Bearer) handshake: the caller and a new token.
    pub async fn handshake(&self, metadata: &MetadataMap) -> Result<(Principal, String), Status> {
        let mut principal = self.authenticate(metadata).await?;
        let token = format!(
            "{TOKEN_PREFIX}{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut tokens = self
            .tokens
            .lock()
            .map_err(|_| Status::internal("token table poisoned"))?;
        let digest = Self::token_digest(&token);
        principal.session = Some(digest);
        tokens.insert(
            digest,
            Token {
                key_id: principal.key_id.clone(),
                expires: Instant::now() + self.ttl,
            },
        );
        Ok((principal, token))
    }
}

fn strip_scheme<'a>(header: &'a str, scheme: &str) -> Option<&'a str> {
    let (given, rest) = header.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// The key in `base64(user:password)`: whichever part is a Keystone key.
fn basic_key(encoded: &str) -> Result<String, Status> {
    // Clients differ on padding (Go's Flight client sends none).
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    let encoded = encoded.trim();
    let decoded = STANDARD
        .decode(encoded)
        .or_else(|_| STANDARD_NO_PAD.decode(encoded))
        .map_err(|_| unauthenticated("Basic credentials are not base64"))?;
    let text = String::from_utf8(decoded)
        .map_err(|_| unauthenticated("Basic credentials are not UTF-8"))?;
    let (user, password) = text.split_once(':').unwrap_or((text.as_str(), ""));
    if password.starts_with(keystone_lake::KEY_PREFIX) {
        Ok(password.to_string())
    } else {
        Ok(user.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_key_takes_the_part_that_is_a_key() {
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(basic_key(&enc("ks_abc:")).expect("key"), "ks_abc");
        assert_eq!(basic_key(&enc("analyst:ks_def")).expect("key"), "ks_def");
        assert_eq!(basic_key(&enc("ks_only")).expect("key"), "ks_only");
        assert!(basic_key("%%%").is_err());
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode("bi:ks_xyz");
        assert_eq!(basic_key(&unpadded).expect("key"), "ks_xyz");
    }

    #[test]
    fn scheme_is_case_insensitive() {
        assert_eq!(strip_scheme("bearer x", "Bearer"), Some("x"));
        assert_eq!(strip_scheme("Basic y", "Bearer"), None);
        assert_eq!(strip_scheme("Bearer", "Bearer"), None);
    }
}
