//! The marker function an ASOF join's time comparison is rewritten into before planning:
//! `laminar_asof(left_time, right_time, 'comparison', tolerance_ms)` as the condition of an
//! ordinary join (with the equality keys beside it). DataFusion resolves its columns and
//! plans the join like any other; the translation finds the marker in the join's filter and
//! builds the ASOF join operator. It has no value of its own: anywhere else it is refused.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Name of the marker function.
pub(crate) const ASOF: &str = "laminar_asof";

#[derive(Debug, PartialEq, Eq, Hash)]
struct AsofMarker {
    signature: Signature,
}

/// The marker function, for registration with the planner's context.
pub(crate) fn asof_function() -> ScalarUDF {
    ScalarUDF::new_from_impl(AsofMarker {
        signature: Signature::any(4, Volatility::Immutable),
    })
}

/// The parts of a marker call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AsofCall<'a> {
    pub(crate) left_time: &'a Expr,
    pub(crate) right_time: &'a Expr,
    /// `>=`, `>`, `<=`, `<` or `nearest`, as written (left time first).
    pub(crate) comparison: &'a str,
    pub(crate) tolerance_ms: Option<i64>,
}

/// The marker call `expr` is, if it is one.
pub(crate) fn asof_call(expr: &Expr) -> Option<AsofCall<'_>> {
    let Expr::ScalarFunction(call) = expr else {
        return None;
    };
    if call.func.name() != ASOF {
        return None;
    }
    let [left_time, right_time, Expr::Literal(comparison, _), Expr::Literal(tolerance, _)] =
        call.args.as_slice()
    else {
        return None;
    };
    let (ScalarValue::Utf8(Some(comparison)) | ScalarValue::Utf8View(Some(comparison))) =
        comparison
    else {
        return None;
    };
    let tolerance_ms = match tolerance {
        ScalarValue::Int64(Some(ms)) => Some(*ms),
        other if other.is_null() => None,
        _ => return None,
    };
    Some(AsofCall {
        left_time,
        right_time,
        comparison,
        tolerance_ms,
    })
}

impl ScalarUDFImpl for AsofMarker {
    fn name(&self) -> &str {
        ASOF
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        Err(DataFusionError::Execution(format!(
            "{ASOF} is the condition of an ASOF JOIN and has no value elsewhere"
        )))
    }
}
