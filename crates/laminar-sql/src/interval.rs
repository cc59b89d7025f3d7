//! Interval literals (`INTERVAL '10' SECOND`, `INTERVAL '2 minutes'`) as milliseconds, for
//! window sizes and allowed lateness.

use crate::error::{Result, SqlError};

fn invalid(context: &str, message: String) -> SqlError {
    SqlError::Invalid {
        context: context.to_string(),
        message,
    }
}

/// The length of an interval literal such as `INTERVAL '10' SECOND` or `INTERVAL '2 minutes'`,
/// in milliseconds.
pub(crate) fn interval_ms(text: &str, context: &str) -> Result<i64> {
    let error = || {
        invalid(
            context,
            format!("{text} must be an INTERVAL of milliseconds, seconds, minutes, hours or days"),
        )
    };
    let rest = text
        .trim()
        .strip_prefix("INTERVAL")
        .or_else(|| text.trim().strip_prefix("interval"))
        .ok_or_else(error)?
        .trim();
    let rest = rest.strip_prefix('\'').ok_or_else(error)?;
    let (quoted, unit) = rest.split_once('\'').ok_or_else(error)?;
    let mut words: Vec<&str> = quoted.split_whitespace().collect();
    if !unit.trim().is_empty() {
        words.push(unit.trim());
    }
    let mut total: i64 = 0;
    for pair in words.chunks(2) {
        let [amount, unit] = pair else {
            return Err(error());
        };
        let amount: i64 = amount.parse().map_err(|_| error())?;
        let unit_ms = match unit.to_lowercase().trim_end_matches('s') {
            "m" | "millisecond" => 1,
            "" | "second" | "sec" => 1_000,
            "minute" | "min" => 60_000,
            "hour" | "h" => 3_600_000,
            "day" | "d" => 86_400_000,
            _ => return Err(error()),
        };
        total = amount
            .checked_mul(unit_ms)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(error)?;
    }
    if total <= 0 {
        return Err(invalid(
            context,
            format!("window size {text} must be positive"),
        ));
    }
    Ok(total)
}
