//! Parsing of TIMESTAMP values written as text, shared by the file formats (CSV cells, JSON
//! values) and by options such as the generators' `start_time`. A value is a date-time text
//! (`2024-01-01 00:00:01`, `2024-01-01T00:00:01Z`, fractional seconds and offsets allowed;
//! values without an offset are UTC) or an integer count of epoch milliseconds.

use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use datafusion::arrow::datatypes::TimeUnit;

/// Parses a TIMESTAMP value into a count of `unit` since the epoch; `None` if it is neither
/// an epoch-milliseconds integer nor a date-time text, or does not fit the unit.
pub(crate) fn parse_timestamp(text: &str, unit: TimeUnit) -> Option<i64> {
    let text = text.trim();
    if let Ok(epoch_ms) = text.parse::<i64>() {
        return match unit {
            TimeUnit::Second => Some(epoch_ms.div_euclid(1_000)),
            TimeUnit::Millisecond => Some(epoch_ms),
            TimeUnit::Microsecond => epoch_ms.checked_mul(1_000),
            TimeUnit::Nanosecond => epoch_ms.checked_mul(1_000_000),
        };
    }
    let nanos = string_to_timestamp_nanos(text).ok()?;
    Some(match unit {
        TimeUnit::Second => nanos.div_euclid(1_000_000_000),
        TimeUnit::Millisecond => nanos.div_euclid(1_000_000),
        TimeUnit::Microsecond => nanos.div_euclid(1_000),
        TimeUnit::Nanosecond => nanos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_accept_common_spellings_and_epoch_millis() {
        let expected = Some(1_704_067_201_000);
        let ms = TimeUnit::Millisecond;
        assert_eq!(parse_timestamp("2024-01-01 00:00:01", ms), expected);
        assert_eq!(parse_timestamp("2024-01-01T00:00:01Z", ms), expected);
        assert_eq!(parse_timestamp(" 1704067201000 ", ms), expected);
        assert_eq!(
            parse_timestamp("2024-01-01T00:00:01.250", ms),
            Some(1_704_067_201_250)
        );
        assert_eq!(
            parse_timestamp("2024-01-01 00:00:01.000250", TimeUnit::Microsecond),
            Some(1_704_067_201_000_250)
        );
        assert_eq!(parse_timestamp("yesterday", ms), None);
    }
}
