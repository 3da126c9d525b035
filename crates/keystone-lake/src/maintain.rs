//! Table upkeep: compaction of the small files streaming ingestion leaves,
//! checkpoints, vacuum, and row deletes by a source of keys (retention).

use std::num::NonZeroU64;

use deltalake::datafusion::prelude::DataFrame;
use deltalake::protocol::checkpoints::create_checkpoint;

use crate::{Error, Lake, Result, TableSpec};

/// What maintenance did to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableUpkeep {
    pub files_before: u64,
    pub files_after: u64,
    pub files_compacted: u64,
    pub files_written: u64,
    pub files_vacuumed: u64,
}

impl Lake {
    /// Compact `spec`'s table to files of about `target_bytes`, checkpoint,
    /// and vacuum files unused for `vacuum_retention` (Delta's default guard
    /// of 7 days applies unless `vacuum_retention` is shorter and `force`).
    pub async fn upkeep(
        &self,
        spec: &TableSpec,
        target_bytes: u64,
        vacuum_retention: chrono::Duration,
    ) -> Result<Option<TableUpkeep>> {
        let Some(table) = self.load(spec).await? else {
            return Ok(None);
        };
        let files_before = table
            .get_file_uris()
            .map_err(|e| Error::delta(spec.name, e))?
            .count() as u64;
        let target = NonZeroU64::new(target_bytes.max(1)).unwrap_or(NonZeroU64::MIN);
        let (table, metrics) = table
            .optimize()
            .with_target_size(target)
            .await
            .map_err(|e| Error::delta(spec.name, e))?;
        create_checkpoint(&table, None)
            .await
            .map_err(|e| Error::delta(spec.name, e))?;
        let (table, vacuum) = table
            .vacuum()
            .with_retention_period(vacuum_retention)
            .with_enforce_retention_duration(false)
            .await
            .map_err(|e| Error::delta(spec.name, e))?;
        let files_after = table
            .get_file_uris()
            .map_err(|e| Error::delta(spec.name, e))?
            .count() as u64;
        Ok(Some(TableUpkeep {
            files_before,
            files_after,
            files_compacted: metrics.num_files_removed,
            files_written: metrics.num_files_added,
            files_vacuumed: vacuum.files_deleted.len() as u64,
        }))
    }

    /// Delete the rows of `spec`'s table that match a row of `keys` on
    /// `on` (a SQL predicate over `t.` target and `s.` source columns), in
    /// one commit; returns how many.
    pub async fn delete_matching(
        &self,
        spec: &TableSpec,
        keys: DataFrame,
        on: &str,
    ) -> Result<u64> {
        let Some(table) = self.load(spec).await? else {
            return Ok(0);
        };
        let (_, metrics) = table
            .merge(keys, on)
            .with_source_alias("s")
            .with_target_alias("t")
            .when_matched_delete(|d| d)
            .map_err(|e| Error::delta(spec.name, e))?
            .await
            .map_err(|e| Error::delta(spec.name, e))?;
        Ok(metrics.num_target_rows_deleted as u64)
    }
}
