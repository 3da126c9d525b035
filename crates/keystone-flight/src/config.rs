//! `[flight]` in `keystone.toml`.

use std::path::PathBuf;

use serde::Deserialize;

/// Limits and TLS of the Flight SQL service.
///
/// ```toml
/// [flight]
/// query_memory_limit_bytes = 1073741824   # per query; beyond it: RESOURCE_EXHAUSTED
/// query_timeout_secs = 300                # per query, planning to last batch
/// tls_cert = "/etc/keystone/flight.pem"   # both or neither
/// tls_key = "/etc/keystone/flight.key"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlightConfig {
    /// Memory one query may reserve for sorts, joins and aggregations.
    pub query_memory_limit_bytes: usize,
    /// Wall-clock time one query may take, from planning to its last batch.
    pub query_timeout_secs: u64,
    /// Lifetime of a bearer token returned by the Basic handshake.
    pub token_ttl_secs: u64,
    /// Prepared statements kept open at once per key (that key's least
    /// recently used are closed beyond it).
    pub max_prepared_statements: usize,
    /// Largest bulk ingest, in bytes of Arrow data.
    pub max_ingest_bytes: u64,
    /// Largest gRPC message accepted (one Arrow batch of a bulk ingest).
    pub max_message_bytes: usize,
    /// PEM certificate chain; with `tls_key`, the service speaks TLS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for FlightConfig {
    fn default() -> Self {
        Self {
            query_memory_limit_bytes: 1 << 30,
            query_timeout_secs: 300,
            token_ttl_secs: 12 * 3600,
            max_prepared_statements: 10_000,
            max_ingest_bytes: 4 << 30,
            max_message_bytes: 64 << 20,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl FlightConfig {
    /// Refuse settings that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            (
                "query_memory_limit_bytes",
                self.query_memory_limit_bytes as u64,
            ),
            ("query_timeout_secs", self.query_timeout_secs),
            ("token_ttl_secs", self.token_ttl_secs),
            (
                "max_prepared_statements",
                self.max_prepared_statements as u64,
            ),
            ("max_ingest_bytes", self.max_ingest_bytes),
            ("max_message_bytes", self.max_message_bytes as u64),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!("[flight] {name} must be greater than 0"));
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("[flight] tls_cert and tls_key go together: set both or neither".into());
        }
        Ok(())
    }
}
