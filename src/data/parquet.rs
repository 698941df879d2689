//! The Parquet files of the ingest stage: one row per face, in input order.
//!
//! Columns: `source_row` (UInt32, 0-based data row of the source file), `ImageId`
//! (Int64, unlabelled files only), one nullable Float32 column per coordinate under
//! its CSV name, and `image`, the `side * side` grey levels as FixedSizeBinary.
//! The side is also stored in the file's metadata under `fkp.side`.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{
    Array, ArrayRef, FixedSizeBinaryArray, Float32Array, Float64Array, Int64Array, RecordBatch, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::lookup::LookupTable;
use super::{DataError, FaceTable};

pub const SOURCE_ROW: &str = "source_row";
pub const IMAGE: &str = "image";
pub const IMAGE_ID: &str = "ImageId";
const SIDE_KEY: &str = "fkp.side";

fn write_error(path: &Path, error: impl std::fmt::Display) -> DataError {
    DataError::Write {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

fn read_error(path: &Path, error: impl std::fmt::Display) -> DataError {
    DataError::Parquet {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

fn writer_properties(metadata: Vec<KeyValue>) -> WriterProperties {
    // Level 1: the pixels barely compress better at higher levels and write much slower.
    let zstd = Compression::ZSTD(ZstdLevel::try_new(1).expect("1 is a valid zstd level"));
    WriterProperties::builder()
        .set_compression(zstd)
        .set_column_dictionary_enabled(IMAGE.into(), false)
        .set_column_statistics_enabled(IMAGE.into(), EnabledStatistics::None)
        .set_key_value_metadata(Some(metadata))
        .build()
}

fn write_batch(path: &Path, batch: &RecordBatch, metadata: Vec<KeyValue>) -> Result<(), DataError> {
    let file = File::create(path).map_err(|e| write_error(path, e))?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(writer_properties(metadata)))
        .map_err(|e| write_error(path, e))?;
    writer.write(batch).map_err(|e| write_error(path, e))?;
    writer.close().map_err(|e| write_error(path, e))?;
    Ok(())
}

pub fn write_faces(path: &Path, faces: &FaceTable) -> Result<(), DataError> {
    let n = faces.len();
    let width = faces.coordinate_names.len();
    let mut fields = vec![Field::new(SOURCE_ROW, DataType::UInt32, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from(faces.source_rows.clone()))];
    if let Some(ids) = &faces.image_ids {
        fields.push(Field::new(IMAGE_ID, DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from(ids.clone())));
    }
    for (c, name) in faces.coordinate_names.iter().enumerate() {
        fields.push(Field::new(name, DataType::Float32, true));
        let values = (0..n).map(|row| {
            let v = faces.coords[row * width + c];
            (!v.is_nan()).then_some(v)
        });
        columns.push(Arc::new(values.collect::<Float32Array>()));
    }
    let pixel_count = i32::try_from(faces.pixel_count()).map_err(|e| write_error(path, e))?;
    fields.push(Field::new(IMAGE, DataType::FixedSizeBinary(pixel_count), false));
    let images = FixedSizeBinaryArray::try_new(pixel_count, faces.pixels.clone().into(), None)
        .map_err(|e| write_error(path, e))?;
    columns.push(Arc::new(images));
    let batch =
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| write_error(path, e))?;
    let metadata = vec![KeyValue::new(SIDE_KEY.to_string(), faces.side.to_string())];
    write_batch(path, &batch, metadata)
}

pub fn read_faces(path: &Path) -> Result<FaceTable, DataError> {
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| read_error(path, e))?;
    let side: usize = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == SIDE_KEY))
        .and_then(|k| k.value.as_deref()?.parse().ok())
        .ok_or_else(|| {
            read_error(
                path,
                format!("no `{SIDE_KEY}` metadata: not written by fkp's ingest"),
            )
        })?;
    let schema = builder.schema().clone();
    let coordinate_names: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| f.data_type() == &DataType::Float32)
        .map(|f| f.name().clone())
        .collect();
    let reader = builder.build().map_err(|e| read_error(path, e))?;
    let mut faces = FaceTable {
        coordinate_names,
        side,
        source_rows: Vec::new(),
        image_ids: schema.index_of(IMAGE_ID).ok().map(|_| Vec::new()),
        coords: Vec::new(),
        pixels: Vec::new(),
    };
    for batch in reader {
        let batch = batch.map_err(|e| read_error(path, e))?;
        append_batch(path, &batch, &mut faces)?;
    }
    Ok(faces)
}

fn column<'a, T: 'static>(path: &Path, batch: &'a RecordBatch, name: &str) -> Result<&'a T, DataError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| read_error(path, format!("column `{name}` is missing or has the wrong type")))
}

fn append_batch(path: &Path, batch: &RecordBatch, faces: &mut FaceTable) -> Result<(), DataError> {
    let rows = batch.num_rows();
    faces
        .source_rows
        .extend(column::<UInt32Array>(path, batch, SOURCE_ROW)?.values().iter());
    if let Some(ids) = &mut faces.image_ids {
        ids.extend(column::<Int64Array>(path, batch, IMAGE_ID)?.values().iter());
    }
    let coordinate_columns: Vec<&Float32Array> = faces
        .coordinate_names
        .iter()
        .map(|name| column::<Float32Array>(path, batch, name))
        .collect::<Result<_, _>>()?;
    for row in 0..rows {
        for col in &coordinate_columns {
            faces.coords.push(if col.is_null(row) {
                f32::NAN
            } else {
                col.value(row)
            });
        }
    }
    let images = column::<FixedSizeBinaryArray>(path, batch, IMAGE)?;
    if images.value_length() as usize != faces.pixel_count() {
        return Err(read_error(
            path,
            "image width disagrees with the `fkp.side` metadata",
        ));
    }
    faces.pixels.extend_from_slice(images.value_data());
    Ok(())
}

pub fn write_lookup(path: &Path, lookup: &LookupTable) -> Result<(), DataError> {
    let mut names = StringBuilder::new();
    for name in &lookup.feature_names {
        names.append_value(name);
    }
    let schema = Schema::new(vec![
        Field::new("RowId", DataType::Int64, false),
        Field::new(IMAGE_ID, DataType::Int64, false),
        Field::new("FeatureName", DataType::Utf8, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(lookup.row_ids.clone())),
        Arc::new(Int64Array::from(lookup.image_ids.clone())),
        Arc::new(names.finish()),
    ];
    let batch = RecordBatch::try_new(Arc::new(schema), columns).map_err(|e| write_error(path, e))?;
    write_batch(path, &batch, Vec::new())
}

/// Evaluate's per-face predictions: what a model predicted for each validation
/// face and the labels it was scored against.
#[derive(Debug, Clone, PartialEq)]
pub struct FacePredictions {
    pub coordinate_names: Vec<String>,
    pub source_rows: Vec<u32>,
    /// Row-major `faces x coordinates`, in pixels.
    pub predicted: Vec<f32>,
    /// The scoring labels, NaN where a coordinate is unlabelled.
    pub truth: Vec<f32>,
    /// RMSE over the face's labelled coordinates; NaN when it has none.
    pub face_rmse_px: Vec<f64>,
}

const TRUE_PREFIX: &str = "true.";
const FACE_RMSE: &str = "face_rmse_px";

/// Columns: `source_row`, `face_rmse_px` (null for a face without labels), each
/// coordinate's prediction under its CSV name, and its label as `true.<name>`
/// (null where unlabelled).
pub fn write_predictions(path: &Path, predictions: &FacePredictions) -> Result<(), DataError> {
    let width = predictions.coordinate_names.len();
    let nullable = |values: &[f32], c: usize| -> ArrayRef {
        let column = values
            .chunks(width)
            .map(|row| (!row[c].is_nan()).then_some(row[c]));
        Arc::new(column.collect::<Float32Array>())
    };
    let mut fields = vec![
        Field::new(SOURCE_ROW, DataType::UInt32, false),
        Field::new(FACE_RMSE, DataType::Float64, true),
    ];
    let rmse: Float64Array = predictions
        .face_rmse_px
        .iter()
        .map(|v| (!v.is_nan()).then_some(*v))
        .collect();
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from(predictions.source_rows.clone())),
        Arc::new(rmse),
    ];
    for (c, name) in predictions.coordinate_names.iter().enumerate() {
        fields.push(Field::new(name, DataType::Float32, true));
        columns.push(nullable(&predictions.predicted, c));
    }
    for (c, name) in predictions.coordinate_names.iter().enumerate() {
        fields.push(Field::new(
            format!("{TRUE_PREFIX}{name}"),
            DataType::Float32,
            true,
        ));
        columns.push(nullable(&predictions.truth, c));
    }
    let batch =
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| write_error(path, e))?;
    write_batch(path, &batch, Vec::new())
}

pub fn read_predictions(path: &Path) -> Result<FacePredictions, DataError> {
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| read_error(path, e))?;
    let coordinate_names: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .filter(|f| f.data_type() == &DataType::Float32 && !f.name().starts_with(TRUE_PREFIX))
        .map(|f| f.name().clone())
        .collect();
    let mut predictions = FacePredictions {
        coordinate_names,
        source_rows: Vec::new(),
        predicted: Vec::new(),
        truth: Vec::new(),
        face_rmse_px: Vec::new(),
    };
    for batch in builder.build().map_err(|e| read_error(path, e))? {
        let batch = batch.map_err(|e| read_error(path, e))?;
        predictions
            .source_rows
            .extend(column::<UInt32Array>(path, &batch, SOURCE_ROW)?.values().iter());
        let rmse = column::<Float64Array>(path, &batch, FACE_RMSE)?;
        predictions
            .face_rmse_px
            .extend((0..batch.num_rows()).map(|r| if rmse.is_null(r) { f64::NAN } else { rmse.value(r) }));
        let mut predicted = Vec::new();
        let mut truth = Vec::new();
        for name in &predictions.coordinate_names {
            predicted.push(column::<Float32Array>(path, &batch, name)?);
            truth.push(column::<Float32Array>(
                path,
                &batch,
                &format!("{TRUE_PREFIX}{name}"),
            )?);
        }
        for row in 0..batch.num_rows() {
            for (into, columns) in [
                (&mut predictions.predicted, &predicted),
                (&mut predictions.truth, &truth),
            ] {
                into.extend(columns.iter().map(|col| {
                    if col.is_null(row) {
                        f32::NAN
                    } else {
                        col.value(row)
                    }
                }));
            }
        }
    }
    Ok(predictions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faces_round_trip_through_parquet() {
        let faces = FaceTable {
            coordinate_names: vec!["a_x".into(), "a_y".into()],
            side: 2,
            source_rows: vec![0, 2],
            image_ids: None,
            coords: vec![1.5, f32::NAN, 0.25, 1.0],
            pixels: vec![0, 1, 2, 3, 255, 254, 253, 252],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        write_faces(&path, &faces).unwrap();
        let back = read_faces(&path).unwrap();
        assert_eq!(back.coordinate_names, faces.coordinate_names);
        assert_eq!(back.side, 2);
        assert_eq!(back.source_rows, faces.source_rows);
        assert_eq!(back.pixels, faces.pixels);
        assert_eq!(back.coords[0], 1.5);
        assert!(back.coords[1].is_nan());
        assert_eq!(&back.coords[2..], &[0.25, 1.0]);
    }

    #[test]
    fn unlabelled_faces_keep_their_ids() {
        let faces = FaceTable {
            coordinate_names: vec![],
            side: 1,
            source_rows: vec![0, 1],
            image_ids: Some(vec![7, 9]),
            coords: vec![],
            pixels: vec![3, 4],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        write_faces(&path, &faces).unwrap();
        assert_eq!(read_faces(&path).unwrap(), faces);
    }

    #[test]
    fn predictions_round_trip_with_missing_labels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.parquet");
        let predictions = FacePredictions {
            coordinate_names: vec!["a_x".into(), "a_y".into()],
            source_rows: vec![7, 3],
            predicted: vec![1.0, 2.0, 3.0, 4.0],
            truth: vec![1.5, f32::NAN, f32::NAN, f32::NAN],
            face_rmse_px: vec![0.5, f64::NAN],
        };
        write_predictions(&path, &predictions).unwrap();
        let back = read_predictions(&path).unwrap();
        assert_eq!(back.source_rows, [7, 3]);
        assert_eq!(back.predicted, predictions.predicted);
        assert_eq!(back.truth[0], 1.5);
        assert!(back.truth[1..].iter().all(|v| v.is_nan()));
        assert_eq!(back.face_rmse_px[0], 0.5);
        assert!(back.face_rmse_px[1].is_nan());
    }
}
