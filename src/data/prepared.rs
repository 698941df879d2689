//! The prepare stage's output: training and validation tensors in one
//! safetensors file (a well-known format, readable from Python with
//! `safetensors.numpy.load_file`).
//!
//! For each split `s` in `train`, `val`:
//! - `s.images`: U8 `[n, side, side]`
//! - `s.targets`: F32 `[n, coords]`, pixels; 0 where there is no value
//! - `s.labelled`: U8 `[n, coords]`, 1 where the value is a real label
//! - `s.loss_mask`: U8 `[n, coords]`, 1 where the training loss uses the value
//!   (real labels, plus filled values under mean/median imputation)
//! - `s.source_rows`: U32 `[n]`, the row of the ingested file
//!
//! Metadata (the `fkp` entry, JSON): `side` and `coordinate_names`.

use std::borrow::Cow;
use std::path::Path;

use safetensors::Dtype;

use super::DataError;
use super::tensor_file::{self, TensorData, f32_bytes, floats};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Split {
    pub images: Vec<u8>,
    pub targets: Vec<f32>,
    pub labelled: Vec<u8>,
    pub loss_mask: Vec<u8>,
    pub source_rows: Vec<u32>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.source_rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.source_rows.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub side: usize,
    pub coordinate_names: Vec<String>,
    pub train: Split,
    pub val: Split,
}

/// The file's metadata (`fkp` entry).
#[derive(serde::Serialize, serde::Deserialize)]
struct PreparedMeta {
    side: usize,
    coordinate_names: Vec<String>,
}

impl Prepared {
    pub fn write(&self, path: &Path) -> Result<(), DataError> {
        let coords = self.coordinate_names.len();
        let mut tensors = Vec::new();
        for (name, split) in [("train", &self.train), ("val", &self.val)] {
            let n = split.len();
            let tensor = |field: &str, dtype: Dtype, shape: Vec<usize>, bytes| TensorData {
                name: format!("{name}.{field}"),
                dtype,
                shape,
                bytes,
            };
            // The byte tensors are written from the splits' own buffers.
            let rows: Vec<u8> = split.source_rows.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.extend([
                tensor(
                    "images",
                    Dtype::U8,
                    vec![n, self.side, self.side],
                    Cow::Borrowed(&split.images[..]),
                ),
                tensor(
                    "targets",
                    Dtype::F32,
                    vec![n, coords],
                    f32_bytes(&split.targets).into(),
                ),
                tensor(
                    "labelled",
                    Dtype::U8,
                    vec![n, coords],
                    Cow::Borrowed(&split.labelled[..]),
                ),
                tensor(
                    "loss_mask",
                    Dtype::U8,
                    vec![n, coords],
                    Cow::Borrowed(&split.loss_mask[..]),
                ),
                tensor("source_rows", Dtype::U32, vec![n], rows.into()),
            ]);
        }
        let meta = PreparedMeta {
            side: self.side,
            coordinate_names: self.coordinate_names.clone(),
        };
        tensor_file::write(path, &tensors, &meta).map_err(|message| DataError::Write {
            path: path.to_path_buf(),
            message,
        })
    }

    pub fn read(path: &Path) -> Result<Prepared, DataError> {
        let corrupt = |message: String| DataError::Corrupt {
            path: path.to_path_buf(),
            message,
        };
        let io = |source: std::io::Error| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = crate::buffers::read_file(path).map_err(io)?;
        let (tensors, meta): (_, PreparedMeta) = tensor_file::read(&bytes).map_err(corrupt)?;
        let raw = |name: String, dtype: Dtype| -> Result<Vec<u8>, DataError> {
            let view = tensors
                .tensor(&name)
                .map_err(|e| corrupt(format!("{name}: {e}")))?;
            if view.dtype() != dtype {
                return Err(corrupt(format!(
                    "{name} is {:?}, expected {dtype:?}",
                    view.dtype()
                )));
            }
            crate::buffers::copied(view.data(), &name).map_err(|e| io(e.into()))
        };
        let split = |name: &str| -> Result<Split, DataError> {
            Ok(Split {
                images: raw(format!("{name}.images"), Dtype::U8)?,
                targets: floats(&raw(format!("{name}.targets"), Dtype::F32)?),
                labelled: raw(format!("{name}.labelled"), Dtype::U8)?,
                loss_mask: raw(format!("{name}.loss_mask"), Dtype::U8)?,
                source_rows: raw(format!("{name}.source_rows"), Dtype::U32)?
                    .chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            })
        };
        Ok(Prepared {
            side: meta.side,
            coordinate_names: meta.coordinate_names,
            train: split("train")?,
            val: split("val")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_safetensors() {
        let prepared = Prepared {
            side: 2,
            coordinate_names: vec!["a_x".into(), "a_y".into()],
            train: Split {
                images: vec![1, 2, 3, 4, 5, 6, 7, 8],
                targets: vec![0.5, 1.5, 0.0, 0.25],
                labelled: vec![1, 1, 0, 1],
                loss_mask: vec![1, 1, 0, 1],
                source_rows: vec![3, 0],
            },
            val: Split {
                images: vec![9, 9, 9, 9],
                targets: vec![1.0, 1.0],
                labelled: vec![1, 1],
                loss_mask: vec![1, 1],
                source_rows: vec![7],
            },
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.safetensors");
        prepared.write(&path).unwrap();
        assert_eq!(Prepared::read(&path).unwrap(), prepared);
    }
}
