//! `keystone.toml`: one typed file, every key overridable by the command line
//! or the environment.
//!
//! ```toml
//! lake = "s3://my-bucket/keystone"     # or a folder; --lake / KEYSTONE_LAKE win
//!
//! [ingest]
//! batch_rows = 65536                   # KEYSTONE_INGEST_BATCH_ROWS
//!
//! [identity]                           # resolution rules (see docs/identity.md)
//! default_region = "FR"
//! blocked = ["test@test.com"]
//!
//! [collector]                          # keystone serve (see docs/collector.md)
//! flush_interval_ms = 1000
//! wal_budget_bytes = 1073741824
//!
//! [flight]                             # Flight SQL of keystone serve (see docs/flight-sql.md)
//! query_memory_limit_bytes = 1073741824
//! query_timeout_secs = 300
//!
//! [retention]                        # keystone maintain (see docs/privacy.md)
//! anonymous_events_days = 395          # never-identified visitors: 13 months
//! quarantine_days = 30
//!
//! [maintain]
//! target_file_mb = 128
//! interval_minutes = 60                # keystone serve runs it (0: never)
//!
//! [profiles]
//! refresh_hours = 24                   # rebuild profiles from every event this often (0: every run)
//!
//! [profiles.traits]                    # computed traits: SQL aggregates over events_resolved
//! orders_90d = "count(*) FILTER (WHERE event = 'Order Completed' AND \"timestamp\" > now() - INTERVAL '90 days')"
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use keystone_collect::CollectorConfig;
use keystone_engine::maintain::{MaintainConfig, RetentionConfig};
use keystone_engine::profiles::ComputedTrait;
use keystone_flight::FlightConfig;
use keystone_identity::Rules;
use keystone_lake::Lake;
use serde::Deserialize;

/// The lake used when nothing else names one.
pub const DEFAULT_LAKE: &str = "./keystone-lake";

/// The config file, as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub lake: Option<String>,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub identity: Rules,
    #[serde(default)]
    pub profiles: ProfilesConfig,
    #[serde(default)]
    pub collector: CollectorConfig,
    #[serde(default)]
    pub flight: FlightConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    #[serde(default)]
    pub maintain: MaintainConfig,
}

/// `[profiles]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilesConfig {
    /// Computed traits: column name → SQL aggregate over `events_resolved`.
    #[serde(default = "default_traits")]
    pub traits: BTreeMap<String, String>,
    /// Between two builds of `profiles` from every event, `resolve` updates
    /// profiles from new events only; a computed trait with a time window
    /// (`now()`) is exact as of the last full build. Default 24, 0: always.
    pub refresh_hours: Option<u64>,
}

impl Default for ProfilesConfig {
    fn default() -> Self {
        Self {
            traits: default_traits(),
            refresh_hours: None,
        }
    }
}

/// The computed traits of a config that declares none.
pub fn default_traits() -> BTreeMap<String, String> {
    let order = "type = 'track' AND event = 'Order Completed'";
    BTreeMap::from([
        (
            "orders_90d".to_string(),
            format!(
                "count(*) FILTER (WHERE {order} AND \"timestamp\" > now() - INTERVAL '90 days')"
            ),
        ),
        (
            "days_since_last_order".to_string(),
            format!(
                "CAST(floor((to_unixtime(now()) - to_unixtime(max(\"timestamp\") FILTER (WHERE {order}))) / 86400) AS BIGINT)"
            ),
        ),
        (
            "favorite_category".to_string(),
            format!("most_frequent(category) FILTER (WHERE {order})"),
        ),
    ])
}

/// `[ingest]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub batch_rows: Option<usize>,
}

/// Everything a command needs to know about where and how to run.
#[derive(Debug)]
pub struct Settings {
    pub lake_location: String,
    pub batch_rows: usize,
    pub quiet: bool,
    pub rules: Rules,
    pub traits: Vec<ComputedTrait>,
    /// Seconds between builds of `profiles` from every event (`None`: default).
    pub profile_refresh_secs: Option<u64>,
    pub collector: CollectorConfig,
    pub flight: FlightConfig,
    pub retention: RetentionConfig,
    pub maintain: MaintainConfig,
}

impl Settings {
    /// Combine flags, environment (already folded into flags by clap) and the config file.
    pub fn resolve(lake: Option<&str>, config: Option<&Path>, quiet: bool) -> anyhow::Result<Self> {
        let file = match config {
            Some(path) => Some(read(path)?),
            None if Path::new("keystone.toml").is_file() => Some(read(Path::new("keystone.toml"))?),
            None => None,
        }
        .unwrap_or_default();
        let batch_rows = match std::env::var("KEYSTONE_INGEST_BATCH_ROWS") {
            Ok(v) => v
                .parse()
                .with_context(|| format!("KEYSTONE_INGEST_BATCH_ROWS is not a number: {v:?}"))?,
            Err(_) => file.ingest.batch_rows.unwrap_or(64 * 1024),
        };
        Ok(Self {
            lake_location: lake
                .map(str::to_string)
                .or(file.lake)
                .unwrap_or_else(|| DEFAULT_LAKE.into()),
            batch_rows,
            quiet,
            rules: file.identity,
            profile_refresh_secs: file.profiles.refresh_hours.map(|h| h.saturating_mul(3600)),
            traits: file
                .profiles
                .traits
                .into_iter()
                .map(|(name, sql)| ComputedTrait { name, sql })
                .collect(),
            collector: file.collector,
            flight: file.flight,
            retention: file.retention,
            maintain: file.maintain,
        })
    }

    /// Open the lake, creating a local folder that is not there yet (for
    /// the commands that write a lake from nothing: `ingest`, `demo`,
    /// `serve`, `keys`).
    pub fn lake(&self) -> anyhow::Result<Lake> {
        Ok(Lake::open(&self.lake_location)?)
    }

    /// Open a lake that must already exist: a mistyped `--lake` is an error,
    /// not a new empty lake.
    pub fn existing_lake(&self) -> anyhow::Result<Lake> {
        Ok(Lake::open_existing(&self.lake_location)?)
    }
}

fn read(path: &Path) -> anyhow::Result<ConfigFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<ConfigFile>("lake = \"x\"\nlakes = 1").unwrap_err();
        assert!(err.to_string().contains("lakes"), "{err}");
    }

    #[test]
    fn identity_and_profile_sections_are_typed() {
        let f: ConfigFile = toml::from_str(
            "[identity]\ndefault_region = \"FR\"\nlimits = { email = 2 }\n[profiles.traits]\nvisits = \"count(*)\"\n",
        )
        .unwrap();
        assert_eq!(f.identity.default_region.as_deref(), Some("FR"));
        assert_eq!(f.identity.limit("email"), 2);
        assert_eq!(f.profiles.traits.len(), 1);
        let err = toml::from_str::<ConfigFile>("[identity]\nlimit = 1").unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
        let c: ConfigFile = toml::from_str("[collector]\nflush_interval_ms = 50\n").unwrap();
        assert_eq!(c.collector.flush_interval_ms, 50);
        assert_eq!(c.collector.max_batch_events, 2500);
        let err = toml::from_str::<ConfigFile>("[collector]\nflush_ms = 1").unwrap_err();
        assert!(err.to_string().contains("flush_ms"), "{err}");
        let f: ConfigFile = toml::from_str("[flight]\nquery_timeout_secs = 5\n").unwrap();
        assert_eq!(f.flight.query_timeout_secs, 5);
        let err = toml::from_str::<ConfigFile>("[flight]\ntimeout = 1").unwrap_err();
        assert!(err.to_string().contains("timeout"), "{err}");
        let d = ConfigFile::default();
        assert!(d.profiles.traits.contains_key("orders_90d"));
    }

    #[test]
    fn flag_wins_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "lake = \"from-file\"\n[ingest]\nbatch_rows = 10\n").unwrap();
        let s = Settings::resolve(None, Some(&path), false).unwrap();
        assert_eq!(s.lake_location, "from-file");
        let s = Settings::resolve(Some("from-flag"), Some(&path), false).unwrap();
        assert_eq!(s.lake_location, "from-flag");
    }
}
