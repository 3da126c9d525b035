//! Personal data hidden from callers without the `pii` grant.
//!
//! A [`MaskedSchema`] wraps a schema and serves each table through a view
//! that keeps every column, name and type, but:
//!
//! | column | shown as |
//! |---|---|
//! | `email`, `phone`, `ip` | hex SHA-256 of the value (joins and distinct counts still work) |
//! | `identifier` where `identifier_type` is `email` or `phone` | hex SHA-256 |
//! | `traits`, `context`, `raw` (JSON that may hold anything about a person) | NULL |
//! | `reason` of a table with `raw` (`quarantine`: quotes the value refused) | each quoted value as `"…"` |
//!
//! A filter on a masked column compares against the masked value, so
//! `WHERE email = 'jane@example.org'` finds nothing: the clear value never
//! reaches the query.

use std::sync::Arc;

use arrow::datatypes::DataType;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::Result;
use datafusion::functions::crypto::expr_fn::sha256;
use datafusion::functions::encoding::expr_fn::encode;
use datafusion::functions::regex::expr_fn::regexp_replace;
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, case, cast, col, lit};
use datafusion::scalar::ScalarValue;

/// Columns shown as their hex SHA-256.
pub const HASHED_COLUMNS: &[&str] = &["email", "phone", "ip"];
/// Columns removed (shown as NULL).
pub const REMOVED_COLUMNS: &[&str] = &["traits", "context", "raw"];
/// Identifier types whose values are hashed in `identifier` columns.
pub const HASHED_IDENTIFIER_TYPES: &[&str] = &["email", "phone"];

/// A schema whose tables hide personal data.
#[derive(Debug)]
pub struct MaskedSchema {
    inner: Arc<dyn SchemaProvider>,
}

impl MaskedSchema {
    /// Mask every table of `inner`.
    pub fn new(inner: Arc<dyn SchemaProvider>) -> Self {
        Self { inner }
    }
}

fn hashed(column: &str) -> Expr {
    encode(sha256(col(column)), lit("hex"))
}

/// `provider` seen through the masks, or `provider` itself when it has no
/// personal column.
pub fn mask_table(name: &str, provider: Arc<dyn TableProvider>) -> Result<Arc<dyn TableProvider>> {
    let schema = provider.schema();
    let has_identifier_type = schema.column_with_name("identifier_type").is_some();
    let has_raw = schema.column_with_name("raw").is_some();
    let mut touched = false;
    let exprs: Vec<Expr> = schema
        .fields()
        .iter()
        .map(|f| -> Result<Expr> {
            let n = f.name().as_str();
            let text = matches!(
                f.data_type(),
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
            );
            let masked = if text && HASHED_COLUMNS.contains(&n) {
                Some(hashed(n))
            } else if REMOVED_COLUMNS.contains(&n) {
                Some(lit(ScalarValue::try_from(f.data_type())?))
            } else if text && n == "reason" && has_raw {
                // ``line 4: `timestamp` is not ISO-8601: "jane@example.org"``
                Some(regexp_replace(
                    col(n),
                    lit(r#""([^"\\]|\\.)*""#),
                    lit("\"…\""),
                    Some(lit("g")),
                ))
            } else if text && n == "identifier" && has_identifier_type {
                let types = HASHED_IDENTIFIER_TYPES.iter().map(|t| lit(*t)).collect();
                Some(
                    case(col("identifier_type").in_list(types, false))
                        .when(lit(true), hashed(n))
                        .otherwise(col(n))?,
                )
            } else {
                None
            };
            touched |= masked.is_some();
            Ok(match masked {
                Some(e) => cast(e, f.data_type().clone()).alias(n),
                None => col(n),
            })
        })
        .collect::<Result<_>>()?;
    if !touched {
        return Ok(provider);
    }
    let plan = LogicalPlanBuilder::scan(name, provider_as_source(provider), None)?
        .project(exprs)?
        .build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

#[async_trait]
impl SchemaProvider for MaskedSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match self.inner.table(name).await? {
            Some(provider) => Ok(Some(mask_table(name, provider)?)),
            None => Ok(None),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{RecordBatch, StringArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn quarantine_reasons_keep_the_diagnosis_without_the_values() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("raw", DataType::Utf8, true),
            Field::new("reason", DataType::Utf8, true),
        ]));
        let reasons = [
            r#"line 4: `timestamp` is not ISO-8601: "leak4@example.org""#,
            r#"line 5: `email` is not valid: "a \"quoted\" jane@example.org" (2 values: "x", "y")"#,
            "line 6: no identifier: user_id, anonymous_id, email and phone are all null",
        ];
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec![Some("{}"); 3])),
                Arc::new(StringArray::from(reasons.to_vec())),
            ],
        )
        .unwrap();
        let table = Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap());
        let masked = mask_table("quarantine", table).unwrap();
        let ctx = SessionContext::new();
        ctx.register_table("quarantine", masked).unwrap();
        let batches = ctx
            .sql("SELECT raw, reason FROM quarantine")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let reason = arrow::compute::cast(batches[0].column(1), &DataType::Utf8).unwrap();
        let reason: Vec<&str> = reason
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap()
            .iter()
            .flatten()
            .collect();
        assert_eq!(
            reason,
            [
                r#"line 4: `timestamp` is not ISO-8601: "…""#,
                r#"line 5: `email` is not valid: "…" (2 values: "…", "…")"#,
                reasons[2],
            ]
        );
        assert_eq!(batches[0].column(0).null_count(), 3, "raw is removed");
    }
}
