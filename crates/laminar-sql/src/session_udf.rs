//! The marker functions a `SESSION` window is rewritten into: `laminar_session_start(ts,
//! gap_ms)` and `laminar_session_end(ts, gap_ms)` give each row its own window `[ts, ts +
//! gap)`. Per row that is all they compute; merging rows into sessions happens in the
//! session aggregate, which the translation plans wherever it finds these functions as the
//! `window_start`/`window_end` keys of a `GROUP BY`. Anywhere else they are refused.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Name of the function giving a row's session window start.
pub(crate) const SESSION_START: &str = "laminar_session_start";
/// Name of the function giving a row's session window end.
pub(crate) const SESSION_END: &str = "laminar_session_end";

/// `laminar_session_start` (`end == false`) or `laminar_session_end`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SessionBound {
    end: bool,
    signature: Signature,
}

/// Both marker functions, for registration with the planner's context.
pub(crate) fn session_functions() -> [ScalarUDF; 2] {
    [false, true].map(|end| {
        ScalarUDF::new_from_impl(SessionBound {
            end,
            signature: Signature::any(2, Volatility::Immutable),
        })
    })
}

/// The gap (milliseconds) of a marker call, if `expr` is one.
pub(crate) fn session_gap_ms(expr: &Expr) -> Option<(bool, i64)> {
    let Expr::ScalarFunction(call) = expr else {
        return None;
    };
    let end = match call.func.name() {
        SESSION_START => false,
        SESSION_END => true,
        _ => return None,
    };
    match call.args.get(1) {
        Some(Expr::Literal(ScalarValue::Int64(Some(gap_ms)), _)) => Some((end, *gap_ms)),
        _ => None,
    }
}

impl ScalarUDFImpl for SessionBound {
    fn name(&self) -> &str {
        if self.end {
            SESSION_END
        } else {
            SESSION_START
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        match arg_types.first() {
            Some(DataType::Timestamp(TimeUnit::Millisecond, zone)) => {
                Ok(DataType::Timestamp(TimeUnit::Millisecond, zone.clone()))
            }
            other => Err(DataFusionError::Plan(format!(
                "{} takes a millisecond TIMESTAMP, got {other:?}",
                self.name()
            ))),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let [time, gap] = args.args.as_slice() else {
            return Err(DataFusionError::Internal(format!(
                "{} takes two arguments",
                self.name()
            )));
        };
        let ColumnarValue::Scalar(ScalarValue::Int64(Some(gap_ms))) = gap else {
            return Err(DataFusionError::Internal(format!(
                "{}: the gap must be a BIGINT literal",
                self.name()
            )));
        };
        let time = time.to_array(rows)?;
        let time = time
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .ok_or_else(|| {
                DataFusionError::Internal(format!("{} takes a millisecond TIMESTAMP", self.name()))
            })?;
        let shift = if self.end { *gap_ms } else { 0 };
        let bounds: TimestampMillisecondArray = time
            .unary::<_, datafusion::arrow::datatypes::TimestampMillisecondType>(|ts| {
                ts.saturating_add(shift)
            })
            .with_timezone_opt(time.timezone().map(str::to_string));
        Ok(ColumnarValue::Array(Arc::new(bounds) as ArrayRef))
    }
}
