//! Connector options as written in `FROM CONNECTOR (key = 'value', ...)`. Keys are
//! case-insensitive (stored lowercase); the helpers here turn a missing, misspelt or
//! unparsable option into an error that names the option and the connector.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{ConnectorError, Result};

/// The `key = 'value'` pairs given to a connector. Iteration is sorted by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectorOptions {
    values: BTreeMap<String, String>,
}

impl ConnectorOptions {
    /// Builds options from pairs; keys are lowercased, and for a key given twice the last wins.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let values = pairs
            .into_iter()
            .map(|(key, value)| (key.to_ascii_lowercase(), value))
            .collect();
        Self { values }
    }

    /// The value of `key` (case-insensitive), if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        if key.bytes().any(|b| b.is_ascii_uppercase()) {
            self.values
                .get(&key.to_ascii_lowercase())
                .map(String::as_str)
        } else {
            self.values.get(key).map(String::as_str)
        }
    }

    /// All pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of options given.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when no option was given.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Fails on the first option (in key order) that is not in `known`, naming it, the
    /// connector, and every known option.
    pub fn check_known(&self, connector: &str, known: &[&str]) -> Result<()> {
        match self
            .values
            .keys()
            .find(|key| !known.contains(&key.as_str()))
        {
            None => Ok(()),
            Some(option) => {
                let mut sorted = known.to_vec();
                sorted.sort_unstable();
                Err(ConnectorError::UnknownOption {
                    connector: connector.to_owned(),
                    option: option.clone(),
                    known: sorted.join(", "),
                })
            }
        }
    }

    /// The value of a required option.
    pub fn required(&self, connector: &str, key: &str) -> Result<&str> {
        self.get(key).ok_or_else(|| ConnectorError::MissingOption {
            connector: connector.to_owned(),
            option: key.to_owned(),
        })
    }

    /// Parses an optional option with [`FromStr`]; surrounding whitespace is ignored.
    pub fn parse<T>(&self, connector: &str, key: &str) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: Display,
    {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        raw.trim().parse::<T>().map(Some).map_err(|e| {
            ConnectorError::invalid_option(
                connector,
                key,
                raw,
                format!("expected {}: {e}", describe_type::<T>()),
            )
        })
    }

    /// Parses an optional `'true'`/`'false'` option (case-insensitive).
    pub fn bool(&self, connector: &str, key: &str) -> Result<Option<bool>> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        match raw.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(ConnectorError::invalid_option(
                connector,
                key,
                raw,
                "expected 'true' or 'false'",
            )),
        }
    }

    /// Parses an optional option whose value must be one of `choices` (case-insensitive);
    /// returns the matching choice.
    pub fn choice(
        &self,
        connector: &str,
        key: &str,
        choices: &[&'static str],
    ) -> Result<Option<&'static str>> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        let wanted = raw.trim();
        choices
            .iter()
            .find(|c| c.eq_ignore_ascii_case(wanted))
            .copied()
            .map(Some)
            .ok_or_else(|| {
                ConnectorError::invalid_option(
                    connector,
                    key,
                    raw,
                    format!("expected one of: {}", choices.join(", ")),
                )
            })
    }

    /// Parses an optional positive duration: a whole number and a unit, `ms`, `s`, `m` or
    /// `h` (`500ms`, `5s`, `2 m`), as the `laminardb` command reads durations.
    pub fn duration(&self, connector: &str, key: &str) -> Result<Option<Duration>> {
        let Some(raw) = self.get(key) else {
            return Ok(None);
        };
        let text = raw.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value = number.parse::<u64>().ok().filter(|v| *v > 0);
        let duration = match (value, unit.trim()) {
            (Some(v), "ms") => Some(Duration::from_millis(v)),
            (Some(v), "s") => Some(Duration::from_secs(v)),
            (Some(v), "m") => v.checked_mul(60).map(Duration::from_secs),
            (Some(v), "h") => v.checked_mul(3_600).map(Duration::from_secs),
            _ => None,
        };
        duration.map(Some).ok_or_else(|| {
            ConnectorError::invalid_option(
                connector,
                key,
                raw,
                "expected a positive whole number and a unit: ms, s, m or h (e.g. '500ms', '5s')",
            )
        })
    }
}

/// A user-facing description of the values a numeric option type accepts.
fn describe_type<T>() -> &'static str {
    match std::any::type_name::<T>() {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a non-negative integer",
        "i8" | "i16" | "i32" | "i64" | "isize" => "an integer",
        "f32" | "f64" => "a number",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> ConnectorOptions {
        ConnectorOptions::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn keys_are_case_insensitive_and_sorted() {
        let o = opts(&[("Path", "a.csv"), ("FORMAT", "csv")]);
        assert_eq!(o.get("path"), Some("a.csv"));
        assert_eq!(o.get("PATH"), Some("a.csv"));
        let pairs: Vec<_> = o.iter().collect();
        assert_eq!(pairs, vec![("format", "csv"), ("path", "a.csv")]);
    }

    #[test]
    fn unknown_option_names_option_connector_and_known_ones() {
        let o = opts(&[("path", "a"), ("delimeter", ";")]);
        let err = o
            .check_known("FILE source", &["path", "format", "delimiter"])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown option 'delimeter' for connector FILE source; known options: delimiter, format, path"
        );
    }

    #[test]
    fn typed_parse_reports_bad_values() {
        let o = opts(&[("rate", "fast"), ("header", "yes"), ("events", " 12 ")]);
        let err = o.parse::<u64>("DATAGEN source", "rate").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid value 'fast' for option 'rate' of connector DATAGEN source"),
            "{err}"
        );
        assert_eq!(
            o.parse::<u64>("DATAGEN source", "events").unwrap(),
            Some(12)
        );
        assert!(o.bool("FILE source", "header").is_err());
        assert_eq!(o.parse::<u64>("x", "absent").unwrap(), None);
        let err = o.required("FILE source", "path").unwrap_err();
        assert_eq!(
            err.to_string(),
            "connector FILE source requires option 'path'"
        );
    }

    #[test]
    fn durations_are_a_number_and_a_unit() {
        let o = opts(&[
            ("a", "500ms"),
            ("b", " 5 s "),
            ("c", "2m"),
            ("d", "1h"),
            ("zero", "0s"),
            ("bare", "5"),
            ("fraction", "1.5s"),
            ("word", "5 seconds"),
        ]);
        let d = |key: &str| o.duration("FILE source", key);
        assert_eq!(d("a").unwrap(), Some(Duration::from_millis(500)));
        assert_eq!(d("b").unwrap(), Some(Duration::from_secs(5)));
        assert_eq!(d("c").unwrap(), Some(Duration::from_secs(120)));
        assert_eq!(d("d").unwrap(), Some(Duration::from_secs(3_600)));
        assert_eq!(d("absent").unwrap(), None);
        for bad in ["zero", "bare", "fraction", "word"] {
            let err = d(bad).unwrap_err().to_string();
            assert!(
                err.contains("expected a positive whole number and a unit"),
                "{err}"
            );
        }
    }
}
