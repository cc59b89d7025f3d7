//! Human units: how the command writes counts (`12,345`), rates, event times and elapsed
//! durations, and how it reads durations such as `--for 30s`.

use std::time::Duration;

/// `12345` as `12,345`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `per_second` rounded to a whole count, with separators.
pub fn rate(per_second: f64) -> String {
    if per_second.is_finite() && per_second > 0.0 {
        count(per_second.round() as u64)
    } else {
        "0".to_string()
    }
}

/// Epoch milliseconds as `2024-01-01 00:00:04.000` (UTC).
pub fn timestamp_ms(epoch_ms: i64) -> String {
    let days = epoch_ms.div_euclid(86_400_000);
    let ms_of_day = epoch_ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1_000 % 60,
        ms_of_day % 1_000
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// An elapsed time as `850ms`, `12.3s` or `4m 05s`.
pub fn elapsed(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", duration.as_secs_f64())
    } else {
        let secs = duration.as_secs();
        format!("{}m {:02}s", secs / 60, secs % 60)
    }
}

/// Parses `500ms`, `30s`, `2m` or `1h` (a whole number and a unit).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || {
        format!("invalid duration '{text}': expected a whole number and a unit, e.g. 500ms, 30s, 2m, 1h")
    };
    let value: u64 = number.parse().map_err(|_| bad())?;
    let duration = match unit.trim() {
        "us" | "µs" => Duration::from_micros(value),
        "ms" => Duration::from_millis(value),
        "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value.saturating_mul(60)),
        "h" => Duration::from_secs(value.saturating_mul(3_600)),
        _ => return Err(bad()),
    };
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(12_345_678), "12,345,678");
        assert_eq!(rate(1999.6), "2,000");
        assert_eq!(rate(f64::NAN), "0");
    }

    #[test]
    fn timestamps_are_utc_dates() {
        assert_eq!(timestamp_ms(0), "1970-01-01 00:00:00.000");
        assert_eq!(timestamp_ms(1_704_067_204_000), "2024-01-01 00:00:04.000");
        assert_eq!(timestamp_ms(951_825_600_123), "2000-02-29 12:00:00.123");
        assert_eq!(timestamp_ms(-1), "1969-12-31 23:59:59.999");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn elapsed_times_read_naturally() {
        assert_eq!(elapsed(Duration::from_millis(850)), "850ms");
        assert_eq!(elapsed(Duration::from_millis(12_345)), "12.3s");
        assert_eq!(elapsed(Duration::from_secs(245)), "4m 05s");
    }
}
