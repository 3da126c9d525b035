//! Erasure support: physical removal of a table's history, and the
//! suppression list that keeps erased people out of future loads.

use std::collections::BTreeSet;

use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::checkpoints::{cleanup_expired_logs_for, create_checkpoint};
use serde::{Deserialize, Serialize};

use crate::{Error, Lake, Result, TableSpec};

const SUPPRESSIONS_STATE: &str = "suppressions.json";

/// Identifiers (hex SHA-256 of `type:value`) whose events are dropped.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppressions {
    pub digests: BTreeSet<String>,
}

impl Suppressions {
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Is `type:value` suppressed?
    pub fn contains(&self, kind: &str, value: &str) -> bool {
        !self.digests.is_empty() && self.digests.contains(&digest(kind, value))
    }
}

/// Hex SHA-256 of `type:value`.
pub fn digest(kind: &str, value: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(format!("{kind}:{value}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Lake {
    /// The suppression list (empty when none).
    pub async fn suppressions(&self) -> Result<Suppressions> {
        let Some(bytes) = self.read_state(SUPPRESSIONS_STATE).await? else {
            return Ok(Suppressions::default());
        };
        serde_json::from_slice(&bytes).map_err(|e| Error::State {
            name: SUPPRESSIONS_STATE.into(),
            reason: format!("not a suppression list: {e}"),
        })
    }

    /// Add digests to the suppression list.
    pub async fn add_suppressions(&self, digests: &[String]) -> Result<()> {
        let mut s = self.suppressions().await?;
        s.digests.extend(digests.iter().cloned());
        let bytes = serde_json::to_vec_pretty(&s).map_err(|e| Error::State {
            name: SUPPRESSIONS_STATE.into(),
            reason: e.to_string(),
        })?;
        self.write_state(SUPPRESSIONS_STATE, bytes).await
    }

    /// Delete from storage every file of `spec`'s table that a commit removed
    /// (zero retention), then
    /// checkpoint and remove the log entries before the checkpoint: after a
    /// delete, nothing of the deleted rows is left under the table, not even
    /// in old file statistics. Returns the data files deleted.
    pub async fn erase_history(&self, spec: &TableSpec) -> Result<u64> {
        let Some(table) = self.load(spec).await? else {
            return Ok(0);
        };
        let (table, metrics) = table
            .vacuum()
            .with_retention_period(chrono::Duration::zero())
            .with_enforce_retention_duration(false)
            // Lite, not Full: Full would also delete the files of an append
            // in progress (written, not yet committed) — losing its events.
            .with_mode(VacuumMode::Lite)
            .await
            .map_err(|e| Error::delta(spec.name, e))?;
        create_checkpoint(&table, None)
            .await
            .map_err(|e| Error::delta(spec.name, e))?;
        let version = table.version().unwrap_or_default();
        let cutoff = chrono::Utc::now().timestamp_millis() + 1_000;
        cleanup_expired_logs_for(version, table.log_store().as_ref(), cutoff, None)
            .await
            .map_err(|e| Error::delta(spec.name, e))?;
        Ok(metrics.files_deleted.len() as u64)
    }
}
