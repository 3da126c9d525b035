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
    ColumnarValue, EmitTo, GroupsAccumulator, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
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

    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Utf8(a) => a.len(),
            Self::Large(a) => a.len(),
            Self::View(a) => a.len(),
            Self::Null => 0,
        }
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

/// Keystone's aggregates. Each returns a string and carries its partial state
/// between aggregation phases as one binary value (length-prefixed strings
/// and integers: no escaping nor parsing of JSON between the phases). Besides the one-group
/// [`Accumulator`](datafusion::logical_expr::Accumulator) they have a
/// [`GroupsAccumulator`] that keeps the state of every group in a `Vec` and
/// skips rows without input in one branch: a profile build aggregates
/// millions of groups, most rows of which carry no traits nor consents.
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

impl KeystoneAggregate {
    fn groups<S: GroupState>(fresh: fn() -> S) -> Box<dyn GroupsAccumulator> {
        Box::new(Groups {
            fresh,
            states: Vec::new(),
            bytes: 0,
        })
    }
}

fn fresh_traits() -> LatestTraits {
    LatestTraits::default()
}

fn fresh_consents() -> LatestTraits {
    LatestTraits {
        consents: true,
        ..Default::default()
    }
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
            "most_frequent" => Box::new(One(MostFrequent::default())),
            "latest_consents" => Box::new(One(fresh_consents())),
            _ => Box::new(One(fresh_traits())),
        })
    }

    fn groups_accumulator_supported(
        &self,
        _args: datafusion::logical_expr::function::AccumulatorArgs,
    ) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: datafusion::logical_expr::function::AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(match self.name {
            "most_frequent" => Self::groups(MostFrequent::default),
            "latest_consents" => Self::groups(fresh_consents),
            _ => Self::groups(fresh_traits),
        })
    }

    fn state_fields(
        &self,
        _args: datafusion::logical_expr::function::StateFieldsArgs,
    ) -> Result<Vec<arrow::datatypes::FieldRef>> {
        Ok(vec![Arc::new(Field::new("state", DataType::Binary, true))])
    }
}

/// The input columns of one batch: the text and, for the `latest_*`
/// aggregates, the timestamp (as microseconds).
struct Inputs<'a> {
    text: StrCol<'a>,
    ts: Option<&'a arrow::array::TimestampMicrosecondArray>,
}

/// Cast the timestamp argument (any unit) to microseconds.
fn micros(values: &[ArrayRef]) -> Result<Option<ArrayRef>> {
    values
        .get(1)
        .map(|ts| {
            arrow::compute::cast(
                ts,
                &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
            )
            .map_err(Into::into)
        })
        .transpose()
}

fn inputs<'a>(values: &'a [ArrayRef], ts: &'a Option<ArrayRef>) -> Result<Inputs<'a>> {
    Ok(Inputs {
        text: StrCol::new(values[0].as_ref())?,
        ts: ts
            .as_ref()
            .map(|t| t.as_primitive::<arrow::datatypes::TimestampMicrosecondType>()),
    })
}

impl Inputs<'_> {
    fn ts(&self, i: usize) -> i64 {
        match self.ts {
            Some(ts) if ts.is_valid(i) => ts.value(i),
            _ => i64::MIN,
        }
    }
}

/// The state of one group of a Keystone aggregate.
trait GroupState: Send + Sync + std::fmt::Debug + 'static {
    /// Add a row's (non-null) text and timestamp.
    fn update(&mut self, text: &str, ts: i64);
    /// Merge a partial state (the bytes of [`GroupState::state`]).
    fn merge(&mut self, state: &[u8]) -> Result<()>;
    /// The partial state, `None` when nothing was added.
    fn state(&self) -> Option<Vec<u8>>;
    /// The result, `None` when there is none.
    fn result(&self) -> Option<String>;
    /// Heap bytes held.
    fn bytes(&self) -> usize;
}

/// Every group's state of one aggregate.
#[derive(Debug)]
struct Groups<S> {
    fresh: fn() -> S,
    states: Vec<S>,
    /// Sum of `bytes()` of `states`, kept up to date (DataFusion asks for it
    /// after every batch).
    bytes: usize,
}

impl<S: GroupState> Groups<S> {
    fn grow(&mut self, total_num_groups: usize) {
        let fresh = self.fresh;
        if self.states.len() < total_num_groups {
            self.states.resize_with(total_num_groups, fresh);
        }
    }

    fn take(&mut self, emit_to: EmitTo) -> Vec<S> {
        let taken = emit_to.take_needed(&mut self.states);
        self.bytes -= taken.iter().map(GroupState::bytes).sum::<usize>();
        taken
    }
}

fn strings(values: impl Iterator<Item = Option<String>>, n: usize) -> ArrayRef {
    let mut out = StringBuilder::with_capacity(n, n * 8);
    for v in values {
        out.append_option(v);
    }
    Arc::new(out.finish())
}

impl<S: GroupState> GroupsAccumulator for Groups<S> {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&arrow::array::BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        let ts = micros(values)?;
        let input = inputs(values, &ts)?;
        for (i, &g) in group_indices.iter().enumerate() {
            if opt_filter.is_some_and(|f| !f.is_valid(i) || !f.value(i)) {
                continue;
            }
            if let Some(text) = input.text.get(i) {
                let state = &mut self.states[g];
                let before = state.bytes();
                state.update(text, input.ts(i));
                self.bytes = self.bytes + state.bytes() - before;
            }
        }
        Ok(())
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.grow(total_num_groups);
        let col = values[0].as_binary::<i32>();
        for (i, &g) in group_indices.iter().enumerate() {
            if col.is_valid(i) {
                let state = &mut self.states[g];
                let before = state.bytes();
                state.merge(col.value(i))?;
                self.bytes = self.bytes + state.bytes() - before;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let taken = self.take(emit_to);
        Ok(strings(taken.iter().map(GroupState::result), taken.len()))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let taken = self.take(emit_to);
        Ok(vec![binaries(
            taken.iter().map(GroupState::state),
            taken.len(),
        )])
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&arrow::array::BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let ts = micros(values)?;
        let input = inputs(values, &ts)?;
        let n = values[0].len();
        let mut states = Vec::with_capacity(n);
        for i in 0..n {
            let kept = opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i));
            states.push(match input.text.get(i) {
                Some(text) if kept => {
                    let mut one = (self.fresh)();
                    one.update(text, input.ts(i));
                    one.state()
                }
                _ => None,
            });
        }
        Ok(vec![binaries(states.into_iter(), n)])
    }

    fn size(&self) -> usize {
        self.states.capacity() * std::mem::size_of::<S>() + self.bytes
    }
}

/// A single group's accumulator over a [`GroupState`] (for aggregates
/// without GROUP BY and in window frames).
#[derive(Debug)]
struct One<S>(S);

impl<S: GroupState> datafusion::logical_expr::Accumulator for One<S> {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let ts = micros(values)?;
        let input = inputs(values, &ts)?;
        for i in 0..values[0].len() {
            if let Some(text) = input.text.get(i) {
                self.0.update(text, input.ts(i));
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<datafusion::scalar::ScalarValue> {
        Ok(datafusion::scalar::ScalarValue::Utf8(self.0.result()))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.0.bytes()
    }

    fn state(&mut self) -> Result<Vec<datafusion::scalar::ScalarValue>> {
        Ok(vec![datafusion::scalar::ScalarValue::Binary(
            self.0.state(),
        )])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let col = states[0].as_binary::<i32>();
        for i in 0..col.len() {
            if col.is_valid(i) {
                self.0.merge(col.value(i))?;
            }
        }
        Ok(())
    }
}

fn binaries(values: impl Iterator<Item = Option<Vec<u8>>>, n: usize) -> ArrayRef {
    let mut out = arrow::array::BinaryBuilder::with_capacity(n, n * 8);
    for v in values {
        out.append_option(v);
    }
    Arc::new(out.finish())
}

/// Writer of the binary partial states: strings prefixed with their length
/// (u32, little-endian), integers as 8 little-endian bytes.
fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Reader of a binary partial state; a malformed state is an error, never a panic.
struct StateReader<'a> {
    rest: &'a [u8],
}

impl<'a> StateReader<'a> {
    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.rest.len() < n {
            return exec_err!(
                "malformed aggregate state: {} bytes left, {n} needed",
                self.rest.len()
            );
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    fn i64(&mut self) -> Result<i64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    fn str(&mut self) -> Result<&'a str> {
        let b = self.take(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        let bytes = self.take(u32::from_le_bytes(a) as usize)?;
        std::str::from_utf8(bytes).or_else(|e| exec_err!("malformed aggregate state: {e}"))
    }
}

#[derive(Debug, Default)]
struct MostFrequent {
    counts: std::collections::HashMap<String, u64>,
    bytes: usize,
}

impl MostFrequent {
    fn add(&mut self, value: &str, n: u64) {
        if let Some(c) = self.counts.get_mut(value) {
            *c += n;
        } else {
            self.counts.insert(value.to_string(), n);
            self.bytes += value.len() + 40;
        }
    }
}

impl GroupState for MostFrequent {
    fn update(&mut self, text: &str, _ts: i64) {
        self.add(text, 1)
    }

    fn merge(&mut self, state: &[u8]) -> Result<()> {
        let mut r = StateReader { rest: state };
        while !r.is_empty() {
            let value = r.str()?;
            let n = r.i64()?;
            self.add(value, n as u64);
        }
        Ok(())
    }

    fn state(&self) -> Option<Vec<u8>> {
        if self.counts.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(self.bytes);
        for (value, &n) in &self.counts {
            put_str(&mut out, value);
            put_i64(&mut out, n as i64);
        }
        Some(out)
    }

    fn result(&self) -> Option<String> {
        self.counts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(v, _)| v.clone())
    }

    fn bytes(&self) -> usize {
        self.bytes
    }
}

#[derive(Debug, Default)]
struct LatestTraits {
    /// key → (timestamp, value as JSON text)
    latest: std::collections::BTreeMap<String, (i64, String)>,
    /// `latest_consents`: booleans only, and on a tie the smaller value
    /// (`false`) wins.
    consents: bool,
    bytes: usize,
}

impl LatestTraits {
    /// Offer `value` for `key` (copied only when it is kept).
    fn offer(&mut self, key: &str, ts: i64, value: std::borrow::Cow<'_, str>) {
        let consents = self.consents;
        let newer = |cur: &(i64, String)| {
            if consents {
                ts > cur.0 || (ts == cur.0 && *value < *cur.1)
            } else {
                (ts, &*value) > (cur.0, cur.1.as_str())
            }
        };
        match self.latest.get_mut(key) {
            Some(cur) if newer(cur) => {
                self.bytes = self.bytes + value.len() - cur.1.len();
                *cur = (ts, value.into_owned());
            }
            Some(_) => {}
            None => {
                self.bytes += key.len() + value.len() + 56;
                self.latest
                    .insert(key.to_string(), (ts, value.into_owned()));
            }
        }
    }
}

impl GroupState for LatestTraits {
    fn update(&mut self, text: &str, ts: i64) {
        let Ok(serde_json::Value::Object(obj)) = serde_json::from_str(text) else {
            return;
        };
        for (k, v) in obj {
            if (self.consents && v.is_boolean()) || (!self.consents && !v.is_null()) {
                self.offer(&k, ts, v.to_string().into());
            }
        }
    }

    fn merge(&mut self, state: &[u8]) -> Result<()> {
        let mut r = StateReader { rest: state };
        while !r.is_empty() {
            let key = r.str()?;
            let ts = r.i64()?;
            let value = r.str()?;
            self.offer(key, ts, value.into());
        }
        Ok(())
    }

    fn state(&self) -> Option<Vec<u8>> {
        if self.latest.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(self.bytes);
        for (key, (ts, value)) in &self.latest {
            put_str(&mut out, key);
            put_i64(&mut out, *ts);
            put_str(&mut out, value);
        }
        Some(out)
    }

    /// The object of the latest values, keys in order (each value is the
    /// compact JSON text it was stored as).
    fn result(&self) -> Option<String> {
        if self.latest.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(self.bytes);
        out.push('{');
        for (i, (k, (_, v))) in self.latest.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::Value::from(k.as_str()).to_string());
            out.push(':');
            out.push_str(v);
        }
        out.push('}');
        Some(out)
    }

    fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{Schema, TimeUnit};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    /// Rows (group, json or category, timestamp), spread over `parts`
    /// partitions of `batch` rows so that both aggregation phases run.
    fn table(rows: &[(String, Option<String>, i64)], parts: usize, batch: usize) -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8, false),
            Field::new("v", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        let mut partitions = vec![Vec::new(); parts];
        for (n, chunk) in rows.chunks(batch).enumerate() {
            let b = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from_iter_values(chunk.iter().map(|r| &r.0))),
                    Arc::new(chunk.iter().map(|r| r.1.clone()).collect::<StringArray>()),
                    Arc::new(
                        TimestampMicrosecondArray::from_iter_values(chunk.iter().map(|r| r.2))
                            .with_timezone("UTC"),
                    ),
                ],
            )
            .unwrap();
            partitions[n % parts].push(b);
        }
        MemTable::try_new(schema, partitions).unwrap()
    }

    /// Generated rows: 300 groups; traits objects over a few keys with
    /// nulls, repeated timestamps (ties) and non-objects; categories.
    fn rows(traits: bool) -> Vec<(String, Option<String>, i64)> {
        let mut next = crate::test_sequence(7);
        (0..6000)
            .map(|_| {
                let g = format!("p{}", next(300));
                let ts = next(20) as i64;
                let v = match next(5) {
                    0 => None,
                    _ if !traits => Some(["shoes", "bags", "hats"][next(3) as usize].to_string()),
                    1 => Some("not json".to_string()),
                    _ => {
                        let value = |x: u64| match x {
                            0 => "null".to_string(),
                            1 => "true".to_string(),
                            2 => "false".to_string(),
                            _ => format!("\"v{x}\""),
                        };
                        Some(format!(
                            "{{\"plan\": {}, \"marketing\": {}, \"é\\\"k\": {}}}",
                            value(next(6)),
                            value(next(6)),
                            value(next(6))
                        ))
                    }
                };
                (g, v, ts)
            })
            // Groups without any usable value.
            .chain((0..5).map(|n| (format!("q{n}"), (n % 2 == 0).then(|| "[1]".into()), 3)))
            .collect()
    }

    /// The expected result of `latest_traits`/`latest_consents` per group.
    fn expected_latest(
        rows: &[(String, Option<String>, i64)],
        consents: bool,
    ) -> BTreeMap<String, Option<String>> {
        let mut out: BTreeMap<String, BTreeMap<String, (i64, String)>> = BTreeMap::new();
        for (g, v, ts) in rows {
            let entry = out.entry(g.clone()).or_default();
            let Some(Ok(serde_json::Value::Object(obj))) =
                v.as_deref().map(serde_json::from_str::<serde_json::Value>)
            else {
                continue;
            };
            for (k, v) in obj {
                let keep = if consents {
                    v.is_boolean()
                } else {
                    !v.is_null()
                };
                if !keep {
                    continue;
                }
                let v = v.to_string();
                let better = match entry.get(&k) {
                    None => true,
                    Some((t, cur)) if consents => ts > t || (ts == t && &v < cur),
                    Some((t, cur)) => (ts, &v) > (t, cur),
                };
                if better {
                    entry.insert(k, (*ts, v));
                }
            }
        }
        out.into_iter()
            .map(|(g, m)| {
                let obj: serde_json::Map<String, serde_json::Value> = m
                    .into_iter()
                    .map(|(k, (_, v))| (k, serde_json::from_str(&v).unwrap()))
                    .collect();
                (
                    g,
                    (!obj.is_empty()).then(|| serde_json::Value::Object(obj).to_string()),
                )
            })
            .collect()
    }

    fn expected_most_frequent(
        rows: &[(String, Option<String>, i64)],
    ) -> BTreeMap<String, Option<String>> {
        let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (g, v, _) in rows {
            let entry = counts.entry(g.clone()).or_default();
            if let Some(v) = v {
                *entry.entry(v.clone()).or_default() += 1;
            }
        }
        counts
            .into_iter()
            .map(|(g, c)| {
                let best = c
                    .into_iter()
                    .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
                    .map(|(v, _)| v);
                (g, best)
            })
            .collect()
    }

    /// The sessions the aggregates must agree in: the default plan, one
    /// partition, and a partial phase that gives up at once (so rows reach
    /// the final phase through `convert_to_state`).
    fn sessions() -> Vec<SessionContext> {
        let skip = SessionConfig::new()
            .with_target_partitions(4)
            .set_usize(
                "datafusion.execution.skip_partial_aggregation_probe_rows_threshold",
                1,
            )
            .set(
                "datafusion.execution.skip_partial_aggregation_probe_ratio_threshold",
                &datafusion::common::ScalarValue::Float64(Some(0.0)),
            );
        [
            SessionConfig::new().with_target_partitions(4),
            SessionConfig::new().with_target_partitions(1),
            skip,
        ]
        .into_iter()
        .map(|c| {
            let ctx = SessionContext::new_with_config(c.with_batch_size(64));
            ctx.register_udaf(most_frequent_udaf());
            ctx.register_udaf(latest_traits_udaf());
            ctx.register_udaf(latest_consents_udaf());
            ctx
        })
        .collect()
    }

    async fn grouped(ctx: &SessionContext, sql: &str) -> BTreeMap<String, Option<String>> {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let mut out = BTreeMap::new();
        for b in batches {
            let b = arrow::compute::cast(b.column(0), &DataType::Utf8)
                .and_then(|g| Ok((g, arrow::compute::cast(b.column(1), &DataType::Utf8)?)))
                .unwrap();
            let (g, v) = (
                b.0.as_string::<i32>().clone(),
                b.1.as_string::<i32>().clone(),
            );
            for i in 0..g.len() {
                out.insert(
                    g.value(i).to_string(),
                    v.is_valid(i).then(|| v.value(i).to_string()),
                );
            }
        }
        out
    }

    #[tokio::test]
    async fn latest_traits_and_consents_agree_across_plans() {
        let rows = rows(true);
        for ctx in sessions() {
            ctx.register_table("t", Arc::new(table(&rows, 3, 50)))
                .unwrap();
            let traits = grouped(&ctx, "SELECT g, latest_traits(v, ts) FROM t GROUP BY g").await;
            assert_eq!(traits, expected_latest(&rows, false));
            let consents =
                grouped(&ctx, "SELECT g, latest_consents(v, ts) FROM t GROUP BY g").await;
            assert_eq!(consents, expected_latest(&rows, true));
            assert!(consents.values().any(Option::is_some));
            assert!(consents.values().any(Option::is_none));
        }
    }

    #[tokio::test]
    async fn most_frequent_agrees_across_plans_with_a_filter() {
        let rows = rows(false);
        let late: Vec<_> = rows.iter().filter(|r| r.2 >= 10).cloned().collect();
        for ctx in sessions() {
            ctx.register_table("t", Arc::new(table(&rows, 3, 50)))
                .unwrap();
            let all = grouped(&ctx, "SELECT g, most_frequent(v) FROM t GROUP BY g").await;
            assert_eq!(all, expected_most_frequent(&rows));
            let filtered = grouped(
                &ctx,
                "SELECT g, most_frequent(v) FILTER (WHERE CAST(ts AS BIGINT) >= 10) FROM t GROUP BY g",
            )
            .await;
            let mut want = expected_most_frequent(&late);
            for g in all.keys() {
                want.entry(g.clone()).or_insert(None);
            }
            assert_eq!(filtered, want);
        }
    }

    #[test]
    fn a_state_round_trips_and_a_malformed_one_is_an_error() {
        let mut traits = fresh_traits();
        traits.update(r#"{"plan": "pro", "n": 2, "gone": null}"#, 5);
        let state = traits.state().expect("a state");
        let mut merged = fresh_traits();
        merged.merge(&state).unwrap();
        assert_eq!(merged.result().as_deref(), Some(r#"{"n":2,"plan":"pro"}"#));
        assert!(merged.merge(&state[..state.len() - 1]).is_err());
        assert!(merged.merge(&[9, 0, 0, 0, b'a']).is_err());
        assert!(merged.merge(&[1, 0, 0, 0, 0xff]).is_err());
        let mut counts = MostFrequent::default();
        counts.update("shoes", 0);
        counts.update("shoes", 0);
        counts.update("bags", 0);
        let mut merged = MostFrequent::default();
        merged.merge(&counts.state().expect("a state")).unwrap();
        merged.update("bags", 0);
        merged.update("bags", 0);
        assert_eq!(merged.result().as_deref(), Some("bags"));
        assert_eq!(fresh_traits().state(), None);
    }

    #[tokio::test]
    async fn without_group_by_one_accumulator_sees_every_row() {
        let rows: Vec<_> = rows(true)
            .into_iter()
            .map(|r| ("all".to_string(), r.1, r.2))
            .collect();
        let ctx = &sessions()[0];
        ctx.register_table("t", Arc::new(table(&rows, 3, 50)))
            .unwrap();
        let got = grouped(ctx, "SELECT 'all', latest_traits(v, ts) FROM t").await;
        assert_eq!(got, expected_latest(&rows, false));
    }
}
