//! SQL column types of `CREATE SOURCE` mapped to Arrow types. `TIMESTAMP` without a precision
//! is milliseconds (event time as most streams carry it); `TIMESTAMP(6)` is microseconds.

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::sql::sqlparser::ast::{DataType as SqlType, ExactNumberInfo, TimezoneInfo};

use crate::error::{Result, SqlError};

/// Maps a SQL type to Arrow; unsupported types are an `Unsupported` error naming the type.
pub fn arrow_type(sql: &SqlType, context: &str) -> Result<DataType> {
    Ok(match sql {
        SqlType::Boolean | SqlType::Bool => DataType::Boolean,
        SqlType::TinyInt(_) => DataType::Int8,
        SqlType::SmallInt(_) | SqlType::Int2(_) => DataType::Int16,
        SqlType::Int(_) | SqlType::Integer(_) | SqlType::Int4(_) => DataType::Int32,
        SqlType::BigInt(_) | SqlType::Int8(_) => DataType::Int64,
        SqlType::Real | SqlType::Float4 => DataType::Float32,
        SqlType::Float(_) | SqlType::Double(_) | SqlType::DoublePrecision | SqlType::Float8 => {
            DataType::Float64
        }
        SqlType::Decimal(info) | SqlType::Numeric(info) | SqlType::Dec(info) => match info {
            ExactNumberInfo::None => DataType::Decimal128(38, 10),
            ExactNumberInfo::Precision(p) => {
                DataType::Decimal128(checked_precision(*p, context)?, 0)
            }
            ExactNumberInfo::PrecisionAndScale(p, s) => DataType::Decimal128(
                checked_precision(*p, context)?,
                i8::try_from(*s)
                    .map_err(|_| invalid(context, format!("DECIMAL scale {s} is too large")))?,
            ),
        },
        SqlType::Varchar(_)
        | SqlType::CharVarying(_)
        | SqlType::Char(_)
        | SqlType::Character(_)
        | SqlType::CharacterVarying(_)
        | SqlType::Text
        | SqlType::String(_) => DataType::Utf8,
        SqlType::Bytea | SqlType::Blob(_) | SqlType::Binary(_) | SqlType::Varbinary(_) => {
            DataType::Binary
        }
        SqlType::Date => DataType::Date32,
        SqlType::Timestamp(precision, tz) => {
            let unit = match precision {
                None | Some(3) => TimeUnit::Millisecond,
                Some(0) => TimeUnit::Second,
                Some(6) => TimeUnit::Microsecond,
                Some(9) => TimeUnit::Nanosecond,
                Some(other) => {
                    return Err(invalid(
                        context,
                        format!("TIMESTAMP({other}): precision must be 0, 3, 6 or 9"),
                    ))
                }
            };
            let zone = match tz {
                TimezoneInfo::None | TimezoneInfo::WithoutTimeZone => None,
                TimezoneInfo::WithTimeZone | TimezoneInfo::Tz => Some("UTC".into()),
            };
            DataType::Timestamp(unit, zone)
        }
        other => {
            return Err(SqlError::Unsupported {
                construct: format!("column type {other}"),
                context: context.to_string(),
            })
        }
    })
}

/// The SQL spelling of an Arrow type, for `DESCRIBE` and error messages.
pub fn sql_type_name(data_type: &DataType) -> String {
    match data_type {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "TINYINT UNSIGNED".into(),
        DataType::UInt16 => "SMALLINT UNSIGNED".into(),
        DataType::UInt32 => "INT UNSIGNED".into(),
        DataType::UInt64 => "BIGINT UNSIGNED".into(),
        DataType::Float32 => "REAL".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BYTEA".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p}, {s})"),
        DataType::Timestamp(unit, tz) => {
            let precision = match unit {
                TimeUnit::Second => "(0)",
                TimeUnit::Millisecond => "",
                TimeUnit::Microsecond => "(6)",
                TimeUnit::Nanosecond => "(9)",
            };
            let zone = if tz.is_some() { " WITH TIME ZONE" } else { "" };
            format!("TIMESTAMP{precision}{zone}")
        }
        other => other.to_string(),
    }
}

fn checked_precision(precision: u64, context: &str) -> Result<u8> {
    match u8::try_from(precision) {
        Ok(p) if (1..=38).contains(&p) => Ok(p),
        _ => Err(invalid(
            context,
            format!("DECIMAL precision {precision} must be between 1 and 38"),
        )),
    }
}

fn invalid(context: &str, message: String) -> SqlError {
    SqlError::Invalid {
        context: context.to_string(),
        message,
    }
}
