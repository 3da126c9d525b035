//! Whole-table rewrites, deletes, file listings and Keystone's own small
//! state files under `_keystone/`.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::Value;

use crate::append::{commit_properties, writer_properties};
use crate::{Error, Lake, Result, TableSpec};

impl Lake {
    /// Replace the whole content of `spec`'s table by `batches` in one commit
    /// (the schema follows the batches: columns may come and go), with the
    /// application transactions `txns` and `metadata` in its `commitInfo`.
    /// Returns the new version. Files are cut in row groups of the same size
    /// as appends, so a scan of even a one-file table (`profiles`) runs on
    /// every core.
    pub async fn overwrite(
        &self,
        spec: &TableSpec,
        batches: Vec<RecordBatch>,
        txns: Vec<(String, i64)>,
        metadata: HashMap<String, Value>,
    ) -> Result<i64> {
        let table = self.load_or_create(spec).await?;
        let props = commit_properties(txns, metadata);
        let table = table
            .write(batches)
            .with_save_mode(SaveMode::Overwrite)
            .with_schema_mode(SchemaMode::Overwrite)
            .with_writer_properties(writer_properties())
            .with_commit_properties(props)
            .await
            .map_err(|e| Error::delta(spec.name, e))?;
        Ok(table.version().unwrap_or_default() as i64)
    }

    /// Delete the rows of `spec`'s table matching the SQL `predicate`;
    /// returns how many were deleted (0 when the table does not exist).
    pub async fn delete_where(&self, spec: &TableSpec, predicate: &str) -> Result<u64> {
        let Some(table) = self.load(spec).await? else {
            return Ok(0);
        };
        let (_, metrics) = table
            .delete()
            .with_predicate(predicate)
            .await
            .map_err(|e| Error::delta(spec.name, e))?;
        Ok(metrics.num_deleted_rows.unwrap_or_default() as u64)
    }

    /// URIs of the data files of `spec`'s table at `version` (the latest when
    /// `None`), with that version; `None` when the table does not exist.
    pub async fn file_uris(
        &self,
        spec: &TableSpec,
        version: Option<i64>,
    ) -> Result<Option<(i64, Vec<String>)>> {
        let Some(mut table) = self.load(spec).await? else {
            return Ok(None);
        };
        if let Some(v) = version {
            table
                .load_version(v as u64)
                .await
                .map_err(|e| Error::delta(spec.name, e))?;
        }
        let uris = table
            .get_file_uris()
            .map_err(|e| Error::delta(spec.name, e))?
            .collect();
        Ok(Some((table.version().unwrap_or_default() as i64, uris)))
    }

    fn state_store(&self, name: &str) -> Result<(Box<dyn ObjectStore>, StorePath)> {
        let url = self
            .root()
            .join(&format!("_keystone/{name}"))
            .map_err(|e| Error::InvalidLocation {
                location: format!("{}_keystone/{name}", self.root()),
                reason: e.to_string(),
            })?;
        object_store::parse_url_opts(&url, self.storage_options().clone()).map_err(|e| {
            Error::State {
                name: name.to_string(),
                reason: e.to_string(),
            }
        })
    }

    /// Read the state file `_keystone/<name>` (`None` if absent).
    pub async fn read_state(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let (store, path) = self.state_store(name)?;
        match store.get(&path).await {
            Ok(got) => got
                .bytes()
                .await
                .map(|b| Some(b.to_vec()))
                .map_err(|e| Error::State {
                    name: name.to_string(),
                    reason: e.to_string(),
                }),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::State {
                name: name.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Remove the state file `_keystone/<name>` (nothing to do if absent).
    pub async fn delete_state(&self, name: &str) -> Result<()> {
        let (store, path) = self.state_store(name)?;
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::State {
                name: name.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Write the state file `_keystone/<name>` (replacing it whole).
    pub async fn write_state(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        let (store, path) = self.state_store(name)?;
        if self.is_local() {
            let url = self.url_of("_keystone")?;
            if let Ok(dir) = url.to_file_path() {
                std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
        }
        store
            .put(&path, bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| Error::State {
                name: name.to_string(),
                reason: e.to_string(),
            })
    }
}
