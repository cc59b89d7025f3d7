//! Rows late on arrival at a source: rows whose event time is behind the source's watermark
//! as it stood before their batch (a row never makes itself late). The ingress computing the
//! watermark counts them, and its [`LatePolicy`] says where they go: on with the others, to
//! a side stream (`LATE DATA TO`), nowhere, or, for a side stream's own reader, alone.

use std::sync::Arc;

use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::compute::{filter_record_batch, not};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use super::ingress::IngressHandle;
use crate::error::{CoreError, Result};
use crate::watermark::WatermarkGenerator;

/// What an ingress does with the rows late on arrival. Every policy counts them.
#[derive(Debug, Clone, Default)]
pub enum LatePolicy {
    /// They flow on with the rows on time (a window that is still open takes them).
    #[default]
    Keep,
    /// They go to another stream's ingress instead, into the same partition, so no reader
    /// of this stream sees them (a push source with `LATE DATA TO`).
    Divert(Arc<IngressHandle>),
    /// They are dropped (a reader of a connector source with `LATE DATA TO`: the side
    /// stream's readers deliver them).
    Drop,
    /// Only they flow on, and the stream carries no watermark (the reader behind a
    /// connector source's `LATE DATA TO` stream, which replays the source).
    Only,
}

impl LatePolicy {
    /// Whether the stream fed carries the source's watermarks.
    pub(crate) fn sends_watermarks(&self) -> bool {
        !matches!(self, Self::Only)
    }
}

/// A batch divided by lateness, under a policy.
#[derive(Debug, Default)]
pub(crate) struct Routed {
    /// Rows for the ingress's own stream.
    pub(crate) own: Option<RecordBatch>,
    /// Rows for the side stream (`Divert`).
    pub(crate) diverted: Option<RecordBatch>,
    /// Rows late on arrival, wherever they went.
    pub(crate) late_rows: u64,
}

/// Divides `batch` by the generator's current watermark (before the batch advances it).
pub(crate) fn route(
    policy: &LatePolicy,
    generator: &WatermarkGenerator,
    batch: RecordBatch,
) -> Result<Routed> {
    let Some(late) = generator.late_rows(&batch)? else {
        return Ok(match policy {
            LatePolicy::Only => Routed::default(),
            _ => Routed {
                own: Some(batch),
                ..Routed::default()
            },
        });
    };
    let late_rows = late.true_count() as u64;
    let (own, diverted) = match policy {
        LatePolicy::Keep => (Some(batch), None),
        LatePolicy::Divert(_) => (
            rows_on_time(&batch, &late)?,
            Some(rows_where(&batch, &late)?),
        ),
        LatePolicy::Drop => (rows_on_time(&batch, &late)?, None),
        LatePolicy::Only => (Some(rows_where(&batch, &late)?), None),
    };
    Ok(Routed {
        own,
        diverted,
        late_rows,
    })
}

fn rows_where(batch: &RecordBatch, mask: &BooleanArray) -> Result<RecordBatch> {
    filter_record_batch(batch, mask).map_err(|e| split_error(&e))
}

/// The rows not marked `late`; `None` when every row is late.
fn rows_on_time(batch: &RecordBatch, late: &BooleanArray) -> Result<Option<RecordBatch>> {
    let on_time = not(late).map_err(|e| split_error(&e))?;
    let rows = rows_where(batch, &on_time)?;
    Ok((rows.num_rows() > 0).then_some(rows))
}

fn split_error(error: &ArrowError) -> CoreError {
    CoreError::Internal(format!("splitting a batch by lateness: {error}"))
}
