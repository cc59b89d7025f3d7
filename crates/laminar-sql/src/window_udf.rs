//! `laminar_window_bound(ms, slide_ms, back_ms, offset_ms)`, what `TUMBLE` and `HOP` compute
//! per row: the epoch-aligned bin of `slide_ms` holding the time `ms` (epoch milliseconds,
//! floored also before the epoch), moved back `back_ms` (a hopping window's earlier copies)
//! and on `offset_ms` (0 for `window_start`, the size for `window_end`).
//!
//! One pass per batch, where the same as SQL arithmetic took six kernels and two divisions
//! per row (each kernel a new array): event times mostly grow, so a row in the bin of the
//! row before it reuses that bin instead of dividing again.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Name of the function.
pub(crate) const WINDOW_BOUND: &str = "laminar_window_bound";

#[derive(Debug, PartialEq, Eq, Hash)]
struct WindowBound {
    signature: Signature,
}

/// The function, for registration with the planner's context.
pub(crate) fn window_bound_function() -> ScalarUDF {
    ScalarUDF::new_from_impl(WindowBound {
        signature: Signature::exact(vec![DataType::Int64; 4], Volatility::Immutable),
    })
}

/// Rows compared at a time while a run of rows stays in one bin: a fixed-width pass the
/// compiler vectorizes.
const RUN_LANES: usize = 16;

/// The bound of every time of `times` (see the module docs); `slide_ms` is positive.
///
/// Event time mostly ascends within a batch, so rows come in runs of one bin: each run is
/// found by comparing rows against the bin's edges, [`RUN_LANES`] at a time, and its bound
/// written with one fill, instead of testing and pushing row by row. Rows in any order
/// are correct, a run then being a row or a few.
fn bounds(times: &[i64], slide_ms: i64, shift_ms: i64) -> Vec<i64> {
    let mut out = Vec::with_capacity(times.len());
    let mut start = 0;
    while let Some(&time) = times.get(start) {
        // The bin `[low, high)` of the run's first row.
        let low = time.saturating_sub(time.rem_euclid(slide_ms));
        let high = low.saturating_add(slide_ms);
        let inside = |t: &i64| *t >= low && *t < high;
        let mut end = start + 1;
        while let Some(lanes) = times.get(end..end + RUN_LANES) {
            if lanes.iter().filter(|t| inside(t)).count() < RUN_LANES {
                break;
            }
            end += RUN_LANES;
        }
        while times.get(end).is_some_and(inside) {
            end += 1;
        }
        out.resize(end, low.saturating_add(shift_ms));
        start = end;
    }
    out
}

/// Argument `index` of a call, which the rewrite always writes as a BIGINT literal.
fn literal(args: &[ColumnarValue], index: usize) -> DfResult<i64> {
    match args.get(index) {
        Some(ColumnarValue::Scalar(ScalarValue::Int64(Some(value)))) => Ok(*value),
        _ => Err(DataFusionError::Internal(format!(
            "{WINDOW_BOUND}: argument {index} must be a BIGINT literal"
        ))),
    }
}

impl ScalarUDFImpl for WindowBound {
    fn name(&self) -> &str {
        WINDOW_BOUND
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let slide_ms = literal(&args.args, 1)?;
        if slide_ms <= 0 {
            return Err(DataFusionError::Plan(format!(
                "a window's size and slide must be positive, got {slide_ms} ms"
            )));
        }
        let shift_ms = literal(&args.args, 3)?.saturating_sub(literal(&args.args, 2)?);
        let Some(times) = args.args.first() else {
            return Err(DataFusionError::Internal(format!(
                "{WINDOW_BOUND} takes four arguments"
            )));
        };
        let times = times.to_array(rows)?;
        let times = times
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| DataFusionError::Internal(format!("{WINDOW_BOUND} takes a BIGINT")))?;
        let values = bounds(times.values(), slide_ms, shift_ms);
        let bounds = Int64Array::new(values.into(), times.nulls().cloned());
        Ok(ColumnarValue::Array(Arc::new(bounds) as ArrayRef))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_floor_to_the_bin_before_and_after_the_epoch_in_any_order() {
        let times: [i64; 10] = [0, 1, 9_999, 10_000, 25_000, 3, -1, -10_000, -10_001, 10_000];
        let naive: Vec<i64> = times
            .iter()
            .map(|t| t - t.rem_euclid(10_000) - 2_000 + 10_000)
            .collect();
        assert_eq!(bounds(&times, 10_000, 10_000 - 2_000), naive);
        assert_eq!(
            bounds(&times, 10_000, 0),
            [0, 0, 0, 10_000, 20_000, 0, -10_000, -10_000, -20_000, 10_000]
        );
        // At the ends of the range the bound saturates instead of overflowing.
        assert_eq!(bounds(&[i64::MAX, i64::MIN], 7, 0)[1], i64::MIN);
    }

    #[test]
    fn bounds_of_ascending_runs_and_scattered_rows_match_row_by_row_flooring() {
        // Ascending times crossing bins mid-chunk, then a row back in an earlier bin, then
        // rows alternating between two bins.
        let mut times: Vec<i64> = (0..1_000).map(|i| 7 * i - 2_000).collect();
        times.extend([5, 4_000, -1, 4_001, -2, 4_002, i64::MAX, i64::MIN + 3]);
        let naive = |slide: i64, shift: i64| -> Vec<i64> {
            times
                .iter()
                .map(|t| t.saturating_sub(t.rem_euclid(slide)).saturating_add(shift))
                .collect()
        };
        for (slide, shift) in [(100, 0), (1_000, 3_000), (1, -5), (7, 0)] {
            assert_eq!(
                bounds(&times, slide, shift),
                naive(slide, shift),
                "slide {slide}"
            );
        }
        assert!(bounds(&[], 10, 0).is_empty());
    }
}
