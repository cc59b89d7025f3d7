//! Column builders of a generated batch. A generator table is a fixed list of typed columns;
//! only the columns the source produces get a builder, and appends to the others are no-ops,
//! so a projected source skips the work of the columns it drops.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The types generated columns have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnType {
    /// `BIGINT`.
    Int64,
    /// `DOUBLE`.
    Float64,
    /// `VARCHAR`.
    Utf8,
    /// `TIMESTAMP(3)`: milliseconds, no time zone.
    TimestampMs,
}

impl ColumnType {
    fn data_type(self) -> DataType {
        match self {
            Self::Int64 => DataType::Int64,
            Self::Float64 => DataType::Float64,
            Self::Utf8 => DataType::Utf8,
            Self::TimestampMs => DataType::Timestamp(TimeUnit::Millisecond, None),
        }
    }
}

/// The schema of a generator table (no column is ever NULL).
pub(crate) fn table_schema(columns: &[(&str, ColumnType)]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, column_type)| Field::new(*name, column_type.data_type(), false))
        .collect();
    Arc::new(Schema::new(fields))
}

enum Builder {
    Int64(Int64Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    TimestampMs(TimestampMillisecondBuilder),
}

/// Builders for the produced columns of one batch, indexed by table column.
pub(crate) struct Columns {
    builders: Vec<Option<Builder>>,
}

impl Columns {
    /// Builders for the table columns listed in `projection`, sized for `rows` rows.
    pub(crate) fn new(types: &[ColumnType], projection: &[usize], rows: usize) -> Self {
        let builders = types
            .iter()
            .enumerate()
            .map(|(index, column_type)| {
                projection.contains(&index).then(|| match column_type {
                    ColumnType::Int64 => Builder::Int64(Int64Builder::with_capacity(rows)),
                    ColumnType::Float64 => Builder::Float64(Float64Builder::with_capacity(rows)),
                    ColumnType::Utf8 => {
                        Builder::Utf8(StringBuilder::with_capacity(rows, rows.saturating_mul(16)))
                    }
                    ColumnType::TimestampMs => {
                        Builder::TimestampMs(TimestampMillisecondBuilder::with_capacity(rows))
                    }
                })
            })
            .collect();
        Self { builders }
    }

    /// Whether table column `index` is produced (worth computing).
    pub(crate) fn needed(&self, index: usize) -> bool {
        matches!(self.builders.get(index), Some(Some(_)))
    }

    /// Appends to a BIGINT column.
    pub(crate) fn int64(&mut self, index: usize, value: i64) {
        if let Some(Some(Builder::Int64(builder))) = self.builders.get_mut(index) {
            builder.append_value(value);
        }
    }

    /// Appends to a DOUBLE column.
    pub(crate) fn float64(&mut self, index: usize, value: f64) {
        if let Some(Some(Builder::Float64(builder))) = self.builders.get_mut(index) {
            builder.append_value(value);
        }
    }

    /// Appends to a VARCHAR column.
    pub(crate) fn utf8(&mut self, index: usize, value: &str) {
        if let Some(Some(Builder::Utf8(builder))) = self.builders.get_mut(index) {
            builder.append_value(value);
        }
    }

    /// Appends to a TIMESTAMP column (epoch milliseconds).
    pub(crate) fn timestamp_ms(&mut self, index: usize, value: i64) {
        if let Some(Some(Builder::TimestampMs(builder))) = self.builders.get_mut(index) {
            builder.append_value(value);
        }
    }

    /// The produced columns in `projection` order.
    pub(crate) fn finish(mut self, projection: &[usize]) -> Vec<ArrayRef> {
        let finished: Vec<Option<ArrayRef>> = self
            .builders
            .iter_mut()
            .map(|slot| {
                slot.as_mut().map(|builder| -> ArrayRef {
                    match builder {
                        Builder::Int64(b) => Arc::new(b.finish()),
                        Builder::Float64(b) => Arc::new(b.finish()),
                        Builder::Utf8(b) => Arc::new(b.finish()),
                        Builder::TimestampMs(b) => Arc::new(b.finish()),
                    }
                })
            })
            .collect();
        projection
            .iter()
            .filter_map(|index| finished.get(*index).and_then(Clone::clone))
            .collect()
    }
}
