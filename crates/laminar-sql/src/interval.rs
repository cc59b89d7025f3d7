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
        // The units arrow's interval parser reads, with the same meaning ('m' is minutes).
        let unit_ms = match unit.to_lowercase().as_str() {
            "ms" | "millisecond" | "milliseconds" => 1,
            "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            _ => return Err(error()),
        };
        total = amount
            .checked_mul(unit_ms)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(error)?;
    }
    if total <= 0 {
        return Err(invalid(context, format!("{text} must be positive")));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::interval_ms;

    #[test]
    fn units_read_as_arrow_reads_them() {
        let ms = |text: &str| interval_ms(text, "test").expect(text);
        assert_eq!(ms("INTERVAL '10' SECOND"), 10_000);
        assert_eq!(ms("INTERVAL '5 m'"), 300_000);
        assert_eq!(ms("INTERVAL '500 ms'"), 500);
        assert_eq!(ms("INTERVAL '1 minute 30 seconds'"), 90_000);
        assert_eq!(ms("INTERVAL '2' HOUR"), 7_200_000);
        assert_eq!(ms("INTERVAL '250 milliseconds'"), 250);
        assert!(interval_ms("INTERVAL '1' MONTH", "test").is_err());
        assert!(interval_ms("INTERVAL '0' SECOND", "test").is_err());
        assert!(interval_ms("5 seconds", "test").is_err());
    }
}
