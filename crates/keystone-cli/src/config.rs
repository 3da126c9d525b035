//! `keystone.toml`: one typed file, every key overridable by the command line
//! or the environment.
//!
//! ```toml
//! lake = "s3://my-bucket/keystone"     # or a folder; --lake / KEYSTONE_LAKE win
//!
//! [ingest]
//! batch_rows = 65536                   # KEYSTONE_INGEST_BATCH_ROWS
//! ```

use std::path::Path;

use anyhow::Context;
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
        })
    }

    /// Open the lake.
    pub fn lake(&self) -> anyhow::Result<Lake> {
        Ok(Lake::open(&self.lake_location)?)
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
