//! `identity_key(...)`: the identifier an event is resolved by.
//!
//! An event belongs to the profile of its highest-priority identifier that the
//! value rules admit (the graph never cuts that one: on a conflict it drops
//! the lowest-priority identifiers first). This function finds it with the
//! same extraction and rules as `keystone resolve`, so `events_resolved` is
//! one hash join of `events` with `identities`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder, StructArray};
use arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use keystone_identity::{EventIds, Rules, extract_with};

/// The columns of `events` that `identity_key` takes, in order.
pub const IDENTITY_KEY_ARGS: &[&str] = &[
    "user_id",
    "anonymous_id",
    "previous_id",
    "email",
    "phone",
    "device_id",
    "context",
    "properties",
    "traits",
];

/// One string column, whatever its Arrow string type.
pub(crate) enum StrCol<'a> {
    Utf8(&'a arrow::array::StringArray),
    Large(&'a arrow::array::LargeStringArray),
    View(&'a arrow::array::StringViewArray),
    Null,
}

impl<'a> StrCol<'a> {
    pub(crate) fn new(array: &'a dyn Array) -> Result<Self> {
        Ok(match array.data_type() {
            DataType::Utf8 => Self::Utf8(array.as_string::<i32>()),
            DataType::LargeUtf8 => Self::Large(array.as_string::<i64>()),
            DataType::Utf8View => Self::View(array.as_string_view()),
            DataType::Null => Self::Null,
            other => return exec_err!("expected a string column, got {other}"),
        })
    }

    pub(crate) fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Self::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            Self::Large(a) => a.is_valid(i).then(|| a.value(i)),
            Self::View(a) => a.is_valid(i).then(|| a.value(i)),
            Self::Null => None,
        }
    }
}

/// The identifiers of row `i` of the nine identity columns.
pub(crate) fn event_ids<'a>(cols: &[StrCol<'a>], i: usize) -> EventIds<'a> {
    EventIds {
        user_id: cols[0].get(i),
        anonymous_id: cols[1].get(i),
        previous_id: cols[2].get(i),
        email: cols[3].get(i),
        phone: cols[4].get(i),
        device_id: cols[5].get(i),
        context: cols[6].get(i),
        properties: cols[7].get(i),
        traits: cols[8].get(i),
    }
}

#[derive(Debug)]
struct IdentityKey {
    rules: Rules,
    signature: Signature,
    fields: Fields,
}

impl PartialEq for IdentityKey {
    fn eq(&self, other: &Self) -> bool {
        self.rules == other.rules
    }
}

impl Eq for IdentityKey {}

impl std::hash::Hash for IdentityKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        format!("{:?}", self.rules).hash(state);
    }
}

/// The `identity_key` function for `rules`: returns `{type, value}` of the
/// event's resolving identifier, or NULL when it has none.
pub fn identity_key_udf(rules: Rules) -> ScalarUDF {
    ScalarUDF::new_from_impl(IdentityKey {
        rules,
        signature: Signature::any(IDENTITY_KEY_ARGS.len(), Volatility::Immutable),
        fields: Fields::from(vec![
            Field::new("type", DataType::Utf8, true),
            Field::new("value", DataType::Utf8, true),
        ]),
    })
}

impl ScalarUDFImpl for IdentityKey {
    fn name(&self) -> &str {
        "identity_key"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(self.fields.clone()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let cols = arrays
            .iter()
            .map(|a| StrCol::new(a.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let mut kinds = StringBuilder::with_capacity(n, n * 12);
        let mut values = StringBuilder::with_capacity(n, n * 32);
        let mut nulls = Vec::with_capacity(n);
        for i in 0..n {
            // (priority position, type, value) of the best identifier so far.
            let mut best: Option<(usize, String, String)> = None;
            extract_with(
                &event_ids(&cols, i),
                &self.rules,
                &mut |kind, value, verdict| {
                    if verdict.is_err() {
                        return;
                    }
                    let (position, tie) = self.rules.rank(kind);
                    let better = best.as_ref().is_none_or(|(p, k, v)| {
                        let (_, best_tie) = self.rules.rank(k);
                        (position, tie, value.as_ref()) < (*p, best_tie, v.as_str())
                    });
                    if better {
                        best = Some((position, kind.to_string(), value.into_owned()));
                    }
                },
            );
            match &best {
                Some((_, k, v)) => {
                    kinds.append_value(k);
                    values.append_value(v);
                    nulls.push(true);
                }
                None => {
                    kinds.append_null();
                    values.append_null();
                    nulls.push(false);
                }
            }
        }
        let columns: Vec<ArrayRef> = vec![Arc::new(kinds.finish()), Arc::new(values.finish())];
        let array = StructArray::try_new(self.fields.clone(), columns, Some(nulls.into()))?;
        Ok(ColumnarValue::Array(Arc::new(array)))
    }
}

/// Keystone's aggregates. Both return a string and carry their partial state
/// between aggregation phases as one JSON text.
#[derive(Debug, PartialEq, Eq, Hash)]
struct KeystoneAggregate {
    name: &'static str,
    signature: Signature,
}

/// `most_frequent(x)`: the most frequent non-null string of a group (ties go
/// to the smallest value), e.g. a profile's favourite category.
pub fn most_frequent_udaf() -> datafusion::logical_expr::AggregateUDF {
    datafusion::logical_expr::AggregateUDF::from(KeystoneAggregate {
        name: "most_frequent",
        signature: Signature::any(1, Volatility::Immutable),
    })
}

/// `latest_traits(json, timestamp)`: merge JSON objects, keeping for each key
/// the latest non-null value (by `timestamp`; ties go to the larger value
/// text, so the result does not depend on the order of rows).
pub fn latest_traits_udaf() -> datafusion::logical_expr::AggregateUDF {
    datafusion::logical_expr::AggregateUDF::from(KeystoneAggregate {
        name: "latest_traits",
        signature: Signature::any(2, Volatility::Immutable),
    })
}

/// `latest_consents(json, timestamp)`: merge consent preference objects
/// (`{"marketing": true, ...}`), keeping for each purpose the latest boolean
/// (by `timestamp`; on a tie a refusal wins). Non-boolean values are ignored.
pub fn latest_consents_udaf() -> datafusion::logical_expr::AggregateUDF {
    datafusion::logical_expr::AggregateUDF::from(KeystoneAggregate {
        name: "latest_consents",
        signature: Signature::any(2, Volatility::Immutable),
    })
}

impl datafusion::logical_expr::AggregateUDFImpl for KeystoneAggregate {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn accumulator(
        &self,
        _args: datafusion::logical_expr::function::AccumulatorArgs,
    ) -> Result<Box<dyn datafusion::logical_expr::Accumulator>> {
        Ok(match self.name {
            "most_frequent" => Box::new(MostFrequentAcc::default()),
            "latest_consents" => Box::new(LatestTraitsAcc {
                consents: true,
                ..Default::default()
            }),
            _ => Box::new(LatestTraitsAcc::default()),
        })
    }

    fn state_fields(
        &self,
        _args: datafusion::logical_expr::function::StateFieldsArgs,
    ) -> Result<Vec<arrow::datatypes::FieldRef>> {
        Ok(vec![Arc::new(Field::new("state", DataType::Utf8, true))])
    }
}

#[derive(Debug, Default)]
struct MostFrequentAcc {
    counts: std::collections::HashMap<String, u64>,
}

impl datafusion::logical_expr::Accumulator for MostFrequentAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let col = StrCol::new(values[0].as_ref())?;
        for i in 0..values[0].len() {
            if let Some(v) = col.get(i) {
                *self.counts.entry(v.to_string()).or_default() += 1;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<datafusion::scalar::ScalarValue> {
        let best = self
            .counts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(v, _)| v.clone());
        Ok(datafusion::scalar::ScalarValue::Utf8(best))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.counts.keys().map(|k| k.len() + 40).sum::<usize>()
    }

    fn state(&mut self) -> Result<Vec<datafusion::scalar::ScalarValue>> {
        let json = serde_json::to_string(&self.counts).map_err(ext)?;
        Ok(vec![datafusion::scalar::ScalarValue::Utf8(Some(json))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let col = StrCol::new(states[0].as_ref())?;
        for i in 0..states[0].len() {
            if let Some(text) = col.get(i) {
                let part: std::collections::HashMap<String, u64> =
                    serde_json::from_str(text).map_err(ext)?;
                for (k, n) in part {
                    *self.counts.entry(k).or_default() += n;
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct LatestTraitsAcc {
    /// key → (timestamp, value as JSON text)
    latest: std::collections::BTreeMap<String, (i64, String)>,
    /// `latest_consents`: booleans only, and on a tie the smaller value
    /// (`false`) wins.
    consents: bool,
}

impl LatestTraitsAcc {
    fn offer(&mut self, key: &str, ts: i64, value: String) {
        let consents = self.consents;
        let newer = |cur: &(i64, String)| {
            if consents {
                ts > cur.0 || (ts == cur.0 && value < cur.1)
            } else {
                (ts, &value) > (cur.0, &cur.1)
            }
        };
        match self.latest.get_mut(key) {
            Some(cur) if newer(cur) => *cur = (ts, value),
            Some(_) => {}
            None => {
                self.latest.insert(key.to_string(), (ts, value));
            }
        }
    }
}

fn ext(e: serde_json::Error) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::External(Box::new(e))
}

impl datafusion::logical_expr::Accumulator for LatestTraitsAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let col = StrCol::new(values[0].as_ref())?;
        let ts = arrow::compute::cast(
            &values[1],
            &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
        )?;
        let ts = ts.as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        for i in 0..values[0].len() {
            let Some(text) = col.get(i) else { continue };
            let Ok(serde_json::Value::Object(obj)) = serde_json::from_str(text) else {
                continue;
            };
            let t = if ts.is_valid(i) {
                ts.value(i)
            } else {
                i64::MIN
            };
            for (k, v) in obj {
                if (self.consents && v.is_boolean()) || (!self.consents && !v.is_null()) {
                    self.offer(&k, t, v.to_string());
                }
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<datafusion::scalar::ScalarValue> {
        if self.latest.is_empty() {
            return Ok(datafusion::scalar::ScalarValue::Utf8(None));
        }
        let mut obj = serde_json::Map::new();
        for (k, (_, v)) in &self.latest {
            obj.insert(k.clone(), serde_json::from_str(v).map_err(ext)?);
        }
        Ok(datafusion::scalar::ScalarValue::Utf8(Some(
            serde_json::Value::Object(obj).to_string(),
        )))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .latest
                .iter()
                .map(|(k, v)| k.len() + v.1.len() + 56)
                .sum::<usize>()
    }

    fn state(&mut self) -> Result<Vec<datafusion::scalar::ScalarValue>> {
        let json = serde_json::to_string(&self.latest).map_err(ext)?;
        Ok(vec![datafusion::scalar::ScalarValue::Utf8(Some(json))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let col = StrCol::new(states[0].as_ref())?;
        for i in 0..states[0].len() {
            if let Some(text) = col.get(i) {
                let part: std::collections::BTreeMap<String, (i64, String)> =
                    serde_json::from_str(text).map_err(ext)?;
                for (k, (t, v)) in part {
                    self.offer(&k, t, v);
                }
            }
        }
        Ok(())
    }
}
