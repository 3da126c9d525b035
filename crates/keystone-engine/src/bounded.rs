//! A cap on what one call of a function may produce.
//!
//! DataFusion's memory limit counts what operators hold (hash tables, sort
//! buffers), not the arrays a scalar function returns. A few functions turn
//! a short input into an output of any size: `repeat('x', 1500000000)`
//! allocates 1.5 GB in one call, whatever the query's memory limit. Those
//! functions are registered again under their own names, wrapped: before
//! the call, the size of the result is bounded from the arguments, and a call
//! that would produce more than [`MAX_OUTPUT_BYTES`] fails, naming the
//! function, instead of allocating.
//!
//! | function | bound of the result (over the rows of the call) |
//! |---|---|
//! | `repeat(s, n)` | Σ len(s) × n |
//! | `lpad`/`rpad(s, n [, fill])` | Σ 4 × n (n characters of at most 4 bytes) |
//! | `replace(s, from, to)` | Σ len(s) + len(s) ÷ len(from) × len(to) |
//! | `array_repeat(v, n)` | Σ 16 × n |
//! | `range`/`generate_series(a, b [, step])` (integers) | Σ 8 × (b − a) ÷ step |
//!
//! Everything else about the functions (signature, types, simplification,
//! results) is theirs: the wrapper only checks, then calls them.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// The most one function call may produce (all rows of its batch).
pub const MAX_OUTPUT_BYTES: u64 = 256 << 20;

/// How a function's result is bounded from its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Bound {
    Repeat,
    Pad,
    Replace,
    ArrayRepeat,
    Range,
}

/// The functions bounded, by name.
const BOUNDED: [(&str, Bound); 7] = [
    ("repeat", Bound::Repeat),
    ("lpad", Bound::Pad),
    ("rpad", Bound::Pad),
    ("replace", Bound::Replace),
    ("array_repeat", Bound::ArrayRepeat),
    ("range", Bound::Range),
    ("generate_series", Bound::Range),
];

/// Wrap the session's functions that can produce outputs of any size.
pub(crate) fn register(ctx: &SessionContext) {
    for (name, bound) in BOUNDED {
        if let Ok(inner) = ctx.udf(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Bounded { inner, bound }));
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: Arc<ScalarUDF>,
    bound: Bound,
}

impl Bounded {
    /// The bound of the call's output in bytes (saturating).
    fn output_bytes(&self, args: &ScalarFunctionArgs) -> Result<u64> {
        let rows = args.number_rows.max(1);
        let array = |i: usize| -> Result<Option<ArrayRef>> {
            args.args.get(i).map(|a| a.to_array(rows)).transpose()
        };
        let mut total = 0u64;
        match self.bound {
            Bound::Repeat => {
                let (Some(s), Some(n)) = (array(0)?, array(1)?) else {
                    return Ok(0);
                };
                let (lengths, counts) = (byte_lengths(&s), integers(&n)?);
                for (len, n) in lengths.iter().zip(counts.iter()) {
                    total = total.saturating_add(len.saturating_mul(*n));
                }
            }
            Bound::Pad => {
                let Some(n) = array(1)? else { return Ok(0) };
                for n in integers(&n)? {
                    total = total.saturating_add(n.saturating_mul(4));
                }
            }
            Bound::Replace => {
                let (Some(s), Some(from), Some(to)) = (array(0)?, array(1)?, array(2)?) else {
                    return Ok(0);
                };
                let (s, from, to) = (byte_lengths(&s), byte_lengths(&from), byte_lengths(&to));
                for ((s, from), to) in s.iter().zip(from.iter()).zip(to.iter()) {
                    // An empty `from` replaces nothing; counted as one per byte.
                    let matches = s / from.max(&1);
                    total = total.saturating_add(s.saturating_add(matches.saturating_mul(*to)));
                }
            }
            Bound::ArrayRepeat => {
                let Some(n) = array(1)? else { return Ok(0) };
                for n in integers(&n)? {
                    total = total.saturating_add(n.saturating_mul(16));
                }
            }
            Bound::Range => {
                // Integer ranges only; dates and timestamps step by intervals.
                let integer =
                    |i: usize| args.args.get(i).is_some_and(|a| a.data_type().is_integer());
                if args.args.len() < 2 || !(0..args.args.len()).all(integer) {
                    return Ok(0);
                }
                let (Some(a), Some(b)) = (array(0)?, array(1)?) else {
                    return Ok(0);
                };
                let (a, b) = (signed(&a)?, signed(&b)?);
                let step = match array(2)? {
                    Some(step) => signed(&step)?,
                    None => vec![Some(1); a.len()],
                };
                for ((a, b), step) in a.iter().zip(b.iter()).zip(step.iter()) {
                    let (Some(a), Some(b), Some(step)) = (a, b, step) else {
                        continue;
                    };
                    let span = b.abs_diff(*a);
                    let elements = span / step.unsigned_abs().max(1) + 1;
                    total = total.saturating_add(elements.saturating_mul(8));
                }
            }
        }
        Ok(total)
    }
}

/// Byte length of each value of a string (or binary) array; 0 for NULL and
/// for types that are not strings.
fn byte_lengths(array: &ArrayRef) -> Vec<u64> {
    let len = |v: Option<&str>| v.map_or(0, |v| v.len() as u64);
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().map(len).collect(),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().map(len).collect(),
        DataType::Utf8View => array.as_string_view().iter().map(len).collect(),
        _ => vec![0; array.len()],
    }
}

/// Each value as a count (NULL and negative: 0).
fn integers(array: &ArrayRef) -> Result<Vec<u64>> {
    Ok(signed(array)?
        .into_iter()
        .map(|v| v.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
        .collect())
}

fn signed(array: &ArrayRef) -> Result<Vec<Option<i64>>> {
    if !array.data_type().is_integer() {
        return Ok(vec![None; array.len()]);
    }
    let array = arrow::compute::cast(array, &DataType::Int64)?;
    Ok(array.as_primitive::<Int64Type>().iter().collect())
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.inner.simplify(args, info)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let bytes = self.output_bytes(&args)?;
        if bytes > MAX_OUTPUT_BYTES {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}() would produce {} MiB in one call; one function call may produce at most {} MiB",
                self.name(),
                bytes >> 20,
                MAX_OUTPUT_BYTES >> 20
            )));
        }
        self.inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    async fn run(ctx: &SessionContext, sql: &str) -> Result<String> {
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(pretty_format_batches(&batches)?.to_string())
    }

    #[tokio::test]
    async fn calls_that_would_produce_too_much_fail_before_allocating() {
        let ctx = SessionContext::new();
        register(&ctx);
        for sql in [
            "SELECT length(repeat('x', 1500000000))",
            "SELECT length(repeat(v, 20000000)) FROM (VALUES ('0123456789'), ('abcdefghij')) t(v)",
            "SELECT length(lpad('x', 100000000))",
            "SELECT length(rpad('x', 100000000, 'ab'))",
            "SELECT length(replace(repeat('a', 100000), 'a', repeat('b', 10000)))",
            "SELECT cardinality(array_repeat(1, 100000000))",
            "SELECT cardinality(range(0, 100000000))",
            "SELECT cardinality(generate_series(1, 1000000000, 2))",
        ] {
            let e = run(&ctx, sql).await.expect_err(sql).to_string();
            assert!(
                e.contains("would produce") && e.contains("at most 256 MiB"),
                "{sql}: {e}"
            );
        }
    }

    #[tokio::test]
    async fn calls_within_the_cap_give_the_functions_own_answers() {
        let (bounded, plain) = (SessionContext::new(), SessionContext::new());
        register(&bounded);
        for sql in [
            "SELECT repeat('ab', 3), repeat(NULL, 2), repeat('x', -1), repeat('x', 0)",
            "SELECT repeat(v, n) FROM (VALUES ('a', 2), ('bc', 3), (NULL, 1), ('d', NULL)) t(v, n)",
            "SELECT lpad('7', 3, '0'), rpad('ab', 5), lpad('héllo', 2), rpad(NULL, 3)",
            "SELECT replace('a-b-c', '-', '::'), replace('abc', '', 'x'), replace(NULL, 'a', 'b')",
            "SELECT array_repeat('z', 3), array_repeat(1, 0)",
            "SELECT range(1, 5), range(5, 1, -2), generate_series(1, 3), range(DATE '2026-01-01', DATE '2026-01-03', INTERVAL '1 day')",
            "SELECT length(repeat('x', 1000000))",
        ] {
            assert_eq!(
                run(&bounded, sql).await.expect(sql),
                run(&plain, sql).await.expect(sql),
                "{sql}"
            );
        }
    }
}
