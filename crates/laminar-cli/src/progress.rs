//! The progress line of `run` and its final summary, computed from successive
//! [`Metrics`] snapshots: totals, rates since the previous line, the lowest watermark and
//! malformed records; at the end, per object whether it finished and how many rows it made.

use std::time::{Duration, Instant};

use laminar_db::Metrics;

use crate::units;

/// Turns metrics snapshots into progress lines with rates.
#[derive(Debug)]
pub struct ProgressMeter {
    started: Instant,
    last: Option<Sample>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    rows_in: u64,
    rows_out: u64,
}

impl ProgressMeter {
    /// A meter whose elapsed time counts from `started`.
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            last: None,
        }
    }

    /// The progress line for `metrics`, with rates since the previous call (or since the
    /// start, for the first).
    pub fn line(&mut self, metrics: &Metrics, now: Instant) -> String {
        let sample = Sample {
            at: now,
            rows_in: metrics.rows_in(),
            rows_out: metrics.rows_out(),
        };
        let previous = self.last.unwrap_or(Sample {
            at: self.started,
            rows_in: 0,
            rows_out: 0,
        });
        self.last = Some(sample);
        let seconds = now.saturating_duration_since(previous.at).as_secs_f64();
        let per_second = |now: u64, before: u64| {
            if seconds > 0.0 {
                now.saturating_sub(before) as f64 / seconds
            } else {
                0.0
            }
        };
        format!(
            "rows in {} ({}/s) | rows out {} ({}/s) | watermark {} | malformed {}",
            units::count(sample.rows_in),
            units::rate(per_second(sample.rows_in, previous.rows_in)),
            units::count(sample.rows_out),
            units::rate(per_second(sample.rows_out, previous.rows_out)),
            watermark(metrics),
            units::count(malformed(metrics)),
        )
    }
}

/// The lowest watermark of the queries, or of the sources while no query has one yet.
fn watermark(metrics: &Metrics) -> String {
    metrics
        .min_watermark_ms()
        .or_else(|| metrics.sources.iter().filter_map(|s| s.watermark_ms).min())
        .map_or_else(|| "-".to_string(), units::timestamp_ms)
}

fn malformed(metrics: &Metrics) -> u64 {
    metrics.sources.iter().map(|s| s.malformed_records).sum()
}

/// How the wait for the pipeline ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every stream, view and sink finished.
    Finished,
    /// Ctrl-C.
    Interrupted,
    /// `--for` elapsed.
    TimeUp,
    /// A query reported an error.
    Failed,
}

/// The summary printed when `run` ends: a totals line, then one line per stream, view and
/// sink.
pub fn summary(metrics: &Metrics, outcome: Outcome, elapsed: Duration) -> Vec<String> {
    let how = match outcome {
        Outcome::Finished => "finished",
        Outcome::Interrupted => "interrupted",
        Outcome::TimeUp => "stopped (--for elapsed)",
        Outcome::Failed => "failed",
    };
    let mut lines = vec![format!(
        "{how} after {}: rows in {}, rows out {}, malformed {}",
        units::elapsed(elapsed),
        units::count(metrics.rows_in()),
        units::count(metrics.rows_out()),
        units::count(malformed(metrics)),
    )];
    for query in &metrics.queries {
        let state = if query.error.is_some() {
            "failed"
        } else if query.finished {
            "finished"
        } else {
            "running"
        };
        lines.push(format!(
            "  {} {}: {state}, {} rows",
            query.kind.noun(),
            query.name,
            units::count(query.rows_out)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use laminar_db::{ObjectKind, QueryStats, SourceStats};

    fn metrics(rows_in: u64, rows_out: u64, finished: bool) -> Metrics {
        Metrics {
            sources: vec![SourceStats {
                name: "bids".into(),
                rows: rows_in,
                watermark_ms: Some(1_704_067_204_000),
                idle: false,
                late_rows: 0,
                malformed_records: 2,
                first_error: None,
            }],
            queries: vec![QueryStats {
                name: "hot".into(),
                kind: ObjectKind::MaterializedView,
                rows_out,
                watermark_ms: Some(1_704_067_204_000),
                idle: false,
                finished,
                error: None,
                state_entries: 0,
                state_bytes: 0,
                state_bytes_entries: 0,
                late_rows: 0,
            }],
            workers: Vec::new(),
            lookups: Vec::new(),
        }
    }

    #[test]
    fn line_shows_totals_rates_watermark_and_malformed() {
        let start = Instant::now();
        let mut meter = ProgressMeter::new(start);
        let first = meter.line(
            &metrics(2_000, 1_000, false),
            start + Duration::from_secs(1),
        );
        assert_eq!(
            first,
            "rows in 2,000 (2,000/s) | rows out 1,000 (1,000/s) | watermark 2024-01-01 00:00:04.000 | malformed 2"
        );
        let second = meter.line(
            &metrics(12_000, 1_000, false),
            start + Duration::from_secs(3),
        );
        assert!(
            second.starts_with("rows in 12,000 (5,000/s) | rows out 1,000 (0/s)"),
            "{second}"
        );
    }

    #[test]
    fn summary_lists_each_object() {
        let lines = summary(
            &metrics(3, 2, true),
            Outcome::Finished,
            Duration::from_millis(1_500),
        );
        assert_eq!(
            lines[0],
            "finished after 1.5s: rows in 3, rows out 2, malformed 2"
        );
        assert_eq!(lines[1], "  materialized view hot: finished, 2 rows");
    }
}
