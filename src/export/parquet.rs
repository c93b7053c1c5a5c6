//! One Parquet file of exported records, written with the `parquet` crate's
//! low-level column writers (no Arrow): the schema is fixed, so the columns
//! are filled directly, with definition and repetition levels computed here.
//!
//! ```text
//! message strata_record {
//!   required int32 partition;
//!   required int64 offset;
//!   required int64 timestamp (TIMESTAMP(MILLIS,true));
//!   required binary timestamp_type (STRING);      "CreateTime" | "LogAppendTime"
//!   optional binary key;                          null: a null key
//!   optional binary value;                        null: a tombstone
//!   required group headers (LIST) {               Parquet's three-level list
//!     repeated group list {
//!       required group element {
//!         required binary key (STRING);
//!         optional binary value;
//!       }
//!     }
//!   }
//! }
//! ```
//!
//! Rows are buffered and written as a row group every [`ROW_GROUP_BYTES`]
//! of keys and values (or [`ROW_GROUP_ROWS`] rows), so memory stays bounded
//! by a row group plus the compressed file. Pages are Snappy-compressed.

use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::Type;

/// Bytes of keys, values and headers buffered before a row group is written.
pub const ROW_GROUP_BYTES: usize = 64 * 1024 * 1024;
/// Rows buffered before a row group is written.
pub const ROW_GROUP_ROWS: usize = 1024 * 1024;

const SCHEMA: &str = "
message strata_record {
  required int32 partition;
  required int64 offset;
  required int64 timestamp (TIMESTAMP(MILLIS,true));
  required binary timestamp_type (STRING);
  optional binary key;
  optional binary value;
  required group headers (LIST) {
    repeated group list {
      required group element {
        required binary key (STRING);
        optional binary value;
      }
    }
  }
}
";

/// One exported record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub log_append_time: bool,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// Header keys are strings in Kafka; invalid UTF-8 is replaced (U+FFFD).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A nullable or repeated column: its values and levels.
#[derive(Default)]
struct Leveled {
    values: Vec<ByteArray>,
    definition: Vec<i16>,
    repetition: Vec<i16>,
}

#[derive(Default)]
struct Columns {
    partition: Vec<i32>,
    offset: Vec<i64>,
    timestamp: Vec<i64>,
    timestamp_type: Vec<ByteArray>,
    key: Leveled,
    value: Leveled,
    header_key: Leveled,
    header_value: Leveled,
    rows: usize,
    bytes: usize,
}

impl Columns {
    fn push(&mut self, row: Row) {
        self.rows += 1;
        self.partition.push(row.partition);
        self.offset.push(row.offset);
        self.timestamp.push(row.timestamp);
        let timestamp_type: &'static [u8] = if row.log_append_time {
            b"LogAppendTime"
        } else {
            b"CreateTime"
        };
        self.timestamp_type
            .push(ByteArray::from(timestamp_type.to_vec()));
        for (column, field) in [(&mut self.key, row.key), (&mut self.value, row.value)] {
            match field {
                Some(bytes) => {
                    self.bytes += bytes.len();
                    column.values.push(ByteArray::from(bytes));
                    column.definition.push(1);
                }
                None => column.definition.push(0),
            }
        }
        // headers (required) > list (repeated: +1 definition, +1 repetition)
        // > element (required) > key (required) / value (optional: +1).
        if row.headers.is_empty() {
            for column in [&mut self.header_key, &mut self.header_value] {
                column.definition.push(0);
                column.repetition.push(0);
            }
        }
        for (index, (key, value)) in row.headers.into_iter().enumerate() {
            let repetition = if index == 0 { 0 } else { 1 };
            self.bytes += key.len();
            self.header_key
                .values
                .push(ByteArray::from(key.into_bytes()));
            self.header_key.definition.push(1);
            self.header_key.repetition.push(repetition);
            match value {
                Some(bytes) => {
                    self.bytes += bytes.len();
                    self.header_value.values.push(ByteArray::from(bytes));
                    self.header_value.definition.push(2);
                }
                None => self.header_value.definition.push(1),
            }
            self.header_value.repetition.push(repetition);
        }
    }

    /// Writes the buffered rows as one row group and empties the buffers.
    fn write_row_group(
        &mut self,
        writer: &mut SerializedFileWriter<Vec<u8>>,
    ) -> Result<(), ParquetError> {
        let columns = std::mem::take(self);
        let mut group = writer.next_row_group()?;
        write_column::<Int32Type>(&mut group, &columns.partition, None, None)?;
        write_column::<Int64Type>(&mut group, &columns.offset, None, None)?;
        write_column::<Int64Type>(&mut group, &columns.timestamp, None, None)?;
        write_column::<ByteArrayType>(&mut group, &columns.timestamp_type, None, None)?;
        for column in [
            &columns.key,
            &columns.value,
            &columns.header_key,
            &columns.header_value,
        ] {
            let repetition = (!column.repetition.is_empty()).then_some(&column.repetition[..]);
            write_column::<ByteArrayType>(
                &mut group,
                &column.values,
                Some(&column.definition),
                repetition,
            )?;
        }
        group.close()?;
        Ok(())
    }
}

fn write_column<T: parquet::data_type::DataType>(
    group: &mut SerializedRowGroupWriter<'_, Vec<u8>>,
    values: &[T::T],
    definition: Option<&[i16]>,
    repetition: Option<&[i16]>,
) -> Result<(), ParquetError> {
    let mut column = group
        .next_column()?
        .ok_or_else(|| ParquetError::General("the schema has fewer columns than written".into()))?;
    column
        .typed::<T>()
        .write_batch(values, definition, repetition)?;
    column.close()
}

/// Builds one Parquet file in memory.
pub struct FileBuilder {
    writer: SerializedFileWriter<Vec<u8>>,
    buffered: Columns,
    rows: u64,
}

impl FileBuilder {
    pub fn new() -> Result<Self, ParquetError> {
        let schema: Arc<Type> = Arc::new(parse_message_type(SCHEMA)?);
        let properties = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!("strata {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer = SerializedFileWriter::new(Vec::new(), schema, Arc::new(properties))?;
        Ok(Self {
            writer,
            buffered: Columns::default(),
            rows: 0,
        })
    }

    pub fn push(&mut self, row: Row) -> Result<(), ParquetError> {
        self.buffered.push(row);
        self.rows += 1;
        if self.buffered.bytes >= ROW_GROUP_BYTES || self.buffered.rows >= ROW_GROUP_ROWS {
            self.buffered.write_row_group(&mut self.writer)?;
        }
        Ok(())
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The finished file.
    pub fn finish(mut self) -> Result<Vec<u8>, ParquetError> {
        if self.buffered.rows > 0 {
            self.buffered.write_row_group(&mut self.writer)?;
        }
        self.writer.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    fn row(offset: i64, headers: Vec<(String, Option<Vec<u8>>)>) -> Row {
        Row {
            partition: 2,
            offset,
            timestamp: 1_700_000_000_000 + offset,
            log_append_time: offset == 1,
            key: (offset != 1).then(|| format!("k{offset}").into_bytes()),
            value: (offset != 2).then(|| format!("v{offset}").into_bytes()),
            headers,
        }
    }

    #[test]
    fn rows_read_back_with_nulls_and_headers() {
        let rows = vec![
            row(0, vec![]),
            row(
                1,
                vec![("a".into(), Some(b"1".to_vec())), ("b".into(), None)],
            ),
            row(2, vec![("c".into(), Some(Vec::new()))]),
        ];
        let mut builder = FileBuilder::new().expect("builder");
        for r in rows.clone() {
            builder.push(r).expect("push");
        }
        assert_eq!(builder.rows(), 3);
        let file = bytes::Bytes::from(builder.finish().expect("finish"));
        let reader = SerializedFileReader::new(file).expect("a parquet file");
        assert_eq!(reader.metadata().file_metadata().num_rows(), 3);
        let read: Vec<String> = reader
            .get_row_iter(None)
            .expect("rows")
            .map(|r| r.expect("row").to_string())
            .collect();
        // The reader's own rendering: every column, nulls and lists included.
        assert_eq!(read.len(), 3);
        assert!(
            read[0].contains("offset: 0") && read[0].contains("headers: []"),
            "{}",
            read[0]
        );
        assert!(read[1].contains("key: null"), "{}", read[1]);
        assert!(read[1].contains("LogAppendTime"), "{}", read[1]);
        assert!(read[2].contains("value: null"), "{}", read[2]);
        let first = reader
            .get_row_iter(None)
            .expect("rows")
            .nth(1)
            .expect("second row")
            .expect("row");
        let headers = first
            .get_column_iter()
            .find(|(name, _)| name.as_str() == "headers")
            .map(|(_, field)| field.clone());
        let Some(Field::ListInternal(list)) = headers else {
            panic!("headers is a list: {headers:?}");
        };
        assert_eq!(list.elements().len(), 2);
    }

    #[test]
    fn an_empty_file_is_valid() {
        let file = bytes::Bytes::from(
            FileBuilder::new()
                .expect("builder")
                .finish()
                .expect("finish"),
        );
        let reader = SerializedFileReader::new(file).expect("a parquet file");
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
    }
}
